"""One contract, every registered method: what any row of a results table can rely on.

Each method of :data:`cerp_core.embeddings.METHODS` runs the same tiny experiment (synthetic
data, MF, two epochs, budgets 0.2 and 0.1) and its records are checked against the same
invariants, so a new method is covered by registering it. A budget the method cannot meet must
say why instead.
"""

from __future__ import annotations

import math

import pytest

from cerp_core.embeddings import METHODS
from cerp_core.experiment import ExperimentConfig, run_experiment
from cerp_core.train import TrainConfig

BUDGETS = (0.2, 0.1)
KS = (5, 10, 20, 50)


def tiny_records(method: str, budgets: tuple[float, ...]) -> list[dict]:
    """Records of one tiny run of ``method`` at ``budgets``."""
    config = ExperimentConfig(
        method=method,
        budgets=budgets,
        dim=8,
        data_options={"num_users": 150, "num_items": 200},
        train=TrainConfig(epochs=2, batch_size=128, lr=0.05, progress=False),
    )
    return run_experiment(config, record_infeasible=True).records


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_meets_the_record_contract(method: str) -> None:
    spec = METHODS[method]
    if spec.fixed_budget is not None:  # runs once, at its own budget
        records = tiny_records(method, (1.0,))
        assert [r["budget"] for r in records] == [spec.fixed_budget]
    elif spec.prunable:  # one run snapshots every budget
        records = tiny_records(method, BUDGETS)
    else:  # one table, so one run, per budget
        records = [r for budget in BUDGETS for r in tiny_records(method, (budget,))]
    if spec.fixed_budget is None:
        assert [r["budget"] for r in records] == list(BUDGETS)
    assert all(r["method"] == method and r["dataset"] == "synthetic" for r in records)
    for record in records:
        if record.get("infeasible"):  # a budget it cannot meet says why, with no metrics
            assert isinstance(record["infeasible"], str) and "recall@20" not in record
            continue
        full = record["full_params"]
        assert full == (150 + 200) * 8
        assert record["num_params"] <= math.floor(record["budget"] * full)
        assert record["param_fraction"] == pytest.approx(record["num_params"] / full)
        assert record["memory_bytes"] >= 4 * record["num_params"]
        for metric in ("recall", "ndcg", "valid_recall", "valid_ndcg"):
            values = [record[f"{metric}@{k}"] for k in KS]
            assert all(0.0 <= v <= 1.0 for v in values), (metric, values)
        recalls = [record[f"recall@{k}"] for k in KS]
        assert recalls == sorted(recalls)  # a longer list finds at least as much
        if spec.prunable:  # every snapshot was taken by the method, and says how
            assert record["snapshot_source"] in ("threshold", "magnitude")
    assert any(not r.get("infeasible") for r in records)
