"""The interface every compact embedding table implements, and what the tables share."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

FLOAT_BYTES = 4
INDEX_BYTES = 4

Init = Literal["normal", "xavier_uniform"]
Combine = Literal["mult", "add", "concat"]


@dataclass(frozen=True)
class MemoryReport:
    """Bytes a table takes when stored for inference, plus what only training needs.

    ``dense_bytes`` stores every array as float32. ``sparse_bytes`` stores each pruned table in
    CSR form (float32 values, int32 column indices, int32 row pointers) and ``bitmask_bytes``
    as its float32 non-zeros plus one bit per entry; every other array is stored densely, so
    for unpruned tables all three are equal. ``training_only_bytes`` counts parameters that
    inference never needs (pruning thresholds).
    """

    dense_bytes: int
    sparse_bytes: int
    bitmask_bytes: int
    training_only_bytes: int = 0

    @property
    def formats(self) -> dict[str, int]:
        """Bytes of each inference storage format; on a tie the earlier one is preferred."""
        return {"dense": self.dense_bytes, "csr": self.sparse_bytes, "bitmask": self.bitmask_bytes}

    @property
    def inference_format(self) -> str:
        """The cheapest storage format: ``"dense"``, ``"csr"`` or ``"bitmask"``."""
        formats = self.formats
        return min(formats, key=formats.__getitem__)

    @property
    def inference_bytes(self) -> int:
        """Bytes in the cheapest storage format."""
        return self.formats[self.inference_format]

    @classmethod
    def unpruned(cls, values: int) -> MemoryReport:
        """The report of tables stored densely: ``values`` float32 numbers in every format."""
        size = values * FLOAT_BYTES
        return cls(dense_bytes=size, sparse_bytes=size, bitmask_bytes=size)


def csr_bytes(rows: int, nnz: int) -> int:
    """Bytes of a ``rows``-row CSR matrix with ``nnz`` stored values.

    float32 values and int32 column indices for each non-zero, plus ``rows + 1`` int32 row
    pointers.
    """
    return nnz * (FLOAT_BYTES + INDEX_BYTES) + (rows + 1) * INDEX_BYTES


def bitmask_bytes(entries: int, nnz: int) -> int:
    """Bytes of a matrix of ``entries`` entries stored as its ``nnz`` float32 non-zeros (in
    row-major order) and a bitmask of one bit per entry, rounded up to whole bytes."""
    return nnz * FLOAT_BYTES + -(-entries // 8)


def init_table(rows: int, cols: int, init: Init = "normal", std: float = 0.1) -> torch.Tensor:
    """A freshly initialized ``[rows, cols]`` float32 table (on the CPU; move the module after).

    ``"normal"`` draws N(0, std^2) (LightGCN's choice); ``"xavier_uniform"`` draws
    U(-a, a) with ``a = sqrt(6 / (rows + cols))`` (the choice of the PEP and CERP code).
    """
    if init == "normal":
        return torch.randn(rows, cols) * std
    if init == "xavier_uniform":
        bound = math.sqrt(6.0 / (rows + cols))
        return torch.empty(rows, cols).uniform_(-bound, bound)
    raise ValueError(f"init must be 'normal' or 'xavier_uniform', got {init!r}")


COMBINES: tuple[Combine, ...] = ("mult", "add", "concat")


def check_combine(combine: str, allowed: Sequence[str] = COMBINES) -> None:
    """Refuse a ``combine`` outside ``allowed``, naming the accepted ones."""
    if combine not in allowed:
        names = ", ".join(repr(c) for c in allowed)
        raise ValueError(f"combine must be one of {names}, got {combine!r}")


def compose(first: torch.Tensor, second: torch.Tensor, combine: Combine) -> torch.Tensor:
    """Combine two ``[n, d]`` blocks of row vectors: element-wise product, sum, or concatenation
    (``[n, 2d]``, ``first`` on the left)."""
    if combine == "mult":
        return first * second
    if combine == "add":
        return first + second
    check_combine(combine)  # after the common cases: no check on every batch's hot path
    return torch.cat((first, second), dim=-1)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (a module lives on one device)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    raise ValueError(f"{type(module).__name__} has no parameter or buffer, so no device")


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]``: rows of ``table`` (any number of dimensions) at the non-negative ids
    ``index`` (any shape), ``[*index.shape, *table.shape[1:]]``, with a deterministic gradient.

    Indexing backpropagates through ``index_put_(accumulate=True)``, which on the CPU adds the
    rows with parallel atomic float additions once the gradient has at least 32768 elements
    and more than one thread runs, so repeated ids are summed in a varying order and a seed no
    longer fixes training. The embedding backward used here sums every row in index order
    (the same on any number of threads) and is faster.
    """
    rows = F.embedding(index, table.reshape(table.shape[0], -1))
    return rows.view(*index.shape, *table.shape[1:])


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
        # Every id, kept so that :meth:`embed_all` allocates no index per call.
        self.register_buffer("all_ids", torch.arange(num_entities), persistent=False)

    @property
    def full_parameters(self) -> int:
        """Parameters of the uncompressed ``num_entities x dim`` table."""
        return self.num_entities * self.dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Return ``[len(ids), output_dim]`` embeddings."""
        raise NotImplementedError

    def embed_all(self) -> torch.Tensor:
        """Embeddings of every id, ``[num_entities, output_dim]`` (what graph backbones
        propagate); tables override it where the whole table needs less work than a lookup."""
        return self(self.all_ids)

    def num_parameters(self) -> int:  # pragma: no cover - interface
        """Stored non-zero embedding parameters (the budget measure)."""
        raise NotImplementedError

    def memory(self) -> MemoryReport:  # pragma: no cover - interface
        """Storage in bytes; see :class:`MemoryReport`."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_entities={self.num_entities}, dim={self.dim}, output_dim={self.output_dim}"


class DenseEmbedding(CompactEmbedding):
    """A table whose stored arrays are all its learnable parameters, kept dense.

    Counting and memory are the same for every unpruned table (full, hash, QR, TT): the
    stored non-zeros of all parameters, and four bytes for each stored value.
    """

    def num_parameters(self) -> int:
        return sum(int(torch.count_nonzero(p)) for p in self.parameters())

    def memory(self) -> MemoryReport:
        return MemoryReport.unpruned(sum(p.numel() for p in self.parameters()))
