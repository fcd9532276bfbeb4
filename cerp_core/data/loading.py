"""Loading a data set by name, folder or frame: read, check, cache and split it."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cerp_core.data.errors import (
    DataError,
    DatasetNotFoundError,
    DataWarning,
)
from cerp_core.data.frame import from_dataframe
from cerp_core.data.interactions import Interactions, to_csr
from cerp_core.data.lightgcn_text import (
    MAX_IDS,
    check_disjoint,
    check_id_space,
    check_negatives_exist,
    read_user_item_file,
    require_file,
)
from cerp_core.data.sources import (
    REAL_DATASETS,
    cache_dir,
    file_sha256,
    locate,
    verify,
)
from cerp_core.data.synthetic import make_synthetic
from cerp_core.io import save_npz_atomic

DATASET_NAMES = ("synthetic", *REAL_DATASETS)
_CACHE_KEYS = ("train_users", "train_items", "test_users", "test_items", "num_users")


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
    if not isinstance(name_or_path, (str, Path, pd.DataFrame)):
        raise DataError(
            f"load_dataset takes a data set name, a folder path or a DataFrame of (user, item) "
            f"rows, got {type(name_or_path).__name__}"
        )
    if isinstance(name_or_path, str) and not name_or_path.strip():
        raise DatasetNotFoundError(
            f"empty data set name; give one of {list(DATASET_NAMES)}, a folder (use '.' for the "
            "working directory) or a DataFrame"
        )
    takes_options = isinstance(name_or_path, pd.DataFrame) or name_or_path == "synthetic"
    if options and not takes_options:
        raise TypeError(f"unexpected options for {name_or_path!r}: {sorted(options)}")
    if isinstance(name_or_path, pd.DataFrame):
        data = from_dataframe(name_or_path, seed=seed, **options)
    elif name_or_path == "synthetic":
        data = make_synthetic(seed=seed, **options)
    elif name_or_path in REAL_DATASETS:
        paths = locate(str(name_or_path), root)
        verify(str(name_or_path), paths)
        data = read_lightgcn_dir(paths["train"].parent, name=str(name_or_path))
    elif Path(name_or_path).is_dir():
        data = read_lightgcn_dir(Path(name_or_path))
    else:
        raise DatasetNotFoundError(
            f"{name_or_path!r} is neither a known data set {list(DATASET_NAMES)} nor a folder "
            "holding train.txt and test.txt"
        )
    return data.with_validation(valid_fraction, seed) if valid_fraction else data


def source_fingerprint(name_or_path: str | Path, root: str | Path | None = None) -> str | None:
    """What identifies the content of a data set read from files, ``"sha256:<train>-<test>"``
    (16 hex digits of each file's SHA-256), so that results can be tied to the data they were
    computed on; ``None`` for the synthetic data, which its options and seed fix."""
    if name_or_path in REAL_DATASETS:
        folder = locate(str(name_or_path), root)["train"].parent
    elif isinstance(name_or_path, (str, Path)) and Path(name_or_path).is_dir():
        folder = Path(name_or_path)
    else:
        return None
    train, test = (file_sha256(folder / f"{split}.txt")[:16] for split in ("train", "test"))
    return f"sha256:{train}-{test}"


def read_lightgcn_dir(folder: str | Path, name: str | None = None) -> Interactions:
    """Read ``train.txt`` and ``test.txt`` of a folder (validated, cached by content hash).

    A mostly unused id space is refused (see :func:`~cerp_core.data.lightgcn_text.check_id_space`);
    smaller gaps and test-only items are kept, counted in ``statistics()`` and warned about.
    """
    folder = Path(folder)
    train_path, test_path = folder / "train.txt", folder / "test.txt"
    for path in (train_path, test_path):
        require_file(path)
    # v4: entries are written only after every check (id space, overlap, negatives)
    key = f"v4-{file_sha256(train_path)[:16]}-{file_sha256(test_path)[:16]}"
    cached = cache_dir() / "processed" / f"{key}.npz"
    pairs = _read_cache(cached)
    if pairs is None:
        train, test = read_user_item_file(train_path), read_user_item_file(test_path)
        check_id_space(train, test)
        check_disjoint(train, test)
        check_negatives_exist(train, test)
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
    num_items = int(max(pairs["train_items"].max(), pairs["test_items"].max())) + 1
    data = Interactions(
        name=name or folder.name,
        num_users=num_users,
        num_items=num_items,
        train=to_csr(pairs["train_users"], pairs["train_items"], num_users, num_items),
        valid=to_csr(pairs["test_users"][:0], pairs["test_items"][:0], num_users, num_items),
        test=to_csr(pairs["test_users"], pairs["test_items"], num_users, num_items),
    )
    _warn_about_gaps(data, f"{train_path} and {test_path}")
    return data


def _warn_about_gaps(data: Interactions, files: str) -> None:
    """One warning when some ids have no interaction or some users or items occur only in
    test."""
    gaps = data.id_space_gaps()
    found = [
        f"{gaps['unused_user_ids']:,} of {data.num_users:,} user ids have no interaction",
        f"{gaps['unused_item_ids']:,} of {data.num_items:,} item ids have no interaction",
        f"{gaps['test_only_users']:,} test-only users (no training interaction; scored with "
        "embeddings never fitted to them)",
        f"{gaps['test_only_items']:,} test-only items (no training interaction)",
    ]
    found = [text for text, count in zip(found, gaps.values(), strict=True) if count]
    if found:
        warnings.warn(
            f"{files}: {'; '.join(found)}. They stay in the id space (ranking candidates, "
            "negatives, table size; see statistics()); load_dataset(frame) remaps ids densely.",
            DataWarning,
            stacklevel=3,
        )


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays; ``None`` if absent, or if unreadable (then warned and deleted)."""
    if not path.exists():
        return None
    try:
        # our own handle: np.load leaves its file open when the zip is broken
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as arrays:
            pairs = {key: arrays[key] for key in _CACHE_KEYS}
        _check_cached(pairs)
    except Exception as error:  # BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error
        warnings.warn(
            f"processed-data cache {path} is unreadable ({type(error).__name__}: {error}); "
            "deleted it, re-reading the source files",
            DataWarning,
            stacklevel=3,
        )
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return pairs


def _check_cached(pairs: dict[str, np.ndarray]) -> None:
    """Raise ``ValueError`` unless the arrays have the shapes and ranges the reader writes."""
    num_users = pairs["num_users"]
    if num_users.shape != () or num_users.dtype.kind not in "iu" or num_users > MAX_IDS:
        raise ValueError(f"num_users is {num_users!r}, not an integer id count")
    for split in ("train", "test"):
        users, items = pairs[f"{split}_users"], pairs[f"{split}_items"]
        if users.ndim != 1 or users.shape != items.shape or not len(users):
            raise ValueError(f"{split} arrays have shapes {users.shape} and {items.shape}")
        for array, limit in ((users, int(num_users)), (items, MAX_IDS)):
            if array.dtype.kind not in "iu" or array.min() < 0 or array.max() >= limit:
                raise ValueError(f"{split} ids of dtype {array.dtype} are out of range")


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` via a temporary file and rename; a cache we cannot write is skipped."""
    try:
        save_npz_atomic(path, arrays)
    except OSError as error:
        warnings.warn(f"processed-data cache not written ({error})", stacklevel=3)
