"""Faults played end to end on the synthetic set: truncated checkpoints, bad YAML, bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cerp_core.cli import main

TINY = ["--dim", "8", "--epochs", "2", "--lr", "0.05", "--no-progress"]  # stage 1 learns


def metrics(out: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if "@" in k}
        for r in json.loads((out / "metrics.json").read_text())
    ]


@pytest.mark.parametrize("damage", [b"", b"\x00garbage", None])
@pytest.mark.slow
def test_an_unreadable_checkpoint_is_set_aside_and_the_stage_reruns(
    tmp_path: Path, damage: bytes | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Truncated, zeroed or random checkpoints never block a run: the rerun warns, names the
    file, sets it aside and reproduces the uninterrupted result."""
    command = ["train", "--method", "cerp", "--budget", "0.1", "--out", str(tmp_path), *TINY]
    assert main(command) == 0
    first = metrics(tmp_path)
    checkpoint = tmp_path / "checkpoints" / "prune.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage is None else damage)
    capsys.readouterr()
    assert main(command) == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warning.startswith("warning: checkpoint ") and "prune.pt is unreadable" in warning
    assert metrics(tmp_path) == first
    assert list((tmp_path / "checkpoints").glob("prune.pt.corrupt*"))


def test_a_duplicated_yaml_key_and_a_directory_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("methods: [full]\nseeds: [0]\nseeds: [1]\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "key 'seeds' given twice" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "is a directory, not a YAML file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--seed", "-1"], "error: seed must be in [0, 2**63), got -1"),
        (["--seed", "1e23"], "argument --seed: invalid int value: '1e23'"),
        (["--seed", str(2**63)], "error: seed must be in [0, 2**63)"),
        (["--method", "cerp-noreg", "--budget", "0.00001"], "error: cerp-noreg cannot fit"),
        (["--lr", "1e30", "--method", "full", "--budget", "1.0"], "error: loss became non-finite"),
        (
            ["--method", "pep", "--budget", "0.5", "--threshold-lr", "200"],
            "error: stage 1 has learnt nothing by step",
        ),
        # option values are checked by type and range before anything is built (issue cases)
        (
            ["--method", "cerp", "--embedding-option", "bucket_factor=abc"],
            "error: method 'cerp': option bucket_factor='abc': input should be a valid number "
            "(expected float)",
        ),
        (
            ["--method", "cerp", "--embedding-option", "bucket_factor=-1"],
            "error: bucket_factor must be a number above 1",
        ),
        (
            ["--method", "cerp", "--embedding-option", "regularizer_weight=nan"],
            "option regularizer_weight='nan': input should be a valid number",
        ),
        (
            ["--method", "cerp", "--embedding-option", "regularizer_weight=.nan"],
            "error: regularizer_weight must be a finite number >= 0, got nan",
        ),
        (
            ["--backbone", "lightgcn", "--model-option", "num_layers=abc"],
            "error: backbone 'lightgcn': option num_layers='abc': input should be a valid integer",
        ),
        (
            ["--backbone", "mlp", "--model-option", "hidden=abc"],
            "error: backbone 'mlp': option hidden='abc': input should be a valid",
        ),
        (
            ["--method", "full", "--budget", "1.0", "--dim", "100000000"],
            "error: out of memory: a tensor of 1862.6 GiB was refused; lower --dim",
        ),  # fmt: skip
        (
            ["--method", "full", "--budget", "1.0", "--num-negatives", "100000"],
            "error: out of memory: Unable to allocate",
        ),  # fmt: skip
    ],
)
def test_bad_values_name_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    try:
        code = main(["train", "--out", str(tmp_path / "x"), *TINY, *arguments])
    except SystemExit as error:  # argparse refuses the value itself
        code = error.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_report_on_a_folder_whose_runs_all_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pd.DataFrame(columns=["run_key", "row_key", "dataset"]).to_csv(
        tmp_path / "results.csv", index=False
    )
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no finished run" in capsys.readouterr().err


