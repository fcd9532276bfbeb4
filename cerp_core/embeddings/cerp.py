"""CERP: compositional embeddings with regularized pruning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from cerp_core.embeddings.base import Init, check_combine, compose, init_table
from cerp_core.embeddings.pruning import PrunableEmbedding, PrunedTable, Threshold

PAPER_BATCH_ROWS = 70
"""Rows of the authors' regularized batch: 10 users and their 10 x (1 + 5) items. Their loss
*sums* ``tanh(K E)^2`` over these rows; this class takes the *mean* over a batch's rows, so
their ``gamma_0 = 1`` is ``regularizer_weight = 70`` here, at any batch size."""


def min_bucket_size(num_entities: int) -> int:
    """Smallest ``b`` with ``ceil(N / b) <= b`` (equivalently ``b >= sqrt(N)``): the smallest
    bucket size at which every id gets its own pair of rows."""
    return math.isqrt(num_entities - 1) + 1


def composition_indices(
    ids: torch.Tensor, num_entities: int, bucket_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``P`` and ``Q`` for each id: ``(i mod b, i div ceil(N / b))``.

    The quotient divides by ``ceil(N / b)``, not by ``b`` as the classic QR trick does, so both
    tables have ``b`` rows; the pairs are all distinct iff ``ceil(N / b) <= b``.
    """
    per_row = math.ceil(num_entities / bucket_size)
    return ids % bucket_size, torch.div(ids, per_row, rounding_mode="floor")


