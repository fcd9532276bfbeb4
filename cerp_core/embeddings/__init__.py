"""Compact embedding tables behind one interface and one budget knob (see ARCHITECTURE.md)."""

from cerp_core.embeddings.base import (
    CompactEmbedding,
    DenseEmbedding,
    MemoryReport,
    bitmask_bytes,
    csr_bytes,
)
from cerp_core.embeddings.budget import (
    FULL_MODEL,
    METHODS,
    POPULARITY,
    STUDIED,
    SUITE_PEP_PRUNING_L2,
    SUITE_PRUNING_L2,
    SUITE_THRESHOLD_INIT,
    Method,
    cerp_bucket_size,
    check_budgets,
    get_method,
    make_embedding,
    max_parameters,
    options_for,
    qr_remainder_rows,
    reference_methods,
    tt_rank,
)
from cerp_core.embeddings.cerp import CERPEmbedding, composition_indices, min_bucket_size
from cerp_core.embeddings.full import FullEmbedding
from cerp_core.embeddings.hashing import HashEmbedding
from cerp_core.embeddings.lowdim import LowDimEmbedding
from cerp_core.embeddings.magnitude import MagnitudePrunedEmbedding
from cerp_core.embeddings.pep import PEPEmbedding
from cerp_core.embeddings.pruning import PrunableEmbedding, PrunedTable, soft_threshold
from cerp_core.embeddings.qr import QREmbedding
from cerp_core.embeddings.tt import TTEmbedding

__all__ = [
    "FULL_MODEL",
    "METHODS",
    "POPULARITY",
    "STUDIED",
    "SUITE_PEP_PRUNING_L2",
    "SUITE_PRUNING_L2",
    "SUITE_THRESHOLD_INIT",
    "CERPEmbedding",
    "CompactEmbedding",
    "DenseEmbedding",
    "Method",
    "FullEmbedding",
    "HashEmbedding",
    "LowDimEmbedding",
    "MagnitudePrunedEmbedding",
    "MemoryReport",
    "PEPEmbedding",
    "PrunableEmbedding",
    "PrunedTable",
    "QREmbedding",
    "TTEmbedding",
    "cerp_bucket_size",
    "check_budgets",
    "get_method",
    "composition_indices",
    "bitmask_bytes",
    "csr_bytes",
    "make_embedding",
    "max_parameters",
    "options_for",
    "reference_methods",
    "min_bucket_size",
    "qr_remainder_rows",
    "soft_threshold",
    "tt_rank",
]
