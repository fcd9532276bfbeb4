"""Sweeps: configuration checks, grid expansion, the resumable store, kill-and-resume, backends."""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray
import torch
import yaml

from cerp_core.cli import main
from cerp_core.embeddings import METHODS
from cerp_core.experiment import ExperimentConfig
from cerp_core.schema import parse
from cerp_core.sweep import (
    ResultStore,
    StoreBusyError,
    SweepConfig,
    SweepConfigError,
    run_key,
    run_sweep,
)
from cerp_core.sweep.store import _config_columns

REPO = Path(__file__).resolve().parents[1]
TINY: dict[str, Any] = {
    "methods": ["full", "hash", "cerp"],
    "budgets": [0.2, 0.1],
    "dim": 8,
    "train": {"epochs": 2, "lr": 0.05},  # enough for CERP's stage 1 to learn before its masks
    "data_options": {"synthetic": {"num_users": 150, "num_items": 200}},
}
TINY_ROWS = 5  # full at 1.0, hash at 0.2 and 0.1, cerp at 0.2 and 0.1 (one pruning run)
TINY_RUNS = 4
BACKEND_INVARIANT = (
    "num_params", "memory_bytes", "best_epoch", "epochs", "snapshot_source", "snapshot_bpr_loss",
    "snapshot_epoch"
)  # fmt: skip


