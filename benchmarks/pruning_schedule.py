"""Which pruning schedules let the learnt thresholds take the snapshots, and at what accuracy.

For each backbone, pruning method, threshold schedule, stage-1 decay (``pruning_l2``) and
decay ramp (``decay_ramp``, 1 = a fixed decay), one run on the synthetic data (d = 32, budgets
0.1 / 0.05 / 0.02, batch 1024, ``--epochs`` per stage, 10 by default as in the notebooks): how
each snapshot was taken and when, the BPR loss then, the validation and test Recall@20 after
retraining, and, at the end of stage 1, where the thresholds stand (``sigmoid(s)``) against the
weights they must catch (quantiles of ``|w|``). One JSON line per run, appended to ``--out``;
runs already there are skipped, so an interrupted study resumes.

    python benchmarks/pruning_schedule.py --out results/pruning-schedule-synthetic/runs.jsonl

PEP's stage-1 decay (``SUITE_PEP_PRUNING_L2``) was chosen from

    python benchmarks/pruning_schedule.py --out results/pruning-schedule-synthetic/pep-decay.jsonl \
        --methods pep --pruning-l2 0.2 0.3 --epoch-rates 1.0 2.0
    python benchmarks/pruning_schedule.py --out results/pruning-schedule-synthetic/pep-decay.jsonl \
        --methods pep --pruning-l2 0.3 0.4 0.5 --epoch-rates 1.0 --epochs 30 --workers 1

and the default decay ramp (``TrainConfig.decay_ramp``) from (``$OUT`` =
``results/pruning-schedule-synthetic/decay-ramp.jsonl``)

    python benchmarks/pruning_schedule.py --out $OUT --methods pep --pruning-l2 0.4 \
        --epoch-rates 1.0 --decay-ramps 1 1.5 2 4 --epochs 30
    python benchmarks/pruning_schedule.py --out $OUT --methods cerp --pruning-l2 0.1 \
        --epoch-rates 1.0 --decay-ramps 1 2 --epochs 30
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cerp_core.data import load_dataset
from cerp_core.embeddings import PrunableEmbedding
from cerp_core.experiment import ExperimentConfig, build_model, retrain_snapshots
from cerp_core.train import TrainConfig, prune

QUANTILES = (0.5, 0.75, 0.9, 0.95)
# (schedule, threshold_lr): the former per-step default, and per-epoch rates (raw units per epoch)
SCHEDULES = (("step", 0.01), ("epoch", 0.5), ("epoch", 1.0), ("epoch", 2.0))
PRUNING_L2 = (0.0, 0.1)  # divided by the table's rows: 1e-4 per entry at b = 1000


def stage_one_reach(table: PrunableEmbedding) -> dict[str, Any]:
    """Thresholds and weights at the end of stage 1: mean sigmoid(s), quantiles of |w|."""
    weights = torch.cat([part.weight.detach().abs().flatten() for part in table.tables.values()])
    levels = torch.cat(
        [torch.sigmoid(raw.detach()).flatten() for raw in table.thresholds().values()]
    )
    return {
        "threshold_level": round(float(levels.mean()), 4),
        "weight_quantiles": dict(
            zip(
                map(str, QUANTILES), weights.quantile(torch.tensor(QUANTILES)).tolist(), strict=True
            )
        ),
    }


Point = tuple[str, str, str, float, float, float]


def one_run(task: tuple[Point, int]) -> dict[str, Any]:
    torch.set_num_threads(1)
    point, epochs = task
    backbone, method, schedule, rate, decay, ramp = point
    config = ExperimentConfig(
        dataset="synthetic",
        backbone=backbone,
        method=method,
        budgets=(0.1, 0.05, 0.02),
        dim=32,
        train=TrainConfig(
            epochs=epochs,
            batch_size=1024,
            threshold_schedule=schedule,
            threshold_lr=rate,
            decay_ramp=ramp,
            progress=False,
        ),
        embedding_options={"pruning_l2": decay},
    )
    record: dict[str, Any] = {"point": list(point), "epochs": epochs}
    began = time.perf_counter()
    data = load_dataset("synthetic", valid_fraction=config.valid_fraction, seed=config.seed)
    model = build_model(config, data)
    try:
        pruning = prune(model, data, config.train)
    except ValueError as error:  # a refused snapshot (stage 1 at chance) is a result too
        return {**record, "error": str(error), "seconds": time.perf_counter() - began}
    reach = stage_one_reach(model.embedding)
    result = retrain_snapshots(config, model, data, pruning)
    steps = pruning.steps
    record.update(
        reach,
        stage_one_epochs=len(pruning.history),
        threshold_by_epoch=[round(x, 3) for x in pruning.history["threshold"]],
        decay_scale_by_epoch=pruning.history["decay_scale"].tolist(),
        snapshots=[
            {
                "budget": row["budget"],
                "source": row["snapshot_source"],
                "epoch": None if snap.step is None else int(steps["epoch"].iloc[snap.step]),
                "bpr_loss": round(row["snapshot_bpr_loss"], 4),
                "valid_recall@20": round(row["valid_recall@20"], 4),
                "recall@20": round(row["recall@20"], 4),
                "pq_exclusive": round(row.get("pq_exclusive", float("nan")), 4),
                "pq_exclusive_chance": round(row.get("pq_exclusive_chance", float("nan")), 4),
            }
            for row, snap in zip(result.records, pruning.snapshots, strict=True)
        ],
        seconds=round(time.perf_counter() - began, 1),
    )
    return record


def as_point(stored: list[Any]) -> Point:
    """A stored run's point; runs from before the decay ramp had a fixed decay (ramp 1)."""
    return (*stored, 1.0)[:6]  # type: ignore[return-value]


