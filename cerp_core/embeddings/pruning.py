"""What every pruned table shares: soft thresholds, masks, snapshots and rewinding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from cerp_core.embeddings.base import (
    FLOAT_BYTES,
    CompactEmbedding,
    MemoryReport,
    bitmask_bytes,
    csr_bytes,
    gather_rows,
)

Threshold = Literal["element-wise", "row-wise", "dimension-wise", "global"]


def soft_threshold(weight: torch.Tensor, raw_threshold: torch.Tensor) -> torch.Tensor:
    r"""PEP's soft threshold: shrink every entry towards zero by ``sigmoid(s)``, zeroing the small.

    .. math::
        \mathcal{S}(w, s) = \operatorname{sign}(w)\, \operatorname{ReLU}(|w| - \sigma(s))

    The sigmoid keeps the threshold in ``(0, 1)`` and lets ``s`` be learnt by gradient descent;
    ``raw_threshold`` broadcasts against ``weight``.
    """
    return torch.sign(weight) * torch.relu(weight.abs() - torch.sigmoid(raw_threshold))


def threshold_shape(kind: Threshold, rows: int, dim: int) -> tuple[int, int]:
    """Shape of the raw thresholds of a ``[rows, dim]`` table: one per entry, per row (PEP's
    "feature"), per column (PEP's "dimension") or one for the whole table."""
    shapes = {
        "element-wise": (rows, dim),
        "row-wise": (rows, 1),
        "dimension-wise": (1, dim),
        "global": (1, 1),
    }
    if kind not in shapes:
        raise ValueError(f"threshold must be one of {sorted(shapes)}, got {kind!r}")
    return shapes[kind]


class PrunedTable(nn.Module):
    """One pruned ``[rows, dim]`` array: its weight, learnable raw thresholds (or none), the
    initial values it rewinds to, and the mask fixed by :meth:`rewind`.

    Stage 1: :meth:`effective` is ``soft_threshold(weight, threshold)`` (``weight`` itself
    without thresholds). Stage 2, after :meth:`rewind`: ``weight * mask``, so pruned entries get
    zero gradient, stay zero under Adam (with or without weight decay, given a fresh optimizer)
    and the non-zero count never grows. Initial values, mask and stage travel in
    ``state_dict``, so a fresh instance rewinds correctly after ``load_state_dict``.

    Args:
        initial: The array's values at construction, ``[rows, dim]``.
        threshold: Granularity of the raw thresholds (:func:`threshold_shape`); ``None`` for
            none (magnitude pruning). (default: ``None``)
        threshold_init: Value of every raw threshold at construction. (default: ``0.0``)
    """

    def __init__(
        self,
        initial: torch.Tensor,
        threshold: Threshold | None = None,
        threshold_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(initial.clone())
        self.threshold: nn.Parameter | None
        if threshold is None:
            self.register_parameter("threshold", None)
        else:
            shape = threshold_shape(threshold, *initial.shape)
            raw = torch.full(shape, float(threshold_init), dtype=initial.dtype)
            self.threshold = nn.Parameter(raw)
        self.initial: torch.Tensor
        self.mask: torch.Tensor
        self.register_buffer("initial", initial.clone())
        self.register_buffer("mask", torch.ones_like(initial, dtype=torch.bool))
        self.rewound = False

    def effective(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Effective weights (rows ``index`` only, if given).

        Thresholding commutes with gathering rows, so the cheaper order is taken: gather first
        when fewer rows are asked for than the table has (a large PEP table), threshold the
        whole table first otherwise (CERP's small tables under a large batch).
        """
        weight = self.weight
        if index is not None and index.numel() >= weight.shape[0]:
            return gather_rows(self.effective(), index)
        if index is not None:
            weight = gather_rows(weight, index)
        if self.rewound:
            return weight * (self.mask if index is None else self.mask[index])
        raw = self.threshold
        if raw is None:
            return weight
        if index is not None and raw.shape[0] > 1:
            raw = gather_rows(raw, index)
        return soft_threshold(weight, raw)

    @torch.no_grad()
    def rewind(self, mask: torch.Tensor) -> None:
        """Stage 2: weight <- initial values * ``mask``, thresholds off, mask fixed from now on."""
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != {tuple(self.mask.shape)}")
        self.mask.copy_(mask)
        self.weight.copy_(self.initial * self.mask)
        self.rewound = True

    def get_extra_state(self) -> dict[str, Any]:
        return {"rewound": self.rewound}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.rewound = bool(state["rewound"])

    def extra_repr(self) -> str:
        return f"rows={self.weight.shape[0]}, dim={self.weight.shape[1]}, rewound={self.rewound}"


class PrunableEmbedding(CompactEmbedding):
    """A table made of :class:`PrunedTable` arrays (``tables``, by name) in two stages.

    *Stage 1 (prune)*: each array enters :meth:`forward` through its effective weights. The
    trainer watches :meth:`num_nonzero` after every optimizer step and stores
    :meth:`current_masks` the first time it is at most a target (``targets``, descending);
    targets not reached by the end of the stage get :meth:`magnitude_masks`.

    *Stage 2 (retrain)*: :meth:`rewind` resets every array to its initial values times the
    snapshot's mask and switches the thresholds off (see :class:`PrunedTable`).

    Budget measure: :meth:`num_parameters` is :meth:`num_nonzero`; thresholds are not counted.
    :meth:`memory` reports dense float32 storage of the arrays, CSR storage of the effective
    weights, and the thresholds as ``training_only_bytes`` for as long as they exist as
    parameters (also after rewinding). Initial values and masks only serve rewinding and are
    not counted.

    Stage 1 may decay the arrays (``pruning_l2``): soft thresholds alone stop short, because
    the weight decay that raises them stops them near ``sigmoid(0) = 0.5`` and the task answers a
    rising threshold by growing the weights it shrinks; decaying the weights keeps those the
    task does not hold up within reach (``docs/method.md``).

    Args:
        num_entities: Number of ids ``N``.
        dim: Width ``d`` of the full table this table stands in for.
        output_dim: Width of :meth:`forward`'s vectors; ``None`` means ``dim``.
            (default: ``None``)
        targets: Non-zero counts at which stage 1 snapshots a mask. (default: ``()``)
        pruning_l2: ``lambda`` of the stage-1 loss ``0.5 * lambda * sum(W^2) / rows`` over
            every array: Adam's weight decay ``lambda / rows`` written as a loss. BPR is a mean
            over the batch, so the task's gradient on a row shrinks as the table has more rows
            (each row serves fewer entities); dividing by the rows keeps the decay's weight
            against it the same for tables of any size. (default: ``0.0``)
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        output_dim: int | None = None,
        targets: Sequence[int] = (),
        pruning_l2: float = 0.0,
    ) -> None:
        super().__init__(num_entities, dim, output_dim)
        if any(int(t) < 0 for t in targets):
            raise ValueError(f"targets must be non-negative, got {tuple(targets)}")
        if not (math.isfinite(pruning_l2) and pruning_l2 >= 0):
            raise ValueError(f"pruning_l2 must be a finite number >= 0, got {pruning_l2}")
        self.pruning_l2 = float(pruning_l2)
        self.targets: tuple[int, ...] = tuple(sorted({int(t) for t in targets}, reverse=True))
        self.tables = nn.ModuleDict()

    @property
    def rewound(self) -> bool:
        """Whether stage 2 has begun (:meth:`rewind`)."""
        return any(table.rewound for table in self.tables.values())

    @torch.no_grad()
    def effective_weights(self) -> dict[str, torch.Tensor]:
        """The effective (thresholded or masked) arrays, detached, keyed by table name."""
        return {name: table.effective() for name, table in self.tables.items()}

    def num_nonzero(self) -> int:
        """Exact number of non-zeros over the effective arrays."""
        return sum(int(torch.count_nonzero(w)) for w in self.effective_weights().values())

    def num_parameters(self) -> int:
        return self.num_nonzero()

    def current_masks(self) -> dict[str, torch.Tensor]:
        """Non-zero pattern of each effective array now (a snapshot for :meth:`rewind`)."""
        return {name: w != 0 for name, w in self.effective_weights().items()}

    def magnitude_masks(self, target: int) -> dict[str, torch.Tensor]:
        """Keep the ``target`` largest ``|effective weights|`` over all arrays jointly.

        Exactly ``min(target, num_nonzero())`` entries are kept; ties at the cut are broken by
        position. Uses a selection (``kthvalue``), not a full sort.
        """
        weights = self.effective_weights()
        flat = torch.cat([w.abs().reshape(-1) for w in weights.values()])
        keep = torch.zeros_like(flat, dtype=torch.bool)
        count = min(int(target), int(torch.count_nonzero(flat)))
        if count > 0:
            cut = flat.kthvalue(flat.numel() - count + 1).values
            keep = flat > cut
            ties = torch.nonzero(flat == cut).flatten()[: count - int(keep.sum())]
            keep[ties] = True
        parts = keep.split([w.numel() for w in weights.values()])
        return {
            name: p.reshape(w.shape) for (name, w), p in zip(weights.items(), parts, strict=True)
        }

    def rewind(self, masks: dict[str, torch.Tensor]) -> None:
        """Stage 2 for every table: weights <- initial values * mask, thresholds off."""
        if set(masks) != set(self.tables):
            raise ValueError(f"need masks for {tuple(self.tables)}, got {tuple(masks)}")
        for name, table in self.tables.items():
            if masks[name].shape != table.mask.shape:
                raise ValueError(
                    f"mask {name}: shape {tuple(masks[name].shape)} != {tuple(table.mask.shape)}"
                )
        for name, table in self.tables.items():
            table.rewind(masks[name])

    def masks(self) -> dict[str, torch.Tensor]:
        """The fixed mask of each pruned table (all true until :meth:`rewind`), by table name."""
        return {name: table.mask for name, table in self.tables.items()}

    def thresholds(self) -> dict[str, nn.Parameter]:
        """The raw learnable thresholds ``S`` of each table that has them, by table name."""
        return {
            name: table.threshold
            for name, table in self.tables.items()
            if table.threshold is not None
        }

    def threshold_parameters(self) -> list[nn.Parameter]:
        """Raw thresholds, for their own optimizer group (inert after :meth:`rewind`)."""
        return list(self.thresholds().values())

    def pruning_loss(
        self, embeddings: torch.Tensor, epoch: float, decay_scale: float = 1.0
    ) -> torch.Tensor:
        """Extra stage-1 loss on the batch's composed embeddings at ``epoch`` (fractional:
        training samples seen / training set size): here ``0.5 * pruning_l2 * decay_scale *
        sum(W^2) / rows`` over every array (``decay_scale``: stage 1's ramp, see
        :func:`~cerp_core.train.stalled`); zero once rewound."""
        if self.rewound or self.pruning_l2 == 0:
            return embeddings.new_zeros(())
        squares = sum(t.weight.square().sum() / t.weight.shape[0] for t in self.tables.values())
        return 0.5 * self.pruning_l2 * decay_scale * squares

    def memory(self) -> MemoryReport:
        sizes = [
            (w.shape[0], w.numel(), int(torch.count_nonzero(w)))
            for w in self.effective_weights().values()
        ]
        return MemoryReport(
            dense_bytes=sum(entries for _, entries, _ in sizes) * FLOAT_BYTES,
            sparse_bytes=sum(csr_bytes(rows, nnz) for rows, _, nnz in sizes),
            bitmask_bytes=sum(bitmask_bytes(entries, nnz) for _, entries, nnz in sizes),
            training_only_bytes=sum(p.numel() for p in self.threshold_parameters()) * FLOAT_BYTES,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, targets={self.targets}"
