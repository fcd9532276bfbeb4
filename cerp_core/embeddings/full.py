"""The uncompressed embedding table."""

from __future__ import annotations

import torch
from torch import nn

from cerp_core.embeddings.base import FLOAT_BYTES, CompactEmbedding, MemoryReport


class FullEmbedding(CompactEmbedding):
    """One ``num_entities x dim`` row per id: the reference every compact table is measured by.

    Args:
        num_entities: Number of ids.
        dim: Embedding width.
        init_std: Standard deviation of the normal initialisation. (default: ``0.1``)
    """

    def __init__(self, num_entities: int, dim: int, init_std: float = 0.1) -> None:
        super().__init__(num_entities, dim)
        self.weight = nn.Parameter(torch.randn(num_entities, dim) * init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids]

    def num_parameters(self) -> int:
        return int(torch.count_nonzero(self.weight))

    def memory(self) -> MemoryReport:
        size = self.weight.numel() * FLOAT_BYTES
        return MemoryReport(dense_bytes=size, sparse_bytes=size)
