"""Interaction logs as pandas DataFrames: k-core filtering, id remapping, per-user split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cerp_core.data.errors import DataError
from cerp_core.data.interactions import Interactions, hold_out, to_csr


def split_train_test(
    name: str,
    users: np.ndarray,
    items: np.ndarray,
    num_users: int,
    num_items: int,
    test_fraction: float,
    seed: int,
) -> Interactions:
    """Hold out ``test_fraction`` of each user's interactions (seeded) as the test split."""
    held = hold_out(users, test_fraction, seed, "test", "the log")
    empty = to_csr(users[:0], items[:0], num_users, num_items)
    return Interactions(
        name=name,
        num_users=num_users,
        num_items=num_items,
        train=to_csr(users[~held], items[~held], num_users, num_items),
        valid=empty,
        test=to_csr(users[held], items[held], num_users, num_items),
    )


def k_core(frame: pd.DataFrame, user_col: str, item_col: str, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than ``k`` interactions."""
    while True:
        user_counts = frame[user_col].map(frame[user_col].value_counts())
        item_counts = frame[item_col].map(frame[item_col].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return frame
        frame = frame[keep]


def from_dataframe(
    frame: pd.DataFrame,
    user_col: str = "user",
    item_col: str = "item",
    min_interactions: int = 1,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str = "dataframe",
) -> Interactions:
    """Turn a log of (user, item) rows into train/test :class:`Interactions`.

    Repeated (user, item) rows count once (implicit feedback). Users and items are filtered to
    the ``min_interactions``-core, then remapped to dense 0-based ids in sorted order of the
    original ids. Each user's interactions are split at random (seeded) into train and test.
    """
    missing = [col for col in (user_col, item_col) if col not in frame.columns]
    if missing:
        raise DataError(f"DataFrame has no column(s) {missing}; columns: {list(frame.columns)}")
    for column in (user_col, item_col):
        kinds = frame[column].map(type).unique() if frame[column].dtype == object else []
        if len(kinds) > 1:  # e.g. one string among integers would be a user of its own
            first = frame.index[frame[column].map(type) != kinds[0]][0]
            raise DataError(
                f"DataFrame column {column!r} mixes {', '.join(k.__name__ for k in kinds)} ids "
                f"(row {first}: {frame[column][first]!r}); give every id one type"
            )
    pairs = frame[[user_col, item_col]].drop_duplicates()
    if pairs.isna().any().any():
        raise DataError(f"DataFrame has missing values in {user_col!r} or {item_col!r}")
    pairs = k_core(pairs, user_col, item_col, min_interactions)
    if pairs.empty:
        raise DataError(f"no interactions left after the {min_interactions}-core filter")
    user_codes, user_ids = pd.factorize(pairs[user_col], sort=True)
    item_codes, item_ids = pd.factorize(pairs[item_col], sort=True)
    return split_train_test(
        name,
        user_codes.astype(np.int64),
        item_codes.astype(np.int64),
        len(user_ids),
        len(item_ids),
        test_fraction,
        seed,
    )
