"""Compact embedding tables behind one interface (see ARCHITECTURE.md)."""

from cerp_core.embeddings.base import CompactEmbedding, MemoryReport
from cerp_core.embeddings.full import FullEmbedding

__all__ = ["CompactEmbedding", "FullEmbedding", "MemoryReport"]
