"""The uncompressed embedding table."""

from __future__ import annotations

import torch
from torch import nn

from cerp_core.embeddings.base import DenseEmbedding, gather_rows, init_table


class FullEmbedding(DenseEmbedding):
    r"""One ``num_entities x dim`` row per id: the reference every compact table is measured by.

    .. math::
        \mathbf{e}_i = \mathbf{E}[i], \qquad \mathbf{E} \in \mathbb{R}^{N \times d}

    Stores ``N * d`` parameters (budget 1.0).

    Args:
        num_entities: Number of ids ``N``.
        dim: Embedding width ``d``.
        init_std: Standard deviation of the normal initialization, LightGCN's choice.
            (default: ``0.1``)
    """

    def __init__(self, num_entities: int, dim: int, init_std: float = 0.1) -> None:
        super().__init__(num_entities, dim)
        self.weight = nn.Parameter(init_table(num_entities, dim, "normal", init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return gather_rows(self.weight, ids)

    def embed_all(self) -> torch.Tensor:
        return self.weight
