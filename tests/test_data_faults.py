"""Faults of the data layer: nothing silently wrong (id spaces, empty splits), nothing lost
(a corrupted cache is rebuilt), and messages that say what is wrong."""

from __future__ import annotations

import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cerp_core.data import (
    DataError,
    DataFormatError,
    DatasetNotFoundError,
    DataWarning,
    Interactions,
    from_dataframe,
    load_dataset,
    read_lightgcn_dir,
)

REMAP_HINT = "load_dataset(frame)"


def folder_with(folder: Path, train: str | bytes, test: str | bytes) -> Path:
    """A LightGCN folder; ``bytes`` are written as they are (no newline translation)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("train.txt", train), ("test.txt", test)):
        data = content.encode() if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def toy_lines(num_users: int = 30, num_items: int = 40) -> tuple[str, str]:
    """Train and test text in which every user and item id has a training interaction."""
    train = "".join(f"{user} {user} {user + num_items - num_users}\n" for user in range(num_users))
    return train, "0 5\n1 7\n"


def no_data_warnings(call: Callable[[], Interactions]) -> Interactions:
    """Run ``call`` and fail on any :class:`DataWarning`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        return call()


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test alone, so its one entry can be found and damaged."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CERP_CACHE_DIR", str(cache))
    return cache


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _pickled_object(path: Path) -> None:
    np.savez(path, train_users=np.array([{"a": 1}], dtype=object))


def _missing_key(path: Path) -> None:
    with np.load(path) as arrays:
        kept = {name: arrays[name] for name in arrays.files if name != "test_items"}
    np.savez(path, **kept)


def _wrong_shape(path: Path) -> None:
    with np.load(path) as arrays:
        changed = {name: arrays[name] for name in arrays.files}
    changed["train_items"] = changed["train_items"][:-1]
    np.savez(path, **changed)


def _npy_not_npz(path: Path) -> None:
    with path.open("wb") as handle:
        np.save(handle, np.arange(3))


@pytest.mark.parametrize(
    "damage",
    [
        _truncate,
        _zero_bytes,
        _random_bytes,
        _pickled_object,
        _missing_key,
        _wrong_shape,
        _npy_not_npz,
    ],
)
def test_unreadable_cache_entry_is_reported_once_and_rebuilt(
    tmp_path: Path, own_cache: Path, damage: Callable[[Path], None]
) -> None:
    folder = folder_with(tmp_path / "toy", *toy_lines())
    expected = no_data_warnings(lambda: read_lightgcn_dir(folder))
    (entry,) = (own_cache / "processed").glob("*.npz")
    damage(entry)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = read_lightgcn_dir(folder)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and str(entry) in messages[0], messages
    assert (rebuilt.num_users, rebuilt.num_items) == (expected.num_users, expected.num_items)
    assert (rebuilt.train != expected.train).nnz == 0 and (rebuilt.test != expected.test).nnz == 0
    assert [p.name for p in (own_cache / "processed").iterdir()] == [entry.name]
    no_data_warnings(lambda: read_lightgcn_dir(folder))  # the rebuilt entry reads cleanly


