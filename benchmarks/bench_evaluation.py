"""Full-ranking evaluation vs. its bare lower bound, for MF and for LightGCN.

The lower bound is one ``[users x d] @ [d x items]`` product plus ``topk`` per batch of users,
in the same batches; the evaluator adds the exclusion of training items, the hit lookup and
Recall/NDCG for four cut-offs. LightGCN's evaluation also propagates the table once (3 layers):
its line compares the whole evaluation with the same GEMM + top-k bound.
Run: ``python benchmarks/bench_evaluation.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from common import best_time, header, load, parser, report

from cerp_core.embeddings import FullEmbedding
from cerp_core.metrics import evaluate
from cerp_core.models import make_model


def main() -> None:
    args = parser(__doc__).parse_args()
    args.batch_size = 1024
    device = torch.device(args.device)
    data = load(args)
    torch.manual_seed(0)
    model = make_model("mf", FullEmbedding(data.num_entities, args.dim), data).to(device)
    ks = (5, 10, 20, 50)
    users = torch.from_numpy(np.flatnonzero(np.diff(data.test.indptr) > 0)).to(device)

    @torch.no_grad()
    def bare() -> None:
        table = model.embedding.weight
        items = table[data.num_users :].t()
        for start in range(0, len(users), args.batch_size):
            scores = table[users[start : start + args.batch_size]] @ items
            torch.topk(scores, max(ks), dim=1)

    def full() -> None:
        evaluate(model, data.train, data.test, ks=ks, batch_size=args.batch_size)

    header(f"{data.name}: {len(users)} users x {data.num_items} items, d={args.dim}", device)
    bound = best_time(bare, args.repeats, device)
    report("evaluate MF (Recall/NDCG@5,10,20,50)", best_time(full, args.repeats, device),
           "matmul + topk", bound, 1.5)  # fmt: skip
    torch.manual_seed(0)
    lightgcn = make_model("lightgcn", FullEmbedding(data.num_entities, args.dim), data).to(device)

    def propagated() -> None:
        evaluate(lightgcn, data.train, data.test, ks=ks, batch_size=args.batch_size)

    report("evaluate LightGCN (propagation + ranking)", best_time(propagated, args.repeats, device),
           "matmul + topk", bound, None)  # fmt: skip


if __name__ == "__main__":
    main()