def compared(results: pd.DataFrame) -> pd.DataFrame:
    """The columns that must not depend on the backend, by row key."""
    columns = [
        c
        for c in results.columns
        if c.startswith(("recall@", "ndcg@", "valid_")) or c in BACKEND_INVARIANT
    ]
    return results.set_index("row_key").sort_index()[columns]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The tiny sweep run sequentially in this process, uninterrupted."""
    out = tmp_path_factory.mktemp("reference")
    result = run_sweep(SweepConfig.from_dict(TINY), out, progress=False)
    assert not result.failed and len(result.results) == TINY_ROWS
    return result.results


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("name", [p.stem for p in sorted((REPO / "configs").glob("*.yaml"))])
def test_shipped_configs_are_valid(name: str) -> None:
    values = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    if values.get("device", "cpu").startswith("cuda") and not torch.cuda.is_available():
        values["device"] = "cpu"  # GPU sweeps are checked as they would run on CPU
    config = SweepConfig.from_dict(values)
    for runs in (config.runs({}), config.tuning_runs()):
        assert len({run.key for run in runs}) == len(runs)
    assert config.runs({})
    assert all(run.config.train.progress is False for run in runs)


def test_quick_config_covers_every_method() -> None:
    config = SweepConfig.from_yaml(REPO / "configs" / "quick.yaml")
    methods = {run.config.method for run in config.runs()}
    assert methods == set(METHODS)


BAD_CONFIGS = [
    ("metods: [full]", "metods: unknown field"),
    ("dim: sixty-four", "dim: input should be a valid integer (got 'sixty-four')"),
    ("dim: 0", "dim must be >= 1, got 0"),
    ("methods: [full, cerb]", "methods: unknown method 'cerb'; choose from"),
    ("backbones: [mf, gcn]", "unknown backbone 'gcn'; choose from ['mf', 'mlp', 'lightgcn']"),
    ("datasets: [gowala]", "dataset 'gowala' is neither a known data set"),
    ("budgets: [0.1, 1.5]", "budgets: every budget must be a number in (0, 1], got (0.1, 1.5)"),
    ("budgets: [0.0]", "budgets: every budget must be a number in (0, 1]"),
    ("budgets: [0.1, 0.1]", "budgets: [0.1] listed more than once"),
    ("budgets: 0.1", "budgets: input should be a valid array (got 0.1)"),
    ("budgets: [0.1, high]", "budgets.1: input should be a valid number (got 'high')"),
    ("budgets: [1.0, 0.1]\nmethods: [cerp]", "budgets: 1.0 is the full model's budget"),
    ("seeds: []", "seeds: needs at least one value"),
    ("protocol: papers", "protocol must be one of"),
    ("train: {epoch: 3}", "train.epoch: unknown key; known: ['epochs'"),
    ("train: {lr: fast}", "train.lr: input should be a valid number (got 'fast')"),
    ("train: {epochs: 0}", "train: TrainConfig.epochs must be >= 1"),
    ("train: {seed: 1}", "train.seed: set by the sweep's seeds"),
    ("train: [1, 2]", "train: input should be an object (got [1, 2])"),
    ("model_options: {lightgcn: {num_layers: 2}}", "model_options: ['lightgcn'] not in"),
    (
        "datasets: [gowalla]\ndata_options: {gowalla: {num_users: 9}}",
        "data_options ['num_users']: only the synthetic data set takes options, not 'gowalla'",
    ),
    ("ks: [10, 50]", "train.selection_metric 'ndcg@20' must be recall@k or ndcg@k"),
    ("methods: [full, hash]\nbudgets: [1.0]", "budgets: method 'hash' needs a budget below 1.0"),
    ("embedding_options: {cerp: 3}", "embedding_options.cerp: input should be an object (got 3)"),
    ("- full\n- hash", "expected a mapping of fields, got list"),
    (
        "methods: [cerp]\nembedding_options: {cerp: {regulariser_weight: 0.001}}",
        "method 'cerp' does not take the option(s) ['regulariser_weight']; it accepts",
    ),
    (
        "backbones: [lightgcn]\nmodel_options: {lightgcn: {layers: 2}}",
        "backbone 'lightgcn' does not take the option(s) ['layers']; it accepts",
    ),
    ("data_options: {synthetic: {users: 9}}", "does not take the option(s) ['users']"),
    (
        "methods: [full, hash]\ntune: {full: {train.lr: [0.1, 0.2]}}\ntune_budget: 0.1",
        "tune: every trained method of the sweep needs a grid, and only those (missing ['hash']",
    ),
    (
        "methods: [full, hash]\ntune: {full: {train.lr: [0.1, 0.2]}, hash: {train.lr: [0.1]}}"
        "\ntune_budget: 0.1",
        "tune: every method must get the same number of grid points",
    ),
    ("methods: [full]\ntune: {full: {lr: [0.1]}}\ntune_budget: 0.1", "expected train.<field>"),
    ("methods: [full]\ntune: {full: {train.lr: [0.1]}}\ntune_budget: 0.3", "tune_budget: must"),
    (
        "methods: [full]\ntune: {full: {train.lrr: [0.1]}}\ntune_budget: 0.1",
        "tune.full.train.lrr: unknown field; known: ['batch_size'",
    ),
    ("methods: [full]\ntune: {full: {train.lr: [-1.0]}}\ntune_budget: 0.1", "with {'train.lr'"),
    ("methods: [full\nseeds: [0]", "not valid YAML"),
    ("methods: [full, cerp]\ntune_with: {cerp: full}", "tune_with: given without a tune grid"),
    (
        "methods: [full, cerp, hash]\ntune: {full: {train.lr: [0.1]}, hash: {train.lr: [0.1]}}"
        "\ntune_budget: 0.1\ntune_with: {cerp: pep}",
        "tune_with.cerp: expected a trained method of the sweep without a grid of its own",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_bad_config_files_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SweepConfigError) as error:
        SweepConfig.from_yaml(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_yaml_reads_exponents_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("train: {lr: 1e-3, weight_decay: 5E-5}\nvalid_fraction: 0\n")
    config = SweepConfig.from_yaml(path)
    assert config.base.train.lr == 1e-3 and config.base.train.weight_decay == 5e-5
    assert config.base.valid_fraction == 0.0 and isinstance(config.base.valid_fraction, float)


def test_runs_expand_the_grid() -> None:
    config = SweepConfig.from_dict(
        {
            "backbones": ["mf", "lightgcn"],
            "methods": ["full", "hash", "pep"],
            "budgets": [0.05, 1.0, 0.2],
            "seeds": [0, 7],
            "train": {"lr": 0.01},
            "embedding_options": {"pep": {"threshold_init": -15.0}},
            "model_options": {"lightgcn": {"num_layers": 2}},
        }
    )
    runs = config.runs()
    grid = [(r.config.backbone, r.config.seed, r.config.method, r.config.budgets) for r in runs]
    per_seed = [("full", (1.0,)), ("hash", (0.2,)), ("hash", (0.05,)), ("pep", (0.2, 0.05))]
    assert grid == [
        (backbone, seed, method, budgets)
        for backbone in ("mf", "lightgcn")
        for seed in (0, 7)
        for method, budgets in per_seed
    ]
    for run in runs:
        assert run.config.train.seed == run.config.seed
        assert run.config.train.lr == 0.01
        pep = run.config.method == "pep"
        assert run.config.embedding_options == ({"threshold_init": -15.0} if pep else {})
        lightgcn = run.config.backbone == "lightgcn"
        assert run.config.model_options == ({"num_layers": 2} if lightgcn else {})


def test_run_key_ignores_what_does_not_change_results() -> None:
    config = SweepConfig.from_dict(TINY).runs()[0].config
    same = dataclasses.replace(
        config,
        data_root="/elsewhere",
        eval_batch_size=7,
        train=dataclasses.replace(config.train, progress=True),
    )
    assert run_key(same) == run_key(config)
    other_lr = dataclasses.replace(config, train=dataclasses.replace(config.train, lr=0.5))
    assert run_key(other_lr) != run_key(config)
    assert run_key(dataclasses.replace(config, seed=1)) != run_key(config)
    assert run_key(ExperimentConfig()) != run_key(config)


def test_committed_runs_keep_their_keys() -> None:
    """The key is derived from the fields' declarations; every committed run written under the
    current schema (its stored configuration is exactly what the schema gives back) still has the
    key it was stored under, so redesigns reuse stored results."""
    checked = 0
    for path in sorted(REPO.glob("results/**/runs/*.json")):
        stored = json.loads(path.read_text())
        config = parse(ExperimentConfig, stored["config"])
        if json.loads(json.dumps(dataclasses.asdict(config))) != stored["config"]:
            continue  # written under an older schema (a field added since)
        assert run_key(config) == stored["key"] == path.stem, path
        checked += 1
    assert checked >= 8  # at least the converged headline's tuning runs


def test_results_columns_are_the_fields_that_change_results() -> None:
    config = dataclasses.asdict(SweepConfig.from_dict(TINY).runs()[0].config)
    columns = _config_columns(json.loads(json.dumps(config)))
    assert columns["train.lr"] == config["train"]["lr"] and columns["device"] == "cpu"
    assert (
        columns["run_budgets"] == json.dumps(config["budgets"])
        and columns["ks"] == "[5, 10, 20, 50]"
    )
    assert columns["model_options"] == json.dumps(config["model_options"], sort_keys=True)
    left_out = {"data_root", "eval_batch_size", "train.progress", "method", "budgets"}
    assert not left_out & set(columns)


# ----------------------------------------------------------------------------- store


def stub_runner(
    config: ExperimentConfig, checkpoint_dir: Path | None, broken: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Instant records; methods in ``broken`` raise."""
    if config.method in broken:
        raise RuntimeError(f"{config.method} is broken today")
    return [
        {
            "dataset": config.dataset,
            "backbone": config.backbone,
            "method": config.method,
            "budget": budget,
            "seed": config.seed,
            "recall@20": budget / 10 + config.seed,
        }
        for budget in config.budgets
    ]


