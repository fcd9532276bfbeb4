"""CERP's stage-1 BPR loss and validation accuracy for several regularizer weights.

An accuracy measurement, not a speed one: the README's regularizer table and the suite default
``SUITE_REGULARIZER`` come from its output (``results/regularizer-synthetic/*.jsonl``). One JSON
line per weight: the per-epoch stage-1 BPR and pruning losses, validation and test Recall@20 per
budget, how each snapshot was reached (threshold or magnitude completion), the BPR loss then,
and the complementarity of ``P`` and ``Q`` (exclusive share against chance, all-zero entities).

Run: ``python benchmarks/regularizer_weights.py mf 70,7,0.7,0.07,0`` (``--batch-size 256``
for the files of the former per-step schedule, about 5 minutes a weight on 2 CPU cores; at the
default 1024 about 20 seconds a weight on one).
"""

from __future__ import annotations

import argparse
import json
import time

from cerp_core.experiment import ExperimentConfig, run_experiment
from cerp_core.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("backbone", choices=["mf", "mlp", "lightgcn"])
    parser.add_argument("weights", help="comma-separated regularizer weights (per-row mean)")
    parser.add_argument("--decay", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    for weight in (float(w) for w in args.weights.split(",")):
        began = time.perf_counter()
        config = ExperimentConfig(
            dataset="synthetic",
            backbone=args.backbone,
            method="cerp",
            budgets=(0.1, 0.05, 0.02),
            dim=32,
            train=TrainConfig(epochs=10, batch_size=args.batch_size, progress=False),
            embedding_options={"regularizer_weight": weight, "regularizer_decay": args.decay},
        )
        try:
            result = run_experiment(config)
        except ValueError as error:  # stage 1 refused at chance: a result too
            print(json.dumps({"w": weight, "error": str(error)}), flush=True)
            continue
        history = result.pruning.history
        row = {
            "w": weight,
            "bpr": [round(x, 3) for x in history["bpr_loss"]],
            "prune_loss": [round(x, 2) for x in history["pruning_loss"]],
            "valid": [round(r["valid_recall@20"], 4) for r in result.records],
            "test": [round(r["recall@20"], 4) for r in result.records],
            "src": [r["snapshot_source"] for r in result.records],
            "snapshot_bpr": [round(r["snapshot_bpr_loss"], 3) for r in result.records],
            "exclusive": [round(r["pq_exclusive"], 4) for r in result.records],
            "exclusive_chance": [round(r["pq_exclusive_chance"], 4) for r in result.records],
            "zero_entities": [round(r["pq_zero_entity_share"], 4) for r in result.records],
            "sec": round(time.perf_counter() - began),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