def summary(lines: list[str]) -> list[dict[str, Any]]:
    """One row per run and budget (a refused run: one row with its error)."""
    rows = []
    for line in lines:
        record = json.loads(line)
        backbone, method, schedule, rate, decay, ramp = as_point(record["point"])
        point = {
            "epochs": record.get("epochs", 10),
            "backbone": backbone,
            "method": method,
            "schedule": schedule,
            "threshold_lr": rate,
            "pruning_l2": decay,
            "decay_ramp": ramp,
        }
        if "error" in record:
            rows.append({**point, "error": record["error"].split(":")[0]})
            continue
        reach = {
            "threshold_level": record["threshold_level"],
            "weight_p50": round(record["weight_quantiles"]["0.5"], 4),
            "weight_p95": round(record["weight_quantiles"]["0.95"], 4),
        }
        rows.extend({**point, **reach, **snapshot} for snapshot in record["snapshots"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["cerp", "pep"])
    parser.add_argument("--pruning-l2", nargs="+", type=float, default=list(PRUNING_L2))
    parser.add_argument(
        "--epoch-rates", nargs="+", type=float, help="only these per-epoch threshold_lr values"
    )
    parser.add_argument(
        "--decay-ramps", nargs="+", type=float, default=[1.0], help="decay_ramp values"
    )
    parser.add_argument("--epochs", type=int, default=10, help="bound of each stage")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {
            (as_point(record["point"]), record.get("epochs", 10))
            for record in map(json.loads, args.out.read_text().splitlines())
        }
    grid = [
        (backbone, method, schedule, rate, decay, ramp)
        for backbone, method, (schedule, rate), decay, ramp in itertools.product(
            ("lightgcn", "mf"), args.methods, SCHEDULES, args.pruning_l2, args.decay_ramps
        )
        if args.epoch_rates is None or (schedule == "epoch" and rate in args.epoch_rates)
    ]
    todo = [(point, args.epochs) for point in grid if (point, args.epochs) not in done]
    with ProcessPoolExecutor(args.workers) as pool, args.out.open("a") as out:
        for record in pool.map(one_run, todo):
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(json.dumps(record)[:200], flush=True)
    lines = args.out.read_text().splitlines()
    table = args.out.with_name("summary.csv" if args.out.stem == "runs" else f"{args.out.stem}.csv")
    pd.DataFrame(summary(lines)).to_csv(table, index=False)


if __name__ == "__main__":
    main()