def test_store_skips_finished_runs_and_retries_failures(tmp_path: Path) -> None:
    config = SweepConfig.from_dict(
        {"methods": ["full", "hash", "qr"], "budgets": [0.2, 0.1], "train": {"lr": 0.02}}
    )
    broken = functools.partial(stub_runner, broken=frozenset({"qr"}))
    first = run_sweep(config, tmp_path, runner=broken, progress=False)
    assert (len(first.done), len(first.skipped), len(first.failed)) == (3, 0, 2)
    assert sorted(p.stem for p in (tmp_path / "failures").iterdir()) == sorted(first.failed)
    summary = first.summary()
    assert "3 runs done, 0 skipped (already stored), 2 failed" in summary
    assert "qr seed 0 budgets 0.2: RuntimeError: qr is broken today" in summary
    assert len(pd.read_csv(tmp_path / "results.csv")) == 3

    # a write cut short leaves a temporary file; a kill inside ResultStore.save, after the
    # run's file, leaves a stale table, its checkpoints, or its old failure file
    (tmp_path / "runs" / ".cut.json.123.tmp").write_text("{")
    (tmp_path / "results.csv").unlink()
    stored = sorted(first.done)
    (tmp_path / "checkpoints" / stored[0]).mkdir(parents=True)
    (tmp_path / "checkpoints" / stored[0] / "stage1.pt").write_bytes(b"x")
    (tmp_path / "failures" / f"{stored[1]}.json").write_text("{}")
    second = run_sweep(config, tmp_path, runner=stub_runner, progress=False)
    assert (len(second.done), len(second.skipped), len(second.failed)) == (2, 3, 0)
    assert not list((tmp_path / "failures").iterdir())
    assert not list((tmp_path / "checkpoints").iterdir())
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 5 and table["row_key"].is_unique
    assert set(table["run_key"]) == {run.key for run in config.runs()}
    assert list(second.results["method"]) == ["full", "hash", "hash", "qr", "qr"]
    assert table.loc[table["method"] == "qr", "train.lr"].tolist() == [0.02, 0.02]

    third = run_sweep(config, tmp_path, runner=stub_runner, progress=False)
    assert (len(third.done), len(third.skipped)) == (0, 5)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results.csv"), table)


