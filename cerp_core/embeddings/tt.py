"""Tensor-train embedding tables (TT-Rec)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from cerp_core.embeddings.base import DenseEmbedding, gather_rows


def factor_dim(dim: int) -> tuple[int, int, int]:
    """Three factors ``d1 <= d2 <= d3`` with ``d1 * d2 * d3 == dim``, as equal as possible.

    >>> factor_dim(128)
    (4, 4, 8)
    """
    triples = [
        (a, b, dim // (a * b))
        for a in range(1, dim + 1)
        if dim % a == 0
        for b in range(a, dim // a + 1)
        if (dim // a) % b == 0 and dim // (a * b) >= b
    ]
    return min(triples, key=lambda t: (t[2], -t[0]))


def factor_rows(num_entities: int) -> tuple[int, int, int]:
    """Three near-equal factors ``n1 >= n2 >= n3`` whose product is at least ``num_entities``.

    ``n1`` is the smallest integer with ``n1^3 >= N``, ``n2`` the smallest with
    ``n1 * n2^2 >= N``, and ``n3 = ceil(N / (n1 * n2))``.
    """
    n1 = 1
    while n1**3 < num_entities:
        n1 += 1
    n2 = 1
    while n1 * n2 * n2 < num_entities:
        n2 += 1
    return n1, n2, math.ceil(num_entities / (n1 * n2))


def tt_parameters(row_factors: Sequence[int], dim_factors: Sequence[int], rank: int) -> int:
    """Stored values of the three cores: ``r (n1 d1 + n3 d3) + r^2 n2 d2``."""
    (n1, n2, n3), (d1, d2, d3) = row_factors, dim_factors
    return rank * (n1 * d1 + n3 * d3) + rank * rank * n2 * d2


def max_useful_rank(row_factors: Sequence[int], dim_factors: Sequence[int]) -> int:
    """Ranks above ``min(n1 d1, n3 d3)`` add parameters but cannot represent more tables."""
    return min(row_factors[0] * dim_factors[0], row_factors[2] * dim_factors[2])


class TTEmbedding(DenseEmbedding):
    r"""Tensor-train embedding table (Yin et al., "TT-Rec: Tensor Train Compression for Deep
    Learning Recommendation Model Embeddings", MLSys 2021), in pure PyTorch.

    The ``N x d`` table is viewed as a tensor with modes ``(n1 d1, n2 d2, n3 d3)``, where
    ``n1 n2 n3 >= N`` and ``d1 d2 d3 = d``, and stored as three cores of TT rank ``r``. Id
    ``i`` has the mixed-radix digits ``(i1, i2, i3)`` in base ``(n1, n2, n3)`` and its vector is
    a product of one slice per core, so no full row is ever stored:

    .. math::
        \mathbf{e}_i[(j_1, j_2, j_3)] = \sum_{a, b = 1}^{r}
            G_1[i_1, j_1, a]\, G_2[i_2, a, j_2, b]\, G_3[i_3, b, j_3]

    with ``r (n1 d1 + n3 d3) + r^2 n2 d2`` parameters. Cores are drawn from
    ``N(0, s^2)`` with ``s = (init_std / r)^{1/3}``, so that entries of the full table start with
    standard deviation ``init_std``, as in TT-Rec's sampled-Gaussian initialization.

    Args:
        num_entities: Number of ids ``N``.
        dim: Embedding width ``d``.
        rank: TT rank ``r`` of both inner bonds.
        row_factors: ``(n1, n2, n3)`` with product at least ``N``; ``None`` uses
            :func:`factor_rows`. (default: ``None``)
        dim_factors: ``(d1, d2, d3)`` with product ``d``; ``None`` uses :func:`factor_dim`,
            whose ascending order pairs the largest ``n`` with the smallest ``d``.
            (default: ``None``)
        init_std: Standard deviation of the entries of the represented table.
            (default: ``0.1``)
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        rank: int,
        row_factors: Sequence[int] | None = None,
        dim_factors: Sequence[int] | None = None,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(num_entities, dim)
        rows = tuple(factor_rows(num_entities) if row_factors is None else row_factors)
        dims = tuple(factor_dim(dim) if dim_factors is None else dim_factors)
        if len(rows) != 3 or math.prod(rows) < num_entities:
            raise ValueError(f"row_factors must be 3 ints with product >= {num_entities}: {rows}")
        if len(dims) != 3 or math.prod(dims) != dim:
            raise ValueError(f"dim_factors must be 3 ints with product {dim}: {dims}")
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.row_factors, self.dim_factors, self.rank = rows, dims, rank
        (n1, n2, n3), (d1, d2, d3) = rows, dims
        std = (init_std / rank) ** (1.0 / 3.0)
        self.core1 = nn.Parameter(torch.randn(n1, d1, rank) * std)
        self.core2 = nn.Parameter(torch.randn(n2, rank, d2, rank) * std)
        self.core3 = nn.Parameter(torch.randn(n3, rank, d3) * std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, n2, n3 = self.row_factors
        flat = ids.reshape(-1)
        i1 = torch.div(flat, n2 * n3, rounding_mode="floor")
        i2 = torch.div(flat, n3, rounding_mode="floor") % n2
        i3 = flat % n3
        left = torch.einsum(
            "bja,bakc->bjkc", gather_rows(self.core1, i1), gather_rows(self.core2, i2)
        )
        out = torch.einsum("bjkc,bcl->bjkl", left, gather_rows(self.core3, i3))
        return out.reshape(*ids.shape, self.dim)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, rank={self.rank}, row_factors={self.row_factors}, "
            f"dim_factors={self.dim_factors}"
        )