@pytest.mark.parametrize(
    ("train_extra", "test_extra", "bad_file", "line", "fragment"),
    [
        ("30 5000000\n", "", "train.txt", 31, "item id 5000000"),  # one stray item id
        ("", "5000000 3\n", "test.txt", 3, "user id 5000000"),  # one stray user line
        ("", "1999999999 3\n", "test.txt", 3, "user id 1999999999"),  # would need ~16 GB
        ("30 3000000000\n", "", "train.txt", 31, "too large"),  # beyond int32 indices
    ],
)
def test_a_mostly_unused_or_huge_id_space_is_refused_before_allocating(
    tmp_path: Path, train_extra: str, test_extra: str, bad_file: str, line: int, fragment: str
) -> None:
    train, test = toy_lines()
    folder = folder_with(tmp_path / "sparse", train + train_extra, test + test_extra)
    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError) as caught:
            load_dataset(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.path == folder / bad_file and caught.value.line == line
    message = str(caught.value)
    assert fragment in message and REMAP_HINT in message and "from_dataframe" in message
    assert peak < 20e6


def test_small_gaps_and_test_only_items_are_counted_and_warned_once(tmp_path: Path) -> None:
    # user 2 has no line, item 3 no interaction, item 5 occurs only in test
    folder = folder_with(tmp_path / "toy", "0 1 2\n1 0\n3 2 4\n", "0 5\n1 1\n")
    with pytest.warns(DataWarning) as caught:
        data = load_dataset(folder, valid_fraction=0.0)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(folder / "train.txt") in message and str(folder / "test.txt") in message
    stats = data.statistics().iloc[0]
    assert (stats["unused_user_ids"], stats["unused_item_ids"], stats["test_only_items"]) == (
        1,
        1,
        1,
    )
    assert {"users", "items", "entities", "train", "valid", "test", "density"} <= set(stats.index)


def test_users_seen_only_in_test_are_counted_and_warned_about(tmp_path: Path) -> None:
    """Before: items seen only in test were counted and warned about, users were not."""
    folder = folder_with(tmp_path / "toy", "0 1 2\n1 0\n3 2 4\n", "0 5\n1 1\n4 3\n")
    with pytest.warns(DataWarning, match=r"1 test-only users \(no training interaction; scored "
                                         r"with embeddings never fitted to them\); 2 test-only "
                                         r"items"):  # fmt: skip
        data = load_dataset(folder, valid_fraction=0.0)
    stats = data.statistics().iloc[0]
    assert (stats["unused_user_ids"], stats["test_only_users"], stats["test_only_items"]) == (
        1,
        1,
        2,
    )


def test_dense_data_has_no_gaps_and_no_warning(tmp_path: Path) -> None:
    data = no_data_warnings(lambda: load_dataset(folder_with(tmp_path / "toy", *toy_lines())))
    stats = data.statistics().iloc[0]
    assert (stats["unused_user_ids"], stats["unused_item_ids"], stats["test_only_items"]) == (
        0,
        0,
        0,
    )


def test_a_directory_named_train_txt_is_not_reported_missing(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    (folder / "train.txt").mkdir(parents=True)
    (folder / "test.txt").write_text("0 1\n")
    with pytest.raises(DataError, match="train.txt.*is a directory, not a file") as caught:
        load_dataset(folder)
    assert "not found" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_name_is_refused(name: str) -> None:
    with pytest.raises(DatasetNotFoundError, match="empty"):
        load_dataset(name)


def test_a_binary_file_is_reported_by_line_and_offset_without_raw_bytes(tmp_path: Path) -> None:
    noise = bytes(range(256)) * 64
    folder = folder_with(tmp_path / "bin", "0 1\n1 0\n", b"0 1\n\x89PNG\r\n\x1a\n\x00" + noise)
    with pytest.raises(DataFormatError) as caught:
        read_lightgcn_dir(folder)
    message = str(caught.value)
    assert caught.value.path == folder / "test.txt" and caught.value.line == 2
    assert "byte offset 4" in message and "not text" in message
    assert len(message) < 400 and message.isascii() and message.isprintable()


def test_a_long_bad_token_is_shown_short(tmp_path: Path) -> None:
    folder = folder_with(tmp_path / "long", "0 1\n1 " + "x" * 5000 + "\n", "0 0\n")
    with pytest.raises(DataFormatError, match="is not a non-negative integer") as caught:
        read_lightgcn_dir(folder)
    assert len(str(caught.value)) < 300


def test_tabs_runs_of_blanks_and_crlf_separate_ids(tmp_path: Path) -> None:
    plain = no_data_warnings(
        lambda: read_lightgcn_dir(folder_with(tmp_path / "plain", "0 1 2\n1 0 2\n", "0 0\n1 1\n"))
    )
    mixed = folder_with(tmp_path / "mixed", b"0\t1  2\r\n1 \t 0\t\t2 \n", b"0\t0\n1 1")
    data = read_lightgcn_dir(mixed)
    assert (data.train != plain.train).nnz == 0 and (data.test != plain.test).nnz == 0
    bare_cr = folder_with(tmp_path / "cr", b"0 1 2\r1 0 2\n", b"0 3\n")
    with pytest.raises(DataFormatError, match="byte offset 5"):
        read_lightgcn_dir(bare_cr)  # a lone CR would merge two lines: refused, not guessed


def test_empty_validation_split_and_empty_test_file_have_distinct_messages(
    tmp_path: Path,
) -> None:
    one_each = folder_with(tmp_path / "one", "0 0\n1 1\n2 2\n", "0 1\n1 2\n2 0\n")
    with pytest.raises(DataError, match="validation split would be empty") as empty_valid:
        load_dataset(one_each, valid_fraction=0.1)
    assert load_dataset(one_each, valid_fraction=0.0).valid.nnz == 0  # no split asked: fine

    empty_test = folder_with(tmp_path / "empty", "0 0 1\n1 1 2\n", "")
    with pytest.raises(DataFormatError) as empty_file:
        load_dataset(empty_test)
    assert empty_file.value.path == empty_test / "test.txt"
    assert "file is empty" in str(empty_file.value)

    uids_only = folder_with(tmp_path / "uids", "0 0 1\n1 1 2\n", "0\n1\n")
    with pytest.raises(DataFormatError, match="no interactions") as no_pairs:
        load_dataset(uids_only)
    assert no_pairs.value.path == uids_only / "test.txt"
    for file_error in (empty_file.value, no_pairs.value):
        assert "validation" not in str(file_error).split(": ", 1)[1]  # after the path
    assert "test.txt" not in str(empty_valid.value) and "train" in str(empty_valid.value)


def test_a_test_split_that_would_be_empty_is_refused() -> None:
    frame = pd.DataFrame({"user": [0, 1, 2], "item": [0, 1, 2]})
    with pytest.raises(DataError, match="test split would be empty"):
        from_dataframe(frame)


@pytest.mark.parametrize("value", [pd.Series([1, 2]), np.array([[0, 1]]), 3, None])
def test_load_dataset_names_what_it_takes(value: object) -> None:
    with pytest.raises(DataError, match=r"load_dataset takes a data set name, a folder path or a "
                                        r"DataFrame of \(user, item\) rows, got "):  # fmt: skip
        load_dataset(value)  # type: ignore[arg-type]


def test_a_dataframe_mixing_id_types_is_refused() -> None:
    """Before: one string id among integers made a user of its own, silently."""
    frame = pd.DataFrame({"user": [0, 1, 2, "a"] * 20, "item": list(range(80))})
    with pytest.raises(DataError, match=r"column 'user' mixes int, str ids \(row 3: 'a'\)"):
        load_dataset(frame)
