"""The popularity ranking: the reference every learnt recommender has to beat."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from cerp_core.models.base import Scorer


class Popularity(nn.Module):
    r"""Ranks every item by its number of training interactions, the same list for every user.

    .. math::
        \hat{y}_{ui} = |\{v : (v, i) \in \mathcal{R}_{\text{train}}\}|

    It learns nothing and stores no embedding; a compact table that scores below it has lost
    all the personalisation the full table had. Ties keep the evaluator's order (item id).

    Args:
        train: ``num_users x num_items`` training interactions (scipy sparse); any stored
            non-zero counts once.
    """

    def __init__(self, train: sp.spmatrix) -> None:
        super().__init__()
        counts = np.asarray((sp.csr_matrix(train) != 0).sum(axis=0), dtype=np.float32).ravel()
        self.num_users, self.num_items = train.shape
        self.register_buffer("item_counts", torch.from_numpy(counts))

    def scorer(self) -> Scorer:
        """``f(users[n]) -> [n, num_items]``: each user's row is the item counts."""
        return lambda users: self.item_counts.expand(len(users), -1).clone()

    def extra_repr(self) -> str:
        return f"num_users={self.num_users}, num_items={self.num_items}"
