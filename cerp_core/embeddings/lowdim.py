"""A narrower full table: the simplest way to meet a budget."""

from __future__ import annotations

import torch
from torch import nn

from cerp_core.embeddings.base import DenseEmbedding, gather_rows, init_table


class LowDimEmbedding(DenseEmbedding):
    r"""One row per id, ``width < d`` wide: a full table of a smaller dimension.

    .. math::
        \mathbf{e}_i = \mathbf{E}[i], \qquad \mathbf{E} \in \mathbb{R}^{N \times w},
        \qquad w = \lfloor \text{budget} \cdot d \rfloor

    The reference every compact table must beat at its budget: it stores ``N * w`` parameters
    and gives every id its own vector, only shorter. ``dim`` stays the width ``d`` of the
    full table it stands in for (the budget's denominator); ``output_dim`` is ``w``.

    Args:
        num_entities: Number of ids ``N``.
        dim: Width ``d`` of the full table the budget refers to.
        width: Width ``w`` of the stored table (``1 <= w <= d``).
        init_std: Standard deviation of the normal initialization. (default: ``0.1``)
    """

    def __init__(self, num_entities: int, dim: int, width: int, init_std: float = 0.1) -> None:
        if not 1 <= width <= dim:
            raise ValueError(f"width must lie in [1, {dim}], got {width}")
        super().__init__(num_entities, dim, output_dim=width)
        self.weight = nn.Parameter(init_table(num_entities, width, "normal", init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return gather_rows(self.weight, ids)

    def embed_all(self) -> torch.Tensor:
        return self.weight
