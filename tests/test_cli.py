"""The command line: metrics.json of a real run, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cerp_core.cli import build_parser, experiment_config, main
from cerp_core.config import ExperimentConfig, paper_protocol

REQUIRED = {
    "dataset", "backbone", "method", "budget", "num_params", "full_params", "memory_bytes",
    "train_seconds", "eval_seconds",
}  # fmt: skip


@pytest.mark.slow
def test_train_writes_metrics_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(
        ["train", "--dataset", "synthetic", "--method", "cerp", "--budget", "0.1", "0.05",
         "--epochs", "2", "--dim", "16", "--out", str(out), "--no-progress",
         "--embedding-option", "bucket_factor=4", "--embedding-option", "regularizer_weight=1e-2",
         "--threshold-lr", "0.05"]
    )  # fmt: skip
    assert code == 0
    records = json.loads((out / "metrics.json").read_text())
    assert [r["budget"] for r in records] == [0.1, 0.05]  # one pruning run, both budgets
    record = records[0]
    assert REQUIRED <= record.keys()
    for k in (5, 10, 20, 50):
        assert 0.0 <= record[f"recall@{k}"] <= 1.0 and 0.0 <= record[f"ndcg@{k}"] <= 1.0
        assert f"valid_recall@{k}" in record
    assert (record["dataset"], record["method"], record["budget"]) == ("synthetic", "cerp", 0.1)
    assert record["num_params"] <= 0.1 * record["full_params"]
    assert record["full_params"] == 5000 * 16
    assert (out / "history.csv").is_file()
    assert (pd.read_csv(out / "prune_history.csv")["num_nonzero"] > 0).all()
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["embedding_options"] == {"bucket_factor": 4, "regularizer_weight": 0.01}
    assert config["train"]["threshold_lr"] == 0.05


@pytest.mark.slow
def test_another_configuration_never_overwrites_a_result(tmp_path: Path, capsys) -> None:
    """A second configuration in the same --out is refused (exit 2), the first result stays;
    the same configuration resumes from its checkpoints and gives the same numbers."""

    def train(method: str, seed: str, out: Path = tmp_path) -> int:
        return main(
            ["train", "--method", method, "--budget", "0.1", "--epochs", "2", "--dim", "8",
             "--seed", seed, "--out", str(out), "--no-progress"]
        )  # fmt: skip

    assert train("hash", "0") == 0
    first = (tmp_path / "metrics.json").read_text()
    for method, seed in (("hash", "1"), ("cerp", "0")):
        assert train(method, seed) == 2
        assert "holds the results of another configuration" in capsys.readouterr().err
        assert (tmp_path / "metrics.json").read_text() == first
        assert not (tmp_path / "prune_history.csv").exists()
    assert train("hash", "0") == 0  # the same configuration resumes from its checkpoints

    def metrics(text: str) -> list[dict]:
        return [{k: v for k, v in r.items() if "@" in k} for r in json.loads(text)]

    assert metrics((tmp_path / "metrics.json").read_text()) == metrics(first)
    assert train("hash", "0", tmp_path / "metrics.json") == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_train_defaults_are_the_dataclass_defaults() -> None:
    args = build_parser().parse_args(["train", "--out", "x"])
    assert experiment_config(args) == ExperimentConfig()
    paper = build_parser().parse_args(["train", "--out", "x", "--protocol", "paper"])
    assert experiment_config(paper) == paper_protocol(ExperimentConfig())


def test_train_help_shows_the_dataclass_defaults(capsys) -> None:
    from cerp_core.train import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"--lr LR Adam lr of the weights (default: {TrainConfig.lr})" in text
    assert (
        f"--threshold-lr THRESHOLD_LR Adam lr of pruning thresholds "
        f"(default: {TrainConfig.threshold_lr})" in text
    )
    assert f"the authors' form) (default: {TrainConfig.threshold_schedule})" in text
    assert f"(1: a fixed decay) (default: {TrainConfig.decay_ramp})" in text
    assert f"positive pairs per step (default: {TrainConfig.batch_size})" in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--budget", "0"], "error: every budget must be a number in (0, 1], got (0.0,)"),
        (["--budget", "1.5"], "error: every budget must be a number in (0, 1], got (1.5,)"),
        (["--budget", "0.1", "0.1"], "error: budgets must be distinct, got (0.1, 0.1)"),
        (["--seed", "-1"], "error: seed must be in [0, 2**63), got -1"),
        (["--epochs", "0"], "error: TrainConfig.epochs must be >= 1, got 0"),
        (["--method", "nope"], "invalid choice: 'nope'"),
        (["--dataset", "no-such-data"], "error: dataset 'no-such-data' is neither"),
        (["--method", "qr", "--budget", "0.001"], "error: qr cannot fit N=5000 ids x d=64"),
        (["--lr", "nan"], "error: TrainConfig.lr must be a finite number > 0, got nan"),
        (["--device", "cuda:99"], "error: device 'cuda:99': this machine has"),
        (["--device", "tpu"], "error: device 'tpu': "),
        (["--device", "meta"], "error: device 'meta': the suite runs on cpu and cuda devices"),
        (
            ["--embedding-option", "regulariser_weight=1"],
            "error: method 'cerp' does not take "
            "the option(s) ['regulariser_weight']; it accepts ['bucket_factor', ",
        ),
        (["--model-option", "layers=2"], "error: backbone 'mf' does not take the option(s)"),
        (["--embedding-option", "oops"], "expected KEY=VALUE, got 'oops'"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_get_one_line_and_nonzero_exit(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    command = [sys.executable, "-m", "cerp_core", "train", "--out", str(tmp_path / "x"),
               "--epochs", "1", "--no-progress", *arguments]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()[-1]) < 400


@pytest.mark.slow
def test_report_writes_tables_and_figures(tmp_path: Path) -> None:

    rows = [
        ("full", 1.0, 1000, 0.30, 0.20),
        ("cerp", 0.1, 100, 0.20, 0.15),
        ("pep", 0.1, 100, 0.10, 0.05),
    ]
    frame = pd.DataFrame(rows, columns=["method", "budget", "num_params", "recall@20", "ndcg@20"])
    frame = frame.assign(dataset="toy", backbone="mf", seed=0, memory_bytes=frame.num_params * 4)
    frame["param_fraction"] = frame.num_params / 1000
    frame.loc[frame.method == "cerp", ["pq_exclusive", "pq_zero_entities"]] = [0.8, 3]
    frame.to_csv(tmp_path / "results.csv", index=False)
    assert main(["report", str(tmp_path)]) == 0
    versus = pd.read_csv(tmp_path / "cerp_head_to_head.csv").set_index("baseline")
    assert versus.loc["pep", "difference"] == pytest.approx(0.10)
    assert versus.loc["full", "ratio"] == pytest.approx(0.2 / 0.3)
    ranks = pd.read_csv(tmp_path / "cerp_standings.csv")
    assert ranks[["budget", "best", "rank", "compact"]].values.tolist() == [[0.1, "cerp", 1, 2]]
    composition = pd.read_csv(tmp_path / "complementarity.csv")
    assert composition[["method", "pq_exclusive"]].values.tolist() == [["cerp", 0.8]]
    table = (tmp_path / "table.md").read_text()
    assert "| toy | mf | cerp | - | - | **0.2000** | **0.1500** |" in table
    assert "\\textbf{0.2000}" in (tmp_path / "table.tex").read_text()
    relative = pd.read_csv(tmp_path / "relative_accuracy.csv").set_index("method")
    assert relative.loc["cerp", "relative_recall@20_mean"] == pytest.approx(0.2 / 0.3)
    for suffix in ("png", "pdf"):
        assert (tmp_path / f"budget_curves_toy_mf.{suffix}").stat().st_size > 1000
    assert main(["report", str(tmp_path / "missing")]) == 2

    partial = tmp_path / "partial"  # one panel with a full model, one without
    partial.mkdir()
    other_panel = frame[frame.method != "full"].assign(backbone="lightgcn")
    pd.concat([frame, other_panel]).to_csv(partial / "results.csv", index=False)
    assert main(["report", str(partial)]) == 0
    assert set(pd.read_csv(partial / "relative_accuracy.csv")["backbone"]) == {"mf"}
    assert (partial / "budget_curves_toy_lightgcn.png").is_file()

    without_full = tmp_path / "without-full"
    without_full.mkdir()
    frame[frame.method != "full"].to_csv(without_full / "results.csv", index=False)
    assert main(["report", str(without_full)]) == 0
    assert (without_full / "pareto_front.csv").is_file()
    assert (without_full / "budget_curves_toy_mf.png").is_file()
    assert not (without_full / "relative_accuracy.csv").exists()


@pytest.mark.slow
def test_report_selects_one_sweeps_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two sweeps in one folder differ only in lr: averaging them as seeds is refused, and
    ``--config`` reports the runs of one sweep."""
    import yaml

    from cerp_core.sweep import SweepConfig

    rows = []
    for lr, recall in ((0.01, 0.30), (0.001, 0.10)):
        config = {"methods": ["full"], "budgets": [1.0], "train": {"lr": lr}}
        (tmp_path / f"lr{lr}.yaml").write_text(yaml.safe_dump(config))
        (run,) = SweepConfig.from_dict(config).runs()
        rows.append(
            {"run_key": run.key, "dataset": "synthetic", "backbone": "mf", "method": "full",
             "budget": 1.0, "seed": 0, "num_params": 1000, "param_fraction": 1.0,
             "memory_bytes": 4000, "recall@20": recall, "ndcg@20": recall / 2}
        )  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    assert main(["report", str(tmp_path)]) == 2
    assert "2 rows share a (dataset, backbone, method, budget, seed)" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--config", str(tmp_path / "lr0.001.yaml")]) == 0
    assert "| synthetic | mf | full | 0.1000 | 0.0500 |" in (tmp_path / "table.md").read_text()


