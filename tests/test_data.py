"""Data layer: LightGCN parsing and its errors, splits, synthetic data, real data sets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import pytest

from cerp_core.data import (
    DataFormatError,
    DatasetNotFoundError,
    DataWarning,
    from_dataframe,
    load_dataset,
    make_synthetic,
    read_lightgcn_dir,
    split_per_user,
)


def write_dataset(folder: Path, train: str, test: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    return folder


def test_reads_lightgcn_folder_with_test_only_items_and_missing_users(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "toy", "0 1 2\n1 0\n3 2 4\n", "0 5\n1 1\n")
    with pytest.warns(DataWarning, match="1 of 4 user ids .* 1 of 6 item ids .* 1 test-only"):
        data = read_lightgcn_dir(folder)
    assert (data.num_users, data.num_items) == (4, 6)  # user 2 has no line; item 5 only in test
    assert data.train.nnz == 5 and data.test.nnz == 2
    assert data.train[3].indices.tolist() == [2, 4]
    assert data.test[0].indices.tolist() == [5]
    assert data.num_entities == 10
    assert data.item_entity_ids(np.array([0, 5])).tolist() == [4, 9]
    assert data.item_popularity().tolist() == [1, 1, 2, 0, 1, 0]
    assert data.user_activity().tolist() == [2, 1, 0, 2]


@pytest.mark.filterwarnings("ignore::cerp_core.data.DataWarning")  # test-only items
def test_a_user_line_without_items_is_allowed(tmp_path: Path) -> None:
    data = read_lightgcn_dir(write_dataset(tmp_path / "toy", "0 1\n1\n", "1 0\n"))
    assert data.train[1].nnz == 0 and data.test[1].indices.tolist() == [0]
    last = read_lightgcn_dir(write_dataset(tmp_path / "last", "0 1\n1 2\n2\n", "0 0\n"))
    assert last.num_users == 3 and last.train[2].nnz == 0  # max uid + 1 counts item-less lines


@pytest.mark.parametrize(
    ("train", "test", "bad_file", "line", "fragment"),
    [
        ("0 1 2\n1 x 3\n", "0 4\n", "train.txt", 2, "'x' is not a non-negative integer"),
        ("0 1 2\n1 2 3\n", "0 4\n1 -3\n", "test.txt", 2, "'-3' is negative id"),
        ("0 1 2\n1 2 2.5\n", "0 4\n", "train.txt", 2, "'2.5' is not a non-negative integer"),
        ("0 1 2\n1 2 3 2\n", "0 4\n", "train.txt", 2, "user 1 lists item 2 twice"),
        ("0 1 2\n1 2 3\n", "0 4\n1 3\n", "test.txt", 2, "user 1 item 3 is also in"),
        ("0 1\n1 2\n0 3\n", "0 4\n", "train.txt", 3, "user 0 has a second line"),
        ("0 1\n\n1 2\n", "0 4\n", "train.txt", 2, "blank line"),
        ("0 0\n1 0 2 1\n", "0 2\n", "train.txt", 2, "user 1 has interacted with every one of"),
        ("0 1\n1 99999999999999999999\n", "0 4\n", "train.txt", 2, "more than 18 digits"),
    ],
)
def test_bad_input_names_file_and_line(
    tmp_path: Path, train: str, test: str, bad_file: str, line: int, fragment: str
) -> None:
    folder = write_dataset(tmp_path / "bad", train, test)
    with pytest.raises(DataFormatError) as caught:
        read_lightgcn_dir(folder)
    assert caught.value.path == folder / bad_file
    assert caught.value.line == line
    assert f"{bad_file}, line {line}: " in str(caught.value)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_empty_and_missing_files_are_errors(tmp_path: Path) -> None:
    empty = write_dataset(tmp_path / "empty", "", "0 1\n")
    with pytest.raises(DataFormatError, match="train.txt: file is empty"):
        read_lightgcn_dir(empty)
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "train.txt").write_text("0 1\n")
    with pytest.raises(DatasetNotFoundError, match="test.txt not found"):
        load_dataset(missing)


def test_options_a_real_data_set_does_not_take_fail_before_any_download(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"unexpected options for 'gowalla': \['num_users'\]"):
        load_dataset("gowalla", root=tmp_path, num_users=10)  # nothing there: no download tried
    assert not list(tmp_path.iterdir())


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(DatasetNotFoundError, match="neither a known data set"):
        load_dataset("no-such-data")


def test_offline_download_failure_says_where_to_put_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("yelp2018", root=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "yelp2018") in message and "CERP_DATA_DIR" in message


@pytest.mark.filterwarnings("ignore::cerp_core.data.DataWarning")  # test-only items
def test_processed_cache_is_keyed_by_content(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "toy", "0 1 2\n1 0\n", "0 3\n")
    first = read_lightgcn_dir(folder)
    again = read_lightgcn_dir(folder)
    assert (again.train != first.train).nnz == 0
    (folder / "test.txt").write_text("0 4\n")  # new content: new key, re-parsed
    assert read_lightgcn_dir(folder).num_items == 5


def test_split_per_user_is_seeded_and_keeps_every_user() -> None:
    users = np.repeat(np.arange(5), [1, 2, 10, 20, 3])
    held = split_per_user(users, 0.2, seed=3)
    assert np.array_equal(held, split_per_user(users, 0.2, seed=3))
    assert not np.array_equal(held, split_per_user(users, 0.2, seed=4))
    per_user = np.bincount(users[held], minlength=5).tolist()
    assert per_user == [0, 1, 2, 4, 1]  # round(0.2 n), at least 1 when n >= 2, never all
    assert not split_per_user(users, 0.0, seed=0).any()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_per_user(users, 1.0, seed=0)


def test_validation_is_carved_from_train_only() -> None:
    plain = load_dataset("synthetic", valid_fraction=0.0, num_users=300, num_items=400)
    data = load_dataset("synthetic", valid_fraction=0.1, num_users=300, num_items=400)
    assert plain.valid.nnz == 0
    assert data.train.nnz + data.valid.nnz == plain.train.nnz
    assert (data.test != plain.test).nnz == 0
    assert data.train.multiply(data.valid).nnz == 0
    assert (data.train + data.valid != plain.train).nnz == 0


def test_synthetic_is_deterministic_long_tailed_and_heterogeneous() -> None:
    a = make_synthetic(num_users=500, num_items=800, seed=1)
    b = make_synthetic(num_users=500, num_items=800, seed=1)
    c = make_synthetic(num_users=500, num_items=800, seed=2)
    assert (a.train != b.train).nnz == 0 and (a.test != b.test).nnz == 0
    assert (a.train != c.train).nnz > 0
    popularity = np.sort(np.asarray((a.train + a.test).sum(axis=0)).ravel())[::-1]
    top_decile_share = popularity[: len(popularity) // 10].sum() / popularity.sum()
    assert top_decile_share > 0.25  # a uniform popularity would give 0.1
    activity = np.diff((a.train + a.test).indptr)
    assert activity.min() >= 5 and activity.max() > 4 * np.median(activity)


def test_from_dataframe_filters_remaps_and_splits() -> None:
    frame = pd.DataFrame(
        {
            "user": ["u1"] * 4 + ["u2"] * 4 + ["u3"],
            "item": [10, 20, 30, 30, 10, 20, 30, 40, 10],
        }
    )
    data = from_dataframe(frame, min_interactions=2, test_fraction=0.25, seed=0)
    assert (data.num_users, data.num_items) == (2, 3)  # u3 and item 40 fall out of the 2-core
    assert data.train.nnz + data.test.nnz == 6  # the repeated (u1, 30) counts once
    assert np.diff(data.test.indptr).tolist() == [1, 1]
    with pytest.raises(ValueError, match="no column"):
        from_dataframe(frame.rename(columns={"item": "movie"}))


@pytest.mark.parametrize(
    ("name", "users", "items", "train", "test"),
    [
        ("gowalla", 29_858, 40_981, 810_128, 217_242),
        ("yelp2018", 31_668, 38_048, 1_237_259, 324_147),
    ],
)
def test_real_data_sets_match_their_readme(
    real_data_root: Path, name: str, users: int, items: int, train: int, test: int
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # no unused ids, no test-only items
        data = load_dataset(name, root=real_data_root, valid_fraction=0.0)
    assert (data.num_users, data.num_items) == (users, items)
    gaps = data.statistics().iloc[0][["unused_user_ids", "unused_item_ids", "test_only_items"]]
    assert gaps.tolist() == [0, 0, 0]
    assert (data.train.nnz, data.test.nnz) == (train, test)
    assert data.train.multiply(data.test).nnz == 0


def test_real_data_root_from_environment(
    real_data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERP_DATA_DIR", str(real_data_root))
    assert load_dataset("gowalla").num_users == 29_858
