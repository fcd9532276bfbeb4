"""The hashing trick: fewer rows than ids, ids hashed into them."""

from __future__ import annotations

import torch
from torch import nn

from cerp_core.embeddings.base import DenseEmbedding, gather_rows, init_table

HASH_PRIME = 2**31 - 1


class HashEmbedding(DenseEmbedding):
    r"""The hashing trick (Weinberger et al., ICML 2009): ``num_rows < N`` shared rows.

    Each id is sent to one row by a universal hash, so colliding ids share one vector; the
    table shrinks by ``num_rows / N`` and the model cannot tell colliding ids apart. A random
    hash (rather than ``i mod num_rows``) keeps users and items, which occupy contiguous id
    ranges, from colliding in a structured way.

    .. math::
        \mathbf{e}_i = \mathbf{E}[h(i)], \qquad
        h(i) = ((a\,i + c) \bmod p) \bmod m, \qquad p = 2^{31} - 1

    with ``a`` in ``[1, p)`` and ``c`` in ``[0, p)`` drawn at construction and kept as buffers
    (checkpoints carry the hash). The two hash constants are not counted as stored parameters.

    Args:
        num_entities: Number of ids ``N`` (below ``2^31 - 1``).
        dim: Embedding width ``d``.
        num_rows: Rows ``m`` of the shared table (``1 <= m``).
        seed: Seed of the hash constants ``a, c``; ``None`` draws them from torch's global
            generator, so ``torch.manual_seed`` fixes the hash as it fixes the weights.
            (default: ``None``)
        init_std: Standard deviation of the normal initialization. (default: ``0.1``)
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        num_rows: int,
        seed: int | None = None,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(num_entities, dim)
        if num_rows < 1:
            raise ValueError(f"num_rows must be at least 1, got {num_rows}")
        if num_entities >= HASH_PRIME:
            raise ValueError(f"num_entities must be below {HASH_PRIME}, got {num_entities}")
        self.num_rows = num_rows
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.register_buffer("hash_a", torch.randint(1, HASH_PRIME, (), generator=generator))
        self.register_buffer("hash_c", torch.randint(0, HASH_PRIME, (), generator=generator))
        self.weight = nn.Parameter(init_table(num_rows, dim, "normal", init_std))

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Row ``h(i)`` of each id (int64 arithmetic: ``a * i < 2^62``)."""
        return (ids.long() * self.hash_a + self.hash_c) % HASH_PRIME % self.num_rows

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return gather_rows(self.weight, self.rows(ids))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_rows={self.num_rows}"
