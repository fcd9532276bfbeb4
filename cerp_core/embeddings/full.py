"""The uncompressed embedding table."""

from __future__ import annotations

from cerp_core.embeddings.lowdim import LowDimEmbedding


class FullEmbedding(LowDimEmbedding):
    r"""One ``num_entities x dim`` row per id: the reference every compact table is measured by.

    .. math::
        \mathbf{e}_i = \mathbf{E}[i], \qquad \mathbf{E} \in \mathbb{R}^{N \times d}

    A :class:`~cerp_core.embeddings.LowDimEmbedding` at the full width; stores ``N * d``
    parameters (budget 1.0).

    Args:
        num_entities: Number of ids ``N``.
        dim: Embedding width ``d``.
        init_std: Standard deviation of the normal initialization, LightGCN's choice.
            (default: ``0.1``)
    """

    def __init__(self, num_entities: int, dim: int, init_std: float = 0.1) -> None:
        super().__init__(num_entities, dim, width=dim, init_std=init_std)
