"""The quotient-remainder trick."""

from __future__ import annotations

import math

import torch
from torch import nn

from cerp_core.embeddings.base import (
    Combine,
    DenseEmbedding,
    check_combine,
    compose,
    gather_rows,
    init_table,
)


class QREmbedding(DenseEmbedding):
    r"""The quotient-remainder trick (Shi et al., "Compositional Embeddings Using Complementary
    Partitions for Memory-Efficient Recommendation Systems", KDD 2020).

    Two small tables replace the full one: a remainder table with ``m`` rows indexed by
    ``i mod m`` and a quotient table with ``ceil(N / m)`` rows indexed by ``i div m``. The two
    partitions are complementary, so every id gets a unique pair of rows (unlike hashing), for
    ``(m + ceil(N / m)) * d`` parameters, smallest near ``m = sqrt(N)``.

    .. math::
        \mathbf{e}_i = \mathbf{R}[i \bmod m] \circ \mathbf{Q}[\lfloor i / m \rfloor],
        \qquad \circ \in \{\odot, +, [\cdot\,;\cdot]\}

    Each table is ``d`` wide; ``"concat"`` returns ``2d``-wide vectors. Both tables are drawn
    from a normal whose standard deviation makes the *composed* entries start with standard
    deviation ``init_std`` like a full table: ``sqrt(init_std)`` for ``"mult"``,
    ``init_std / sqrt(2)`` for ``"add"``, ``init_std`` for ``"concat"``.

    Args:
        num_entities: Number of ids ``N``.
        dim: Width ``d`` of each table.
        num_remainder_rows: Rows ``m`` of the remainder table (``1 <= m <= N``).
        combine: ``"mult"`` (element-wise product, the paper's default), ``"add"`` or
            ``"concat"``. (default: ``"mult"``)
        init_std: Standard deviation of the composed entries at initialization.
            (default: ``0.1``)
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        num_remainder_rows: int,
        combine: Combine = "mult",
        init_std: float = 0.1,
    ) -> None:
        table_std = {"mult": math.sqrt(init_std), "add": init_std / math.sqrt(2.0)}
        check_combine(combine)
        if not 1 <= num_remainder_rows <= num_entities:
            raise ValueError(
                f"num_remainder_rows must lie in [1, {num_entities}], got {num_remainder_rows}"
            )
        super().__init__(num_entities, dim, 2 * dim if combine == "concat" else dim)
        self.combine = combine
        self.num_remainder_rows = num_remainder_rows
        self.num_quotient_rows = math.ceil(num_entities / num_remainder_rows)
        std = table_std.get(combine, init_std)
        self.remainder_weight = nn.Parameter(init_table(num_remainder_rows, dim, "normal", std))
        self.quotient_weight = nn.Parameter(init_table(self.num_quotient_rows, dim, "normal", std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        quotient = torch.div(ids, self.num_remainder_rows, rounding_mode="floor")
        return compose(
            gather_rows(self.remainder_weight, ids % self.num_remainder_rows),
            gather_rows(self.quotient_weight, quotient),
            self.combine,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_remainder_rows={self.num_remainder_rows}, "
            f"num_quotient_rows={self.num_quotient_rows}, combine={self.combine!r}"
        )