def test_store_keeps_other_sweeps_rows(tmp_path: Path) -> None:
    run_sweep(SweepConfig.from_dict({"seeds": [0]}), tmp_path, runner=stub_runner, progress=False)
    result = run_sweep(
        SweepConfig.from_dict({"seeds": [1]}), tmp_path, runner=stub_runner, progress=False
    )
    assert list(result.results["seed"]) == [1]
    assert sorted(ResultStore(tmp_path).table()["seed"]) == [0, 1]


@pytest.mark.slow
def test_one_sweep_at_a_time_per_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second writer is refused while another process holds the folder; the lock dies with
    its holder, even when the holder is killed."""
    script = (
        "import sys, time; from cerp_core.sweep import ResultStore\n"
        "with ResultStore(sys.argv[1]).writing():\n"
        "    print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StoreBusyError, match=f"another sweep is writing to {tmp_path}"):
            run_sweep(SweepConfig(), tmp_path, runner=stub_runner, progress=False)
        config = tmp_path / "tiny.yaml"
        config.write_text(yaml.safe_dump(TINY))
        assert main(["sweep", str(config), "--out", str(tmp_path)]) == 2
        assert capsys.readouterr().err.startswith(f"error: another sweep is writing to {tmp_path}")
        assert not (tmp_path / "results.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    result = run_sweep(SweepConfig(), tmp_path, runner=stub_runner, progress=False)
    assert len(result.done) == len(SweepConfig().runs())


def test_bad_backend_arguments() -> None:
    config = SweepConfig()
    with pytest.raises(ValueError, match="backend must be one of"):
        run_sweep(config, "unused", backend="spark")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_sweep(config, "unused", workers=0)


# ----------------------------------------------------------------------------- real runs


STALLING_SWEEP = """
import sys, time
from pathlib import Path
import cerp_core.train
from cerp_core.sweep import SweepConfig, run_sweep

save = cerp_core.train.save_torch_atomic

def save_then_stall(path, state):
    save(path, state)
    if path.name == "prune.pt":  # CERP's stage 1, after its first epoch
        print("stalled", flush=True)
        time.sleep(600)

