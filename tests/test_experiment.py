"""Experiment settings that cannot run are refused before any data is loaded or trained."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cerp_core.analysis import complementarity
from cerp_core.config import PAPER_TRAINING, ExperimentConfig, paper_protocol
from cerp_core.data import load_dataset
from cerp_core.experiment import build_model, run_experiment
from cerp_core.schema import ConfigError
from cerp_core.train import TrainConfig


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"budgets": (0.1, 0.1), "method": "pep"}, r"budgets must be distinct, got \(0.1, 0.1\)"),
        ({"budgets": (0.0,), "method": "pep"}, r"every budget must be a number in \(0, 1\]"),
        ({"ks": (10, 50)}, "selection_metric 'ndcg@20' must be recall@k or ndcg@k with k in ks"),
        ({"protocol": "paper"}, r"keeps no validation split; build .* with paper_protocol"),
        ({"protocol": "papers"}, "protocol must be one of"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*63\)"),
        ({"valid_fraction": 1.0}, r"valid_fraction must be in \[0, 1\)"),
        ({"dataset": "nowhere"}, "dataset 'nowhere' is neither a known data set"),
    ],
)
def test_bad_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**settings)


def test_paper_protocol_is_a_new_config_with_the_authors_settings() -> None:
    mine = ExperimentConfig(train=TrainConfig(epochs=3, lr=0.05))
    paper = paper_protocol(mine)
    assert mine.protocol == "validation" and mine.train.lr == 0.05  # left as it was
    assert paper.protocol == "paper" and paper.valid_fraction == 0.0
    assert paper.train.lr == PAPER_TRAINING["lr"] and paper.train.batch_size == 10
    assert paper.train.epochs == 3  # what the protocol does not name is kept
    with pytest.raises(ValueError, match="selection_metric 'ndcg@5'"):  # the paper's metric
        paper_protocol(ExperimentConfig(ks=(20,)))


def test_from_dict_names_the_key_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"^train.lrr: unknown key; known: \['epochs',"):
        ExperimentConfig.from_dict({"train": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match=r"^dim: input should be a valid integer \(got True\)"):
        ExperimentConfig.from_dict({"dim": True})
    config = ExperimentConfig.from_dict({"budgets": [0.1, 0.05], "train": {"lr": 1}})
    assert config == ExperimentConfig(budgets=(0.1, 0.05), train=TrainConfig(lr=1.0))


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


def test_cerp_records_carry_the_complementarity_of_their_final_tables() -> None:
    config = ExperimentConfig(
        method="cerp",
        budgets=(0.2, 0.1),
        dim=16,
        train=TrainConfig(epochs=3, batch_size=512, lr=0.03, progress=False),
        data_options={"num_users": 300, "num_items": 400},
    )
    result = run_experiment(config)
    last = result.records[-1]  # the model left in result.model is the last budget's
    assert last["pq_exclusive"] == pytest.approx(
        complementarity(result.model.embedding)["exclusive"]
    )
    for record in result.records:
        shares = [record[f"pq_{k}"] for k in ("both_zero", "only_P", "only_Q", "both")]
        assert sum(shares) == pytest.approx(1.0)
    hash_config = dataclasses.replace(config, method="hash", budgets=(0.1,))
    assert not any(k.startswith("pq_") for k in run_experiment(hash_config).records[0])
