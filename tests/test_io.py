"""Atomic writers leave the old file or the new one; damaged checkpoints are set aside."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import cerp_core.io
from cerp_core.io import (
    CorruptCheckpointWarning,
    load_checkpoint,
    save_npz_atomic,
    save_torch_atomic,
    write_text_atomic,
)
from cerp_core.train import Snapshot


def _state() -> dict[str, Any]:
    """A checkpoint like the trainer's: tensors, a dataclass, plain rows."""
    masks = {"P": torch.tensor([[True, False], [False, True]])}
    return {
        "model": {"weight": torch.arange(12.0).view(3, 4)},
        "snapshots": [Snapshot(2, masks, 2, 7, "threshold")],
        "rows": [{"epoch": 1, "bpr_loss": 0.5}],
        "epoch": 0,
    }


def _checkpoint_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "reference.pt"
    torch.save(_state(), path)
    data = path.read_bytes()
    path.unlink()
    return data


def test_a_good_checkpoint_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "train.pt"
    save_torch_atomic(path, _state())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_checkpoint(path)
    assert loaded is not None
    assert torch.equal(loaded["model"]["weight"], _state()["model"]["weight"])
    (snapshot,) = loaded["snapshots"]
    assert (snapshot.target, snapshot.step, snapshot.source) == (2, 7, "threshold")
    assert torch.equal(snapshot.masks["P"], _state()["snapshots"][0].masks["P"])
    assert loaded["rows"] == _state()["rows"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.pt"]


def test_no_checkpoint_is_none_without_a_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(None) is None
        assert load_checkpoint(tmp_path / "missing.pt") is None
        assert load_checkpoint(tmp_path) is None  # a folder is no checkpoint file


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "zero-bytes": lambda data: b"",
    "truncated-to-10-bytes": lambda data: data[:10],
    "truncated-to-half": lambda data: data[: len(data) // 2],
    "truncated-by-1-byte": lambda data: data[:-1],  # torch raises OSError (EINVAL) here
    "random-bytes": lambda data: np.random.default_rng(0).bytes(len(data)),
    "random-bytes-after-zip-magic": lambda data: b"PK\x03\x04" + bytes(range(256)) * 4,
    "text": lambda data: b"epoch,loss\n1,0.5\n",
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_an_unreadable_checkpoint_is_set_aside_with_a_warning(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "prune.pt"
    content = damage(_checkpoint_bytes(tmp_path))
    path.write_bytes(content)
    with pytest.warns(CorruptCheckpointWarning) as record:
        assert load_checkpoint(path) is None
    assert len(record) == 1
    message = str(record[0].message)
    assert str(path) in message and "unreadable" in message and "prune.pt.corrupt" in message
    assert not path.exists()
    assert (tmp_path / "prune.pt.corrupt").read_bytes() == content  # kept for inspection


def test_a_checkpoint_that_is_not_a_dict_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "train.pt"
    torch.save([1, 2, 3], path)
    with pytest.warns(CorruptCheckpointWarning, match="it holds a list, not a dict"):
        assert load_checkpoint(path) is None
    assert (tmp_path / "train.pt.corrupt").is_file()


def test_set_aside_files_are_numbered_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "train.pt"
    for number, suffix in enumerate(["corrupt", "corrupt-1", "corrupt-2"]):
        path.write_bytes(bytes([number]))
        with pytest.warns(CorruptCheckpointWarning, match=f"train.pt.{suffix}"):
            assert load_checkpoint(path) is None
        assert (tmp_path / f"train.pt.{suffix}").read_bytes() == bytes([number])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "train.pt.corrupt",
        "train.pt.corrupt-1",
        "train.pt.corrupt-2",
    ]


def test_a_resumed_stage_restarts_after_a_damaged_checkpoint(tmp_path: Path) -> None:
    """Set aside, the path is free: the next save and load work as on a first run."""
    path = tmp_path / "train.pt"
    path.write_bytes(b"")
    with pytest.warns(CorruptCheckpointWarning):
        assert load_checkpoint(path) is None
    save_torch_atomic(path, _state())
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded["epoch"] == 0


# ----------------------------------------------------------------------------- writers


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


WRITERS: dict[str, tuple[Callable[[Path, Any], None], Any, Any, Callable[[Path], Any]]] = {
    "text": (write_text_atomic, "old\n", "néw, ünïcode\n", lambda p: p.read_text("utf-8")),
    "npz": (
        save_npz_atomic,
        {"a": np.arange(3)},
        {"a": np.arange(5), "n": np.array(7)},
        _read_npz,
    ),
    "torch": (
        save_torch_atomic,
        {"epoch": 1},
        {"epoch": 2, "w": torch.ones(3)},
        lambda p: torch.load(p, weights_only=False),
    ),
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (np.ndarray, torch.Tensor)):
        return bool((np.asarray(a) == np.asarray(b)).all()) and a.shape == b.shape
    return a == b


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
def test_atomic_writers_write_and_leave_no_temporary_file(tmp_path: Path, writer: tuple) -> None:
    write, old, new, read = writer
    path = tmp_path / "new" / "folder" / "file.out"  # no .npz added, folders created
    write(path, old)
    write(path, new)
    assert _same(read(path), new)
    assert [p.name for p in path.parent.iterdir()] == ["file.out"]


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
def test_a_failed_rename_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: tuple
) -> None:
    write, old, new, read = writer
    path = tmp_path / "file.out"
    write(path, old)
    before = path.read_bytes()

    def replace(src: Any, dst: Any) -> None:
        assert Path(src).is_file()  # the new content was complete, only the rename fails
        raise OSError("disk pulled out")

    monkeypatch.setattr(cerp_core.io.os, "replace", replace)
    with pytest.raises(OSError, match="disk pulled out"):
        write(path, new)
    monkeypatch.undo()
    assert path.read_bytes() == before and _same(read(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["file.out"]


def test_a_failure_while_writing_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "train.pt"
    save_torch_atomic(path, {"epoch": 1})
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_torch_atomic(path, {"epoch": 2, "callback": lambda: None})  # cannot be pickled
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["train.pt"]


def test_temporary_files_are_per_process_and_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        seen.append(Path(src))
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cerp_core.io.os, "replace", replace)
        write_text_atomic(tmp_path / "table.csv", "a,b\n")
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(f".table.csv.{os.getpid()}.")