@pytest.mark.slow
def test_report_rebuilds_its_table_from_the_runs_and_names_damaged_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a results.csv value cut mid-number gave wrong means with exit 0, a truncated
    file a KeyError traceback, a damaged runs/<key>.json "Expecting value: line 6"."""
    path = tmp_path / "sweep.yaml"
    path.write_text("methods: [popularity, full]\nbudgets: [0.1]\ndim: 8\ntrain: {epochs: 1}\n")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    table = out / "results.csv"
    good = table.read_text()
    table.write_text(good.replace("0.", "0.x", 1))  # a damaged cell
    assert main(["report", str(out)]) == 0  # rebuilt from runs/*.json, the truth
    assert table.read_text() == good
    run = sorted((out / "runs").glob("*.json"))[0]
    run.write_text(run.read_text()[:200])
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    assert f"error: {run} is not a readable stored run (JSONDecodeError" in capsys.readouterr().err
    assert main(["sweep", str(path), "--out", str(out)]) == 2  # the sweep names it too
    assert f"error: {run} is not a readable stored run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a readable results table: No columns to parse"),
        ("method,budget,recall@20\nfull,1.0,0.1x\n", "results.csv, line 2: recall@20 is '0.1x'"),
    ],
)
def test_report_on_a_bare_damaged_table_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (tmp_path / "results.csv").write_text(text)
    assert main(["report", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_refused_run_leaves_its_folder_to_the_corrected_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the refused run's run.json blocked the corrected command ("holds the results of
    another configuration")."""
    out = ["--out", str(tmp_path / "x"), *TINY, "--method", "cerp", "--budget", "0.1"]
    assert main(["train", *out, "--embedding-option", "bucket_factor=-1"]) == 2
    assert not (tmp_path / "x" / "run.json").exists()
    assert main(["train", *out, "--embedding-option", "bucket_factor=3"]) == 0


def test_sweep_out_and_notebook_names_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text("methods: [popularity]\nbudgets: [0.1]\n")
    (tmp_path / "file").write_text("")
    assert main(["sweep", str(config), "--out", str(tmp_path / "file")]) == 2
    assert f"error: --out {tmp_path / 'file'} is a file, not a folder" in capsys.readouterr().err
    assert main(["notebooks", "--only", "99"]) == 2  # before: ran nothing, exit 0
    assert "error: --only 99: no notebook's name starts so; ['01_data_preparation'" in (
        capsys.readouterr().err
    )


def test_no_validation_split_under_the_validation_protocol_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "test holds no interactions: no user to evaluate"."""
    command = ["train", "--out", str(tmp_path / "x"), *TINY, "--method", "full", "--budget", "1.0"]
    assert main([*command, "--valid-fraction", "0"]) == 2
    assert "error: the validation protocol selects epochs on the validation split, which is " \
           "empty (valid_fraction 0.0)" in capsys.readouterr().err  # fmt: skip


def test_the_paper_protocol_says_which_given_flags_it_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: --protocol paper overrode --valid-fraction, --lr and --batch-size silently."""
    from cerp_core.cli import build_parser, experiment_config

    args = build_parser().parse_args(
        [
            "train",
            "--out",
            str(tmp_path),
            "--protocol",
            "paper",
            "--lr",
            "0.05",
            "--batch-size",
            "512",
        ]  # fmt: skip
    )
    config = experiment_config(args)
    assert (config.train.lr, config.train.batch_size, config.valid_fraction) == (1e-3, 10, 0.0)
    notes = capsys.readouterr().err.splitlines()
    assert notes == [
        "note: --protocol paper sets batch_size to 10, not the 512 given",
        "note: --protocol paper sets lr to 0.001, not the 0.05 given",
    ]


def test_a_paper_protocol_sweep_says_which_given_settings_it_replaces() -> None:
    """Before: a sweep under ``protocol: paper`` replaced ``train.batch_size`` silently."""
    from cerp_core.config import ProtocolWarning
    from cerp_core.sweep import SweepConfig

    values = {"protocol": "paper", "methods": ["full"], "train": {"batch_size": 8192, "lr": 1e-3}}
    with pytest.warns(ProtocolWarning) as caught:
        config = SweepConfig.from_dict(values)
    assert [str(w.message) for w in caught] == [
        "protocol: paper sets train.batch_size to 10, not the 8192 given"
    ]  # lr 1e-3 is what the protocol sets: nothing replaced, nothing said
    assert config.base.train.batch_size == 10


def test_a_failure_of_the_suite_is_one_line_and_a_traceback_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here a KeyError inside a command) is not bad input: exit 1, one line naming
    the file that holds the whole traceback."""
    from cerp_core import cli

    def broken(args: object) -> None:
        raise KeyError("recall@20")

    monkeypatch.setitem(cli.COMMANDS, "report", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    assert main(["report", str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    (saved,) = tmp_path.glob("cerp_core-*-traceback.txt")
    assert line == (
        f"internal error: KeyError: 'recall@20' (the traceback is in {saved}; please report it)"
    )
    assert "in broken" in saved.read_text() and saved.read_text().endswith(
        "KeyError: 'recall@20'\n"
    )


def test_warnings_print_as_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from cerp_core import cli

    def warns(args: object) -> None:
        warnings.warn("3 test-only users", UserWarning, stacklevel=2)

    monkeypatch.setitem(cli.COMMANDS, "report", warns)
    assert main(["report", "anything"]) == 0
    assert capsys.readouterr().err == "warning: 3 test-only users\n"
