"""The interface every compact embedding table implements."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FLOAT_BYTES = 4
INDEX_BYTES = 4


@dataclass(frozen=True)
class MemoryReport:
    """Bytes a table takes when stored for inference, plus what only training needs.

    ``dense_bytes`` stores every array as float32. ``sparse_bytes`` stores each pruned table in
    CSR form (float32 values, int32 column indices, int32 row pointers) and every other array
    densely; for unpruned tables it equals ``dense_bytes``. ``training_only_bytes`` counts
    parameters that inference never needs (pruning thresholds).
    """

    dense_bytes: int
    sparse_bytes: int
    training_only_bytes: int = 0

    @property
    def inference_bytes(self) -> int:
        """The smaller of the two storage formats."""
        return min(self.dense_bytes, self.sparse_bytes)


class CompactEmbedding(nn.Module):
    """A table that maps ``num_entities`` ids (users first, then items) to vectors.

    Args:
        num_entities: Number of ids, ``num_users + num_items``.
        dim: Width ``d`` of the full table this table stands in for.
        output_dim: Width of the vectors that :meth:`forward` returns (default: ``dim``).
    """

    def __init__(self, num_entities: int, dim: int, output_dim: int | None = None) -> None:
        super().__init__()
        if num_entities <= 0 or dim <= 0:
            raise ValueError(f"num_entities and dim must be positive, got {num_entities}, {dim}")
        self.num_entities = num_entities
        self.dim = dim
        self.output_dim = dim if output_dim is None else output_dim

    @property
    def full_parameters(self) -> int:
        """Parameters of the uncompressed ``num_entities x dim`` table."""
        return self.num_entities * self.dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Return ``[len(ids), output_dim]`` embeddings."""
        raise NotImplementedError

    def num_parameters(self) -> int:  # pragma: no cover - interface
        """Stored non-zero embedding parameters (the budget measure)."""
        raise NotImplementedError

    def memory(self) -> MemoryReport:  # pragma: no cover - interface
        """Storage in bytes; see :class:`MemoryReport`."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_entities={self.num_entities}, dim={self.dim}, output_dim={self.output_dim}"
