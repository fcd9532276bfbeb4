"""Results are tied to the data they were computed on: changed files never return a stale
result, and a named data set's files must be the published ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cerp_core.cli import main
from cerp_core.data import DataIntegrityError, load_dataset, source_fingerprint

TINY = ["--dim", "8", "--epochs", "2", "--lr", "0.05", "--no-progress"]


def toy_folder(folder: Path, num_users: int = 40, num_items: int = 60) -> Path:
    """A LightGCN folder in which every user has four training items and one test item."""
    folder.mkdir(parents=True, exist_ok=True)
    train = "".join(
        f"{u} {' '.join(str((u * 7 + j) % num_items) for j in range(4))}\n"
        for u in range(num_users)
    )
    test = "".join(f"{u} {(u * 7 + 5) % num_items}\n" for u in range(num_users))
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    return folder


@pytest.mark.parametrize("change", ["edit", "add_user"])
def test_train_on_changed_data_is_refused_instead_of_answered_from_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    """Before: editing train.txt and rerunning returned the old checkpoint's metrics (exit 0);
    adding a user ended in a ``size mismatch`` traceback."""
    data = toy_folder(tmp_path / "data")
    out = tmp_path / "out"
    command = ["train", "--dataset", str(data), "--method", "full", "--budget", "1.0",
               "--out", str(out), *TINY]  # fmt: skip
    assert main(command) == 0
    before = source_fingerprint(data)
    stored = json.loads((out / "metrics.json").read_text())
    assert [record["data_fingerprint"] for record in stored] == [before]
    lines = (data / "train.txt").read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] if change == "edit" else lines[0]
    lines += [] if change == "edit" else ["40 1 2 3"]
    (data / "train.txt").write_text("\n".join(lines) + "\n")
    assert source_fingerprint(data) != before
    capsys.readouterr()
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {out / 'checkpoints'} holds checkpoints of this "
                            "configuration written for other data")  # fmt: skip
    assert before in error and "Traceback" not in error
    shutil.rmtree(out / "checkpoints")  # what the message says to do
    assert main(command) == 0


def test_a_sweep_refuses_stored_runs_of_other_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "0 runs done, 1 skipped (already stored)" and the stale result kept."""
    data = toy_folder(tmp_path / "data")
    path = tmp_path / "sweep.yaml"
    path.write_text(
        f"datasets: [{data}]\nmethods: [popularity]\nbudgets: [0.1]\ntrain: {{epochs: 1}}\n"
    )
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    (data / "test.txt").write_text((data / "test.txt").read_text().replace("0 5\n", "0 6\n"))
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"{out / 'runs'}/" in error and "holds the result of" in error
    assert f"on other data ({source_fingerprint(data)}" not in error  # names the stored one
    assert "Restore the data, or write this sweep to another --out" in error


def test_a_cut_named_data_set_is_refused_with_its_file(
    real_data_root: Path, tmp_path: Path
) -> None:
    """Before: a Gowalla train.txt cut at 3 MB trained (exit 0) and was recorded as gowalla,
    13,325 of 29,858 users without training data."""
    copy = tmp_path / "root" / "gowalla"
    copy.mkdir(parents=True)
    for split in ("train", "test"):
        shutil.copy(real_data_root / "gowalla" / f"{split}.txt", copy / f"{split}.txt")
    assert load_dataset("gowalla", root=tmp_path / "root", valid_fraction=0).num_users == 29858
    train = copy / "train.txt"
    train.write_bytes(train.read_bytes()[:3_000_000])
    with pytest.raises(DataIntegrityError, match=rf"{train} is not the published gowalla train "
                                                 r"file \(its hash is [0-9a-f]{16}\.\.\., "
                                                 r"expected 7244696fdeb23911"):  # fmt: skip
        load_dataset("gowalla", root=tmp_path / "root")
