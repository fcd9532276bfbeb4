"""Training speed on a real data set, as ratios measured in one run on one machine.

1. one MF-BPR epoch through ``cerp_core.train`` vs. the bare forward/backward/Adam step of the
   same batches (target <= 1.5x);
2. a CERP pruning epoch vs. a full-table epoch, both MF (target <= 1.3x);
3. a LightGCN epoch at batch 2048 vs. an MF epoch (reported).

Run: ``python benchmarks/bench_training.py [--dataset gowalla] [--device cuda]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from common import best_time, header, load, parser, report

from cerp_core.embeddings import FullEmbedding, make_embedding
from cerp_core.models import make_model
from cerp_core.train import TrainConfig, bpr_loss, prune, sample_negatives, train


def main() -> None:
    args = parser(__doc__).parse_args()
    device = torch.device(args.device)
    data = load(args)
    config = TrainConfig(epochs=1, batch_size=2048, progress=False)

    def model_with(table):
        torch.manual_seed(0)
        return make_model("mf", table, data).to(device)

    mf = model_with(FullEmbedding(data.num_entities, args.dim))
    users, items = data.train_pairs()
    negatives = sample_negatives(data.train, users, 1, np.random.default_rng(0))
    order = np.random.default_rng(1).permutation(len(users))
    batch_users = torch.from_numpy(users[order]).to(device)
    batch_items = torch.from_numpy(np.column_stack([items, negatives])[order]).to(device)
    optimizer = torch.optim.Adam(mf.parameters(), lr=config.lr)

    def bare_epoch() -> None:
        for start in range(0, len(order), config.batch_size):
            scores = mf(batch_users[start : start + 2048], batch_items[start : start + 2048])
            loss = bpr_loss(scores[:, 0], scores[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    header(f"{data.name}: {data.train.nnz} training pairs, d={args.dim}, batch 2048", device)
    mf_epoch = best_time(lambda: train(mf, data, config), args.repeats, device)
    report(
        "MF-BPR epoch (cerp_core.train)",
        mf_epoch,
        "bare forward/backward/step",
        best_time(bare_epoch, args.repeats, device),
        1.5,
    )

    cerp = model_with(make_embedding("cerp", data.num_entities, args.dim, 0.02))
    # Thresholds that barely move keep the target out of reach, so stage 1 runs the whole epoch;
    # every step does the same work as with any threshold learning rate.
    whole_epoch = dataclasses.replace(config, threshold_lr=1e-9)
    report(
        "CERP pruning epoch (MF)",
        best_time(lambda: prune(cerp, data, whole_epoch), args.repeats, device),
        "full-table MF epoch",
        mf_epoch,
        1.3,
    )

    lightgcn = make_model("lightgcn", FullEmbedding(data.num_entities, args.dim), data).to(device)
    report(
        "LightGCN epoch (3 layers)",
        best_time(lambda: train(lightgcn, data, config), 1, device),
        "MF epoch",
        mf_epoch,
        None,
    )


if __name__ == "__main__":
    main()
