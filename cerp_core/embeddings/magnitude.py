"""Magnitude pruning of a trained full table."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cerp_core.embeddings.base import init_table
from cerp_core.embeddings.pruning import PrunableEmbedding, PrunedTable


class MagnitudePrunedEmbedding(PrunableEmbedding):
    r"""A full table trained as is, then pruned to the largest-magnitude entries and retrained.

    The simplest pruning baseline, which the 2024 benchmark of Tran et al. ("A Thorough
    Performance Benchmarking on Lightweight Embedding-based Recommender Systems") found hard to
    beat. Stage 1 trains an ordinary full table (no thresholds, so :meth:`num_nonzero` stays at
    ``N * d`` and every target is met by :meth:`magnitude_masks` at the end of the stage);
    stage 2 rewinds to the initial values under the mask:

    .. math::
        \mathbf{M} = \mathbb{1}\big[|\mathbf{E}_{\text{trained}}| \text{ among the } t
            \text{ largest}\big], \qquad \mathbf{E} \leftarrow \mathbf{E}_0 \odot \mathbf{M}

    Args:
        num_entities: Number of ids ``N``.
        dim: Embedding width ``d``.
        targets: Non-zero counts to prune to. (default: ``()``)
        init_std: Standard deviation of the normal initialization, as for
            :class:`~cerp_core.embeddings.FullEmbedding`. (default: ``0.1``)
    """

    def __init__(
        self, num_entities: int, dim: int, targets: Sequence[int] = (), init_std: float = 0.1
    ) -> None:
        super().__init__(num_entities, dim, targets=targets)
        self.tables["weight"] = PrunedTable(init_table(num_entities, dim, "normal", init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tables["weight"].effective(ids)
