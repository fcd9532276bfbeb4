"""The ``Interactions`` container and the seeded per-user splits every loader shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cerp_core.data.errors import DataError


def to_csr(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> sp.csr_matrix:
    """Binary ``num_users x num_items`` CSR matrix with sorted column indices."""
    data = np.ones(len(users), dtype=np.float32)
    matrix = sp.csr_matrix((data, (users, items)), shape=(num_users, num_items))
    matrix.sort_indices()
    return matrix


def split_per_user(users: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask choosing ``round(fraction * n_u)`` random interactions of each user.

    Every user with at least two interactions gives at least one and keeps at least one, so
    no user disappears from the remaining part. ``fraction == 0`` selects nothing.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    chosen = np.zeros(len(users), dtype=bool)
    if fraction == 0.0 or len(users) == 0:
        return chosen
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(users)), users))
    sorted_users = users[order]
    counts = np.bincount(sorted_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(users)) - starts[sorted_users]
    wanted = np.clip(np.floor(fraction * counts + 0.5), 1, np.maximum(counts - 1, 0))
    chosen[order] = rank < wanted[sorted_users]
    return chosen


def hold_out(users: np.ndarray, fraction: float, seed: int, split: str, source: str) -> np.ndarray:
    """:func:`split_per_user`, refusing a positive ``fraction`` that would select nothing."""
    held = split_per_user(users, fraction, seed)
    if fraction > 0 and not held.any():
        raise DataError(
            f"the {split} split would be empty: no user has two or more interactions in "
            f"{source}, and a user's only interaction is never held out; pass a {split} "
            "fraction of 0 to go without one"
        )
    return held


@dataclass(frozen=True)
class Interactions:
    """Implicit feedback split into train, validation and test (users x items, binary CSR).

    Users and items also share one entity id space (users first, then items), the space that
    compact embedding tables index: see :meth:`item_entity_ids`.
    """

    name: str
    num_users: int
    num_items: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix

    @property
    def num_entities(self) -> int:
        """Size of the shared user + item id space."""
        return self.num_users + self.num_items

    def item_entity_ids(self, items: np.ndarray) -> np.ndarray:
        """Entity ids of items: ``num_users + item``."""
        return np.asarray(items) + self.num_users

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) arrays of every training interaction, grouped by user."""
        coo = self.train.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64)

    def item_popularity(self) -> np.ndarray:
        """Training interactions per item."""
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)

    def user_activity(self) -> np.ndarray:
        """Training interactions per user."""
        return np.diff(self.train.indptr).astype(np.int64)

    def id_space_gaps(self) -> dict[str, int]:
        """Ids without any interaction (in any split), and users and items with test
        interactions only.

        They stay in the id space: unused items are ranking candidates and negatives, and all
        of them count in ``num_entities``, the full-table size that budgets are fractions of.
        A test-only user or item is scored with the embedding no training step fitted to it
        (its initial row in a full table; rows shared with trained entities in CERP, hashing
        and QR).
        """
        per_user = sum(np.diff(split.indptr) for split in (self.train, self.valid, self.test))
        fit_per_user = np.diff(self.train.indptr) + np.diff(self.valid.indptr)
        fit = np.concatenate((self.train.indices, self.valid.indices))
        in_fit = np.bincount(fit, minlength=self.num_items) > 0
        in_test = np.bincount(self.test.indices, minlength=self.num_items) > 0
        return {
            "unused_user_ids": int(np.count_nonzero(per_user == 0)),
            "unused_item_ids": int(np.count_nonzero(~in_fit & ~in_test)),
            "test_only_users": int(np.count_nonzero((fit_per_user == 0) & (per_user > 0))),
            "test_only_items": int(np.count_nonzero(~in_fit & in_test)),
        }

    def statistics(self) -> pd.DataFrame:
        """One-row summary: sizes, interaction counts per split, density, id-space gaps."""
        total = self.train.nnz + self.valid.nnz + self.test.nnz
        return pd.DataFrame(
            {
                "users": [self.num_users],
                "items": [self.num_items],
                "entities": [self.num_entities],
                "train": [self.train.nnz],
                "valid": [self.valid.nnz],
                "test": [self.test.nnz],
                "density": [total / (self.num_users * self.num_items)],
                "users_with_test": [int((np.diff(self.test.indptr) > 0).sum())],
                **{key: [value] for key, value in self.id_space_gaps().items()},
            },
            index=pd.Index([self.name], name="dataset"),
        )

    def with_validation(self, fraction: float, seed: int) -> Interactions:
        """Copy whose validation split is carved from train (``fraction`` per user).

        A positive ``fraction`` that would leave the validation split empty is refused.
        """
        if self.valid.nnz:
            raise ValueError("validation split already carved; start from the original train")
        users, items = self.train_pairs()
        held = hold_out(users, fraction, seed, "validation", "train")
        return Interactions(
            name=self.name,
            num_users=self.num_users,
            num_items=self.num_items,
            train=to_csr(users[~held], items[~held], self.num_users, self.num_items),
            valid=to_csr(users[held], items[held], self.num_users, self.num_items),
            test=self.test,
        )