cerp_core.train.save_torch_atomic = save_then_stall
run_sweep(SweepConfig.from_yaml(Path(sys.argv[1])), sys.argv[2])
"""


@pytest.mark.slow
def test_resume_after_kill(
    tmp_path: Path, reference: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL a sweep in the middle of CERP's pruning stage, after the other runs are stored;
    the restart (a process pool) resumes stage 1 from its checkpoint, keeps the stored runs
    untouched, and ends with the uninterrupted sweep's rows."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", STALLING_SWEEP, str(config), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "stalled\n"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    stored = {path: path.stat().st_mtime_ns for path in (out / "runs").glob("*.json")}
    assert len(stored) == TINY_RUNS - 1  # full and both hash runs
    (in_flight,) = (out / "checkpoints").iterdir()
    assert [path.name for path in in_flight.iterdir()] == ["prune.pt"]
    # mark the checkpoint: a restart that resumes from it carries its clock on
    state = torch.load(in_flight / "prune.pt", weights_only=False)
    state["stage"].seconds = 1e6
    torch.save(state, in_flight / "prune.pt")

    assert main(["sweep", str(config), "--out", str(out), "--workers", "2"]) == 0

    left = TINY_RUNS - len(stored)
    assert f"{left} runs done, {len(stored)} skipped (already stored), 0 failed" in (
        capsys.readouterr().out
    )
    assert {path: path.stat().st_mtime_ns for path in stored} == stored
    table = pd.read_csv(out / "results.csv")
    assert len(table) == TINY_ROWS and table["row_key"].is_unique
    assert sorted(table["row_key"]) == sorted(reference["row_key"])
    assert not list((out / "checkpoints").iterdir())
    assert (table.loc[table["method"] == "cerp", "prune_seconds"] >= 1e6).all()
    pd.testing.assert_frame_equal(compared(table), compared(reference))


@pytest.mark.slow
def test_ray_backend_matches_local(tmp_path: Path, reference: pd.DataFrame) -> None:
    result = run_sweep(
        SweepConfig.from_dict(TINY), tmp_path, backend="ray", workers=2, progress=False
    )
    assert not result.failed and len(result.done) == TINY_RUNS
    assert not ray.is_initialized()  # the local instance it started is shut down
    pd.testing.assert_frame_equal(compared(result.results), compared(reference))


def scored_runner(config: ExperimentConfig, checkpoint_dir: Path | None) -> list[dict[str, Any]]:
    """Instant records whose validation score peaks at lr 0.01 and bucket factor 4, and whose
    test score would pick the other grid points (so a test-based choice would show)."""
    lr, factor = config.train.lr, config.embedding_options.get("bucket_factor", 2)
    valid = -abs(lr - 0.01) - abs(factor - 4)
    return [
        {**stub_runner(config, checkpoint_dir)[i], "valid_ndcg@20": valid, "ndcg@20": -valid}
        for i in range(len(config.budgets))
    ]


def test_tuning_picks_on_validation_and_fixes_the_choice_for_every_budget_and_seed(
    tmp_path: Path,
) -> None:
    config = SweepConfig.from_dict(
        {
            "methods": ["popularity", "full", "cerp"],
            "budgets": [0.2, 0.1],
            "seeds": [0, 1],
            "tune": {
                "full": {"train.lr": [0.01, 0.1]},
                "cerp": {"embedding.bucket_factor": [2, 4]},
            },
            "tune_budget": 0.1,
        }
    )
    tuning = config.tuning_runs()
    assert [(r.config.method, r.config.budgets, r.config.seed) for r in tuning] == [
        ("full", (1.0,), 0), ("full", (1.0,), 0), ("cerp", (0.1,), 0), ("cerp", (0.1,), 0)
    ]  # fmt: skip
    with pytest.raises(SweepConfigError, match="pass the chosen values"):
        config.runs()
    result = run_sweep(config, tmp_path, runner=scored_runner, progress=False)
    assert result.chosen == {
        ("synthetic", "mf", "full"): {"train.lr": 0.01},
        ("synthetic", "mf", "cerp"): {"embedding.bucket_factor": 4},
    }
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 2 * (1 + 1 + 2)  # seeds x (popularity, full, cerp at two budgets)
    cerp = table[table["method"] == "cerp"]
    assert set(cerp["tuned"]) == {'{"embedding.bucket_factor": 4}'}
    assert set(cerp["embedding_options"]) == {'{"bucket_factor": 4}'}
    assert set(table.loc[table["method"] == "full", "train.lr"]) == {0.01}
    assert len(pd.read_csv(tmp_path / "tuning" / "results.csv")) == 4
    assert "tuned on validation: synthetic/mf/cerp: {'embedding.bucket_factor': 4}" in (
        result.summary()
    )
    # full's chosen point (lr 0.01, seed 0) is a run of the sweep: adopted, not trained again
    assert (len(result.done), len(result.skipped)) == (5, 1)
    again = run_sweep(config, tmp_path, runner=scored_runner, progress=False)
    assert (len(again.done), len(again.skipped)) == (0, 6)


def test_an_ablation_takes_its_methods_tuned_values(tmp_path: Path) -> None:
    """``tune_with``: cerp-noreg runs no grid of its own and trains with CERP's chosen point."""
    config = SweepConfig.from_dict(
        {
            "methods": ["full", "cerp", "cerp-noreg"],
            "budgets": [0.1],
            "tune": {
                "full": {"train.lr": [0.01, 0.1]},
                "cerp": {"embedding.bucket_factor": [2, 4]},
            },
            "tune_budget": 0.1,
            "tune_with": {"cerp-noreg": "cerp"},
        }
    )
    assert {r.config.method for r in config.tuning_runs()} == {"full", "cerp"}
    result = run_sweep(config, tmp_path, runner=scored_runner, progress=False)
    assert ("synthetic", "mf", "cerp-noreg") not in result.chosen
    table = pd.read_csv(tmp_path / "results.csv").set_index("method")
    assert table.loc["cerp-noreg", "tuned"] == table.loc["cerp", "tuned"]
    assert table.loc["cerp-noreg", "tuned"] == '{"embedding.bucket_factor": 4}'