def test_every_run_field_has_a_train_option_that_sets_it() -> None:
    """The options are derived from the fields' declarations: every field of ExperimentConfig
    and TrainConfig but those set otherwise (train.seed by --seed) has one, and it reaches the
    configuration."""
    import argparse

    from cerp_core.cli import _config_options
    from cerp_core.schema import setting_fields
    from cerp_core.train import TrainConfig

    options = argparse.ArgumentParser()
    _config_options(options, ExperimentConfig, ExperimentConfig(), "")
    dests = {action.dest for action in options._actions}
    fields = {f"train.{name}" for name, *_ in setting_fields(TrainConfig)} | {
        name for name, *_ in setting_fields(ExperimentConfig) if name != "train"
    }
    assert fields - dests == {"train.seed"}
    args = build_parser().parse_args(
        ["train", "--out", "x", "--seed", "4", "--patience", "3", "--l2", "0", "--ks", "5", "20",
         "--selection-metric", "recall@20", "--data-option", "num_users=50",
         "--no-resample-negatives", "--grad-clip", "none", "--threshold-lr", "0.5",
         "--eval-batch-size", "7"]
    )  # fmt: skip
    config = experiment_config(args)
    assert (config.seed, config.train.seed, config.train.patience, config.train.l2) == (4, 4, 3, 0)
    assert config.ks == (5, 20) and config.train.selection_metric == "recall@20"
    assert config.data_options == {"num_users": 50} and config.eval_batch_size == 7
    assert config.train.resample_negatives is False and config.train.grad_clip is None
    assert config.train.threshold_lr == 0.5
