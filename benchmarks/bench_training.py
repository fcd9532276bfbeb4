"""Training speed on a real data set, as ratios measured in one run on one machine.

1. one MF-BPR epoch through ``cerp_core.train`` vs. the bare forward/backward/Adam step of the
   same batches (target <= 1.5x);
2. a CERP pruning epoch vs. a full-table epoch, both MF (target <= 1.3x);
3. one LightGCN epoch (3 layers) through ``cerp_core.train`` vs. a bare loop over the same
   batches: the CSR propagation of the full table, BPR, L2 and an Adam step (target <= 1.3x);
4. a CERP LightGCN pruning epoch vs. the full-table LightGCN epoch (target <= 1.2x).

Run: ``python benchmarks/bench_training.py [--dataset gowalla] [--device cuda] [--batch-size N]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from common import best_time, header, load, parser, report

from cerp_core.embeddings import FullEmbedding, make_embedding
from cerp_core.models import Recommender, make_model
from cerp_core.models.lightgcn import propagate
from cerp_core.train import TrainConfig, bpr_loss, prune, sample_negatives, train


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--batch-size", type=int, default=2048)
    cli.add_argument("--skip-mf", action="store_true", help="time only the LightGCN lines")
    args = cli.parse_args()
    device = torch.device(args.device)
    data = load(args)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, progress=False)
    # Thresholds that barely move keep the target out of reach, so stage 1 runs the whole epoch;
    # every step does the same work as with any threshold learning rate.
    whole_epoch = dataclasses.replace(config, threshold_lr=1e-9)

    def model_with(backbone: str, table) -> Recommender:
        torch.manual_seed(0)
        return make_model(backbone, table.to(device), data).to(device)

    users, items = data.train_pairs()
    negatives = sample_negatives(data.train, users, 1, np.random.default_rng(0))
    order = np.random.default_rng(1).permutation(len(users))
    batch_users = torch.from_numpy(users[order]).to(device)
    batch_items = torch.from_numpy(np.column_stack([items, negatives])[order]).to(device)
    batches = [
        (batch_users[start : start + args.batch_size], batch_items[start : start + args.batch_size])
        for start in range(0, len(order), args.batch_size)
    ]
    header(
        f"{data.name}: {data.train.nnz} training pairs, d={args.dim}, batch {args.batch_size}",
        device,
    )

    if not args.skip_mf:
        mf = model_with("mf", FullEmbedding(data.num_entities, args.dim))
        mf_optimizer = torch.optim.Adam(mf.parameters(), lr=config.lr)

        def bare_mf_epoch() -> None:
            for batch_user, batch_item in batches:
                scores = mf(batch_user, batch_item)
                loss = bpr_loss(scores[:, 0], scores[:, 1:])
                mf_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                mf_optimizer.step()

        mf_epoch = best_time(lambda: train(mf, data, config), args.repeats, device)
        report(
            "MF-BPR epoch (cerp_core.train)",
            mf_epoch,
            "bare forward/backward/step",
            best_time(bare_mf_epoch, args.repeats, device),
            1.5,
        )
        cerp_mf = model_with("mf", make_embedding("cerp", data.num_entities, args.dim, 0.02))
        report(
            "CERP pruning epoch (MF)",
            best_time(lambda: prune(cerp_mf, data, whole_epoch), args.repeats, device),
            "full-table MF epoch",
            mf_epoch,
            1.3,
        )

    lightgcn = model_with("lightgcn", FullEmbedding(data.num_entities, args.dim))
    table = lightgcn.embedding.weight
    lightgcn_optimizer = torch.optim.Adam([table], lr=config.lr)

    def bare_lightgcn_epoch() -> None:
        for batch_user, batch_item in batches:
            final = propagate(lightgcn.adjacency, table, lightgcn.num_layers)
            item_rows = batch_item + data.num_users
            scores = torch.einsum("bd,bkd->bk", final[batch_user], final[item_rows])
            layer0 = table[torch.cat([batch_user, item_rows.reshape(-1)])]
            l2 = config.l2 * 0.5 * layer0.pow(2).sum() / len(batch_user)
            loss = bpr_loss(scores[:, 0], scores[:, 1:]) + l2
            lightgcn_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lightgcn_optimizer.step()

    lightgcn_epoch = best_time(lambda: train(lightgcn, data, config), 1, device)
    report(
        "LightGCN epoch, 3 layers (cerp_core.train)",
        lightgcn_epoch,
        "bare CSR propagation + BPR + L2 + Adam",
        best_time(bare_lightgcn_epoch, 1, device),
        1.3,
    )
    cerp_lightgcn = model_with(
        "lightgcn", make_embedding("cerp", data.num_entities, args.dim, 0.02)
    )
    report(
        "CERP pruning epoch (LightGCN)",
        best_time(lambda: prune(cerp_lightgcn, data, whole_epoch), 1, device),
        "full-table LightGCN epoch",
        lightgcn_epoch,
        1.2,
    )


if __name__ == "__main__":
    main()