class CERPEmbedding(PrunableEmbedding):
    r"""Compositional Embedding with Regularized Pruning (Liang et al., "Learning Compact
    Compositional Embeddings via Regularized Pruning for Recommendation", ICDM 2023).

    Two ``b x d`` meta tables ``P`` and ``Q`` (``b`` about ``sqrt(N)`` or larger) are shared by
    all ``N`` ids: id ``i`` composes row ``i mod b`` of ``P`` with row ``i div ceil(N/b)`` of
    ``Q``, a pair no other id has. Both tables are pruned by learnable soft thresholds as in
    PEP, while a regularizer rewards composed vectors with many non-zero entries, i.e. ``P`` and
    ``Q`` rows that are non-zero where the other is zero (complementary information). The masks
    found at each target are retrained from the initial values (see
    :class:`PrunableEmbedding`).

    .. math::
        \mathbf{e}_i = \hat{\mathbf{P}}[i \bmod b] + \hat{\mathbf{Q}}[\lfloor i / \lceil N/b
            \rceil \rfloor], \qquad
        \hat{\mathbf{P}} = \operatorname{sign}(\mathbf{P})\,
            \operatorname{ReLU}(|\mathbf{P}| - \sigma(\mathbf{S}_P))

    .. math::
        \mathcal{L}_{\text{prune}}(\mathbf{E}, t) = -\gamma_0\, \delta^{t}
            \frac{1}{|\mathbf{E}|} \sum_{j \in \text{batch}} \sum_{k} \tanh(K\, \mathbf{E}_{jk})^2

    with ``t`` the epochs of training seen so far, fractional within an epoch (the training
    samples seen divided by the training set's size).

    **Batch invariance.** The authors' loss sums over the ~70 rows of their batches (BPR is a
    mean over the batch); summed at batch 8,192 the same ``gamma_0`` weighs ~350 times more
    against BPR and holds every step's gradient, so nothing is learnt while pruning. Here the
    regularizer is a *mean* over the batch's rows, and ``gamma`` decays per training sample,
    so a weight means the same at every batch size: the paper's ``gamma_0 = 1`` (summed over 70
    rows) is ``regularizer_weight = PAPER_BATCH_ROWS = 70``, halved per epoch of samples.

    Matches the authors' code (``xurong-liang/CERP``, ``CERP/models/com_embedding.py`` and
    ``CERP/models/modules.py``): ``P`` is their ``R_v`` (remainder), ``Q`` their ``Q_v``
    (quotient), both Xavier-uniform; thresholds all ``-100`` ("all_ones" init method);
    concatenation puts ``P`` first; ``K = 100``, ``gamma_0 = 1`` summed over the batch (70 here,
    see above), decay 0.5 per epoch; the regularizer is off while retraining. With
    ``threshold_init = -100`` pruning starts only after about ``(logit(|w|) + 100) / lr`` (~9e4)
    Adam steps; :func:`~cerp_core.embeddings.make_embedding` uses a faster suite default.

    Args:
        num_entities: Number of ids ``N``.
        dim: Width ``d`` of each meta table.
        bucket_size: Rows ``b`` of ``P`` and ``Q``; must satisfy ``ceil(N / b) <= b``.
        combine: ``"add"`` (``d``-wide vectors) or ``"concat"`` (``[P ; Q]``, ``2d`` wide).
            (default: ``"add"``)
        threshold: Granularity of the raw thresholds: ``"element-wise"`` (``b x d`` per table)
            or ``"global"`` (one scalar per table); ``"row-wise"`` and ``"dimension-wise"`` as
            in PEP. (default: ``"element-wise"``)
        threshold_init: Initial raw threshold (the paper's value). (default: ``-100.0``)
        targets: Non-zero counts at which stage 1 snapshots a mask. (default: ``()``)
        regularizer_weight: ``gamma_0``, the weight of the per-row mean; ``0`` gives the "CERP
            without regularizer" ablation. (default: ``PAPER_BATCH_ROWS``, the paper's 1)
        regularizer_decay: ``delta``, the factor applied to the weight per epoch of training
            samples, continuously. (default: ``0.5``)
        regularizer_sharpness: ``K``; ``tanh(K x)^2`` is a smooth indicator of ``x != 0``.
            (default: ``100.0``)
        init: Initialization of ``P`` and ``Q``: ``"xavier_uniform"`` (the pruning code) or
            ``"normal"`` with std 0.1 (the LightGCN variant's). (default: ``"xavier_uniform"``)
        pruning_l2: Stage-1 decay of ``P`` and ``Q`` (see :class:`PrunableEmbedding`; the
            authors' Adam decays every parameter by 1e-5). (default: ``0.0``)
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        bucket_size: int,
        combine: Literal["add", "concat"] = "add",
        threshold: Threshold = "element-wise",
        threshold_init: float = -100.0,
        targets: Sequence[int] = (),
        regularizer_weight: float = PAPER_BATCH_ROWS,
        regularizer_decay: float = 0.5,
        regularizer_sharpness: float = 100.0,
        init: Init = "xavier_uniform",
        pruning_l2: float = 0.0,
    ) -> None:
        check_combine(combine, ("add", "concat"))
        if bucket_size < 1 or math.ceil(num_entities / bucket_size) > bucket_size:
            raise ValueError(
                f"bucket_size={bucket_size} gives ceil(N / b) = "
                f"{math.ceil(num_entities / max(bucket_size, 1))} > b for N={num_entities}, so "
                f"some ids would share both rows; the smallest valid bucket size is "
                f"{min_bucket_size(num_entities)} (b >= sqrt(N))"
            )
        for name, value in (("regularizer_weight", regularizer_weight),
                            ("regularizer_decay", regularizer_decay),
                            ("regularizer_sharpness", regularizer_sharpness)):  # fmt: skip
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        width = 2 * dim if combine == "concat" else dim
        super().__init__(num_entities, dim, width, targets, pruning_l2)
        self.bucket_size = bucket_size
        self.combine = combine
        self.regularizer_weight = regularizer_weight
        self.regularizer_decay = regularizer_decay
        self.regularizer_sharpness = regularizer_sharpness
        for name in ("P", "Q"):
            initial = init_table(bucket_size, dim, init)
            self.tables[name] = PrunedTable(initial, threshold, threshold_init)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows_p, rows_q = composition_indices(ids, self.num_entities, self.bucket_size)
        return compose(
            self.tables["P"].effective(rows_p), self.tables["Q"].effective(rows_q), self.combine
        )

    def pruning_loss(
        self, embeddings: torch.Tensor, epoch: float, decay_scale: float = 1.0
    ) -> torch.Tensor:
        """``-gamma_0 * decay**epoch * mean_rows sum_k tanh(K * E)**2`` over the batch's
        composed layer-0 embeddings ``E`` (the official code's users, once each, and items),
        plus the stage-1 decay; ``epoch`` may be fractional. Zero once rewound."""
        decay = super().pruning_loss(embeddings, epoch, decay_scale)
        if self.rewound or self.regularizer_weight == 0:
            return decay
        gamma = self.regularizer_weight * self.regularizer_decay**epoch
        nonzero = torch.tanh(self.regularizer_sharpness * embeddings).square().sum(dim=-1)
        return decay - gamma * nonzero.mean()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, bucket_size={self.bucket_size}, combine={self.combine!r}, "
            f"regularizer_weight={self.regularizer_weight}"
        )
