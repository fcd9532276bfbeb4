"""PEP: a full table pruned by learnable soft thresholds."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cerp_core.embeddings.base import Init, init_table
from cerp_core.embeddings.pruning import PrunableEmbedding, PrunedTable, Threshold


class PEPEmbedding(PrunableEmbedding):
    r"""Plug-in Embedding Pruning (Liu et al., "Learnable Embedding Sizes for Recommender
    Systems", ICLR 2021).

    A full ``N x d`` table is re-parametrised by a soft threshold whose level is learnt together
    with the model; entries below the threshold become exact zeros, so each id ends up with its
    own embedding size. The masks found at the targets are then retrained from the initial
    values (lottery-ticket rewinding, see :class:`PrunableEmbedding`).

    .. math::
        \mathbf{e}_i = \operatorname{sign}(\mathbf{E}[i])\,
            \operatorname{ReLU}(|\mathbf{E}[i]| - \sigma(\mathbf{S}[i]))

    Defaults follow the authors' code (``ssui-liu/learnable-embed-sizes-for-RecSys``,
    ``models/pep_embedding.py`` and ``train_ml-1m.py``): Xavier-uniform table, element-wise
    ("feature_dim") thresholds initialized to ``-15``. Pruning starts once ``sigma(S)`` reaches
    the entries' magnitude, i.e. after roughly ``(logit(|w|) - threshold_init) / lr`` Adam
    steps when weight decay drives the thresholds; :func:`~cerp_core.embeddings.make_embedding`
    uses a faster suite default.

    Args:
        num_entities: Number of ids ``N``.
        dim: Embedding width ``d``.
        targets: Non-zero counts at which stage 1 snapshots a mask. (default: ``()``)
        threshold: Granularity of the raw thresholds ``S``: ``"element-wise"`` (``N x d``),
            ``"row-wise"`` (``N x 1``), ``"dimension-wise"`` (``1 x d``) or ``"global"``.
            (default: ``"element-wise"``)
        threshold_init: Initial raw threshold; ``sigmoid(-15) = 3e-7``. (default: ``-15.0``)
        init: Table initialization, ``"xavier_uniform"`` or ``"normal"`` (std 0.1).
            (default: ``"xavier_uniform"``)
        pruning_l2: Stage-1 decay of the table (see :class:`PrunableEmbedding`).
            (default: ``0.0``)
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        targets: Sequence[int] = (),
        threshold: Threshold = "element-wise",
        threshold_init: float = -15.0,
        init: Init = "xavier_uniform",
        pruning_l2: float = 0.0,
    ) -> None:
        super().__init__(num_entities, dim, targets=targets, pruning_l2=pruning_l2)
        self.tables["weight"] = PrunedTable(
            init_table(num_entities, dim, init), threshold, threshold_init
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tables["weight"].effective(ids)
