"""What every pruned table shares: soft thresholds, masks, snapshots and rewinding."""

from __future__ import annotations

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


class PrunableEmbedding(CompactEmbedding):
    """A table made of pruned ``[rows, dim]`` arrays that goes through two stages.

    *Stage 1 (prune)*: each array ``W`` enters :meth:`forward` as its effective weights,
    ``soft_threshold(W, S)`` when it has learnable raw thresholds ``S`` (``<name>_threshold``),
    else ``W`` itself. The trainer watches :meth:`num_nonzero` after every optimiser step and
    stores :meth:`current_masks` the first time it is at most a target (``targets``, descending);
    targets not reached by the end of the stage get :meth:`magnitude_masks`.

    *Stage 2 (retrain)*: :meth:`rewind` resets ``W`` to its values at construction (the buffer
    ``<name>_initial``) times the snapshot's mask (the buffer ``<name>_mask``) and switches the
    thresholds off; from then on the effective weights are ``W * mask``, so pruned entries get
    zero gradient, stay zero under Adam (with or without weight decay, given a fresh optimiser)
    and the non-zero count never grows. Masks, initial values and the stage travel in
    ``state_dict``, so a fresh instance rewinds correctly after ``load_state_dict``.

    Budget measure: :meth:`num_parameters` is :meth:`num_nonzero`; thresholds are not counted.
    :meth:`memory` reports dense float32 storage of the arrays, CSR storage of the effective
    weights, and the thresholds as ``training_only_bytes`` for as long as they exist as
    parameters (also after rewinding). Initial values and masks only serve rewinding and are
    not counted.

    Args:
        num_entities: Number of ids ``N``.
        dim: Width ``d`` of the full table this table stands in for.
        output_dim: Width of :meth:`forward`'s vectors; ``None`` means ``dim``.
            (default: ``None``)
        targets: Non-zero counts at which stage 1 snapshots a mask. (default: ``()``)
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        output_dim: int | None = None,
        targets: Sequence[int] = (),
    ) -> None:
        super().__init__(num_entities, dim, output_dim)
        if any(int(t) < 0 for t in targets):
            raise ValueError(f"targets must be non-negative, got {tuple(targets)}")
        self.targets: tuple[int, ...] = tuple(sorted({int(t) for t in targets}, reverse=True))
        self.pruned_tables: tuple[str, ...] = ()
        self.rewound = False

    def add_pruned_table(
        self,
        name: str,
        initial: torch.Tensor,
        threshold: Threshold | None = None,
        threshold_init: float = 0.0,
    ) -> None:
        """Register the array ``name`` with its initial copy, an all-true mask and, when
        ``threshold`` is given, raw thresholds ``<name>_threshold`` filled with
        ``threshold_init``."""
        self.register_parameter(name, nn.Parameter(initial.clone()))
        self.register_buffer(f"{name}_initial", initial.clone())
        self.register_buffer(f"{name}_mask", torch.ones_like(initial, dtype=torch.bool))
        if threshold is not None:
            shape = threshold_shape(threshold, *initial.shape)
            raw = torch.full(shape, float(threshold_init), dtype=initial.dtype)
            self.register_parameter(f"{name}_threshold", nn.Parameter(raw))
        self.pruned_tables = (*self.pruned_tables, name)

    def effective_rows(self, name: str, index: torch.Tensor | None = None) -> torch.Tensor:
        """Effective weights of table ``name`` (rows ``index`` only, if given).

        Thresholding commutes with gathering rows, so the cheaper order is taken: gather first
        when fewer rows are asked for than the table has (a large PEP table), threshold the
        whole table first otherwise (CERP's small tables under a large batch).
        """
        weight = self._parameters[name]
        if index is not None and index.numel() >= weight.shape[0]:
            return gather_rows(self.effective_rows(name), index)
        if index is not None:
            weight = gather_rows(weight, index)
        if self.rewound:
            mask = self._buffers[f"{name}_mask"]
            return weight * (mask if index is None else mask[index])
        raw = self._parameters.get(f"{name}_threshold")
        if raw is None:
            return weight
        if index is not None and raw.shape[0] > 1:
            raw = gather_rows(raw, index)
        return soft_threshold(weight, raw)

    @torch.no_grad()
    def effective_weights(self) -> dict[str, torch.Tensor]:
        """The effective (thresholded or masked) arrays, detached, keyed by table name."""
        return {name: self.effective_rows(name) for name in self.pruned_tables}

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

    @torch.no_grad()
    def rewind(self, masks: dict[str, torch.Tensor]) -> None:
        """Stage 2: weights <- initial values * mask, thresholds off, mask fixed from now on."""
        if set(masks) != set(self.pruned_tables):
            raise ValueError(f"need masks for {self.pruned_tables}, got {tuple(masks)}")
        for name in self.pruned_tables:
            weight, mask = self._parameters[name], self._buffers[f"{name}_mask"]
            if masks[name].shape != mask.shape:
                raise ValueError(
                    f"mask {name}: shape {tuple(masks[name].shape)} != {tuple(mask.shape)}"
                )
            mask.copy_(masks[name])
            weight.copy_(self._buffers[f"{name}_initial"] * mask)
        self.rewound = True

    def masks(self) -> dict[str, torch.Tensor]:
        """The fixed mask of each pruned table (all true until :meth:`rewind`), by table name."""
        return {name: self._buffers[f"{name}_mask"] for name in self.pruned_tables}

    def thresholds(self) -> dict[str, nn.Parameter]:
        """The raw learnable thresholds ``S`` of each table that has them, by table name."""
        found = ((name, self._parameters.get(f"{name}_threshold")) for name in self.pruned_tables)
        return {name: raw for name, raw in found if raw is not None}

    def threshold_parameters(self) -> list[nn.Parameter]:
        """Raw thresholds, for their own optimiser group (inert after :meth:`rewind`)."""
        return list(self.thresholds().values())

    def pruning_loss(self, embeddings: torch.Tensor, epoch: float) -> torch.Tensor:
        """Extra stage-1 loss on the batch's composed embeddings at ``epoch`` (fractional:
        training samples seen / training set size); none by default."""
        return embeddings.new_zeros(())

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

    def get_extra_state(self) -> dict[str, Any]:
        return {"rewound": self.rewound}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.rewound = bool(state["rewound"])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, targets={self.targets}, rewound={self.rewound}"