def test_a_sweep_with_failed_runs_exits_nonzero_and_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cerp_core.sweep.backends

    def fails_for_qr(config: ExperimentConfig, checkpoint_dir: Path | None = None, **_: Any):
        if config.method == "qr":
            raise RuntimeError("qr is broken today")
        return types.SimpleNamespace(records=stub_runner(config, checkpoint_dir))

    monkeypatch.setattr(cerp_core.sweep.backends, "run_experiment", fails_for_qr)
    path = tmp_path / "sweep.yaml"
    path.write_text("methods: [full, qr]\nbudgets: [0.1]\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "1 runs done, 0 skipped (already stored), 1 failed" in captured.out
    assert "synthetic/mf/qr seed 0 budgets 0.1: RuntimeError: qr is broken today" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 runs failed (listed above; details in ")
    monkeypatch.undo()
    monkeypatch.setattr(
        cerp_core.sweep.backends,
        "run_experiment",
        lambda c, checkpoint_dir=None, **_: types.SimpleNamespace(
            records=stub_runner(c, checkpoint_dir)
        ),
    )
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0  # retried, stored


@pytest.mark.slow
def test_budgets_a_method_cannot_meet_are_rows_that_say_why(tmp_path: Path) -> None:
    """lowdim at d = 16 needs a budget of at least 1/16; CERP with b = 1000 tables (32,000
    parameters, 0.4 of the 5,000 x 16 table) cannot be pruned to 0.5. Both are kept as rows
    with the reason, the other budgets run, and the table prints "infeasible"."""
    from cerp_core import report

    path = tmp_path / "sweep.yaml"
    path.write_text(
        "methods: [lowdim, cerp-b1000]\nbudgets: [0.5, 0.1, 0.02]\ndim: 16\n"
        "train: {epochs: 2, batch_size: 1024, lr: 0.05}\n"
    )
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    reasons = results.set_index(["method", "budget"])["infeasible"]
    assert reasons[("lowdim", 0.02)].startswith("lowdim cannot fit N=5000 ids x d=16 into budget")
    assert "smallest feasible budget is 0.0625" in reasons[("lowdim", 0.02)]
    assert "largest budget it can prune to is 0.3999" in reasons[("cerp-b1000", 0.5)]
    assert reasons.drop([("lowdim", 0.02), ("cerp-b1000", 0.5)]).isna().all()
    assert results["recall@20"].isna().sum() == 2 and len(results) == 6
    table = report.paper_table(results, metrics=["recall@20"])
    assert table.loc[("synthetic", "mf", "lowdim"), (0.02, "recall@20")] == "infeasible"
    assert table.loc[("synthetic", "mf", "cerp-b1000"), (0.5, "recall@20")] == "infeasible"
    assert table.loc[("synthetic", "mf", "cerp-b1000"), (0.1, "recall@20")][0] == "0"
