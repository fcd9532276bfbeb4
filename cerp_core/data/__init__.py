"""Data sets in one call: ``load_dataset(name_or_path_or_frame) -> Interactions``."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cerp_core.data.errors import DataError, DataFormatError, DatasetNotFoundError
from cerp_core.data.frame import from_dataframe, k_core, split_train_test
from cerp_core.data.interactions import Interactions, split_per_user, to_csr
from cerp_core.data.lightgcn import check_disjoint, read_user_item_file
from cerp_core.data.sources import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    REAL_DATASETS,
    cache_dir,
    data_root,
    file_sha256,
    locate,
)
from cerp_core.data.synthetic import make_synthetic

__all__ = [
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "DATASET_NAMES",
    "DataError",
    "DataFormatError",
    "DatasetNotFoundError",
    "Interactions",
    "data_root",
    "from_dataframe",
    "k_core",
    "load_dataset",
    "make_synthetic",
    "read_lightgcn_dir",
    "split_per_user",
    "split_train_test",
]

DATASET_NAMES = ("synthetic", *REAL_DATASETS)


def load_dataset(
    name_or_path: str | Path | pd.DataFrame,
    root: str | Path | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    **options: Any,
) -> Interactions:
    """Load a data set by name, folder or DataFrame, with a seeded validation split.

    Args:
        name_or_path: ``"synthetic"`` (generated; ``options`` go to :func:`make_synthetic`),
            ``"gowalla"``, ``"yelp2018"``, ``"yelp2020"`` (read from ``root``, downloaded if
            missing), a folder with LightGCN-format ``train.txt``/``test.txt``, or a DataFrame of
            (user, item) rows (``options`` go to :func:`from_dataframe`).
        root: Folder holding ``<name>/`` for real data sets; default ``$CERP_DATA_DIR``, else
            the project's ``data/`` folder.
        valid_fraction: Share of each user's training interactions held out for validation
            (early stopping and model selection). ``0`` reproduces the paper's protocol.
        seed: Seed of the synthetic generator and of every split.
    """
    takes_options = isinstance(name_or_path, pd.DataFrame) or name_or_path == "synthetic"
    if options and not takes_options:
        raise TypeError(f"unexpected options for {name_or_path!r}: {sorted(options)}")
    if isinstance(name_or_path, pd.DataFrame):
        data = from_dataframe(name_or_path, seed=seed, **options)
    elif name_or_path == "synthetic":
        data = make_synthetic(seed=seed, **options)
    elif name_or_path in REAL_DATASETS:
        paths = locate(str(name_or_path), root)
        data = read_lightgcn_dir(paths["train"].parent, name=str(name_or_path))
    elif Path(name_or_path).is_dir():
        data = read_lightgcn_dir(Path(name_or_path))
    else:
        raise DatasetNotFoundError(
            f"{name_or_path!r} is neither a known data set {list(DATASET_NAMES)} nor a folder "
            "holding train.txt and test.txt"
        )
    return data.with_validation(valid_fraction, seed) if valid_fraction else data


def read_lightgcn_dir(folder: str | Path, name: str | None = None) -> Interactions:
    """Read ``train.txt`` and ``test.txt`` of a folder (validated, cached by content hash)."""
    folder = Path(folder)
    train_path, test_path = folder / "train.txt", folder / "test.txt"
    for path in (train_path, test_path):
        if not path.is_file():
            raise DatasetNotFoundError(f"{path} not found; expected LightGCN train.txt/test.txt")
    key = f"v2-{file_sha256(train_path)[:16]}-{file_sha256(test_path)[:16]}"
    cached = cache_dir() / "processed" / f"{key}.npz"
    if cached.is_file():
        with np.load(cached) as arrays:
            pairs = {name: arrays[name] for name in arrays.files}
    else:
        train, test = read_user_item_file(train_path), read_user_item_file(test_path)
        check_disjoint(train, test)
        pairs = {
            "train_users": train.users,
            "train_items": train.items,
            "test_users": test.users,
            "test_items": test.items,
            # max uid + 1 over every line, also the lines of users without items
            "num_users": np.array(int(max(train.uids.max(), test.uids.max())) + 1),
        }
        _save_atomically(cached, pairs)
    num_users = int(pairs["num_users"])
    num_items = int(max(pairs["train_items"].max(initial=-1), pairs["test_items"].max(initial=-1)))
    num_items += 1
    return Interactions(
        name=name or folder.name,
        num_users=num_users,
        num_items=num_items,
        train=to_csr(pairs["train_users"], pairs["train_items"], num_users, num_items),
        valid=to_csr(pairs["test_users"][:0], pairs["test_items"][:0], num_users, num_items),
        test=to_csr(pairs["test_users"], pairs["test_items"], num_users, num_items),
    )


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` via a temporary file and rename; a cache we cannot write is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **arrays)
        os.replace(tmp.name, path)
    except OSError as error:
        warnings.warn(f"processed-data cache not written ({error})", stacklevel=3)
