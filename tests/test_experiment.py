"""Experiment settings that cannot run are refused before any data is loaded or trained."""

from __future__ import annotations

import math

import pytest

from cerp_core.data import load_dataset
from cerp_core.experiment import ExperimentConfig, build_model
from cerp_core.train import TrainConfig


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"budgets": (0.1, 0.1), "method": "pep"}, r"budgets must be distinct, got \(0.1, 0.1\)"),
        ({"budgets": (0.0,), "method": "pep"}, r"every budget must be in \(0, 1\]"),
        ({"ks": (10, 50)}, "selection_metric 'ndcg@20' must be recall@k or ndcg@k with k in ks"),
        ({"protocol": "paper", "ks": (20,)}, "selection_metric 'ndcg@5'"),  # the paper's metric
        ({"protocol": "papers"}, "protocol must be one of"),
    ],
)
def test_bad_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**settings)


@pytest.mark.parametrize("name", ["lr", "threshold_lr"])
@pytest.mark.parametrize("value", [0.0, -1e-3, math.nan, math.inf])
def test_learning_rates_must_be_finite_and_positive(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"TrainConfig.{name} must be a finite number > 0"):
        TrainConfig(**{name: value})


def test_budgets_that_round_to_one_target_are_refused() -> None:
    data = load_dataset("synthetic", num_users=20, num_items=30)  # 50 x 4 = 200 parameters
    config = ExperimentConfig(method="pep", budgets=(0.1, 0.104), dim=4)  # both give 20
    with pytest.raises(ValueError, match=r"give only the targets \(20,\).*round to the same"):
        build_model(config, data)


@pytest.mark.parametrize("device", ["meta", "mps"])
def test_devices_other_than_cpu_and_cuda_are_refused(device: str) -> None:
    data = load_dataset("synthetic", num_users=20, num_items=30)
    with pytest.raises(ValueError, match=f"device '{device}': the suite runs on cpu and cuda"):
        build_model(ExperimentConfig(device=device, dim=4), data)
