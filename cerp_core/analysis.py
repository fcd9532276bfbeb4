"""Analyses of trained tables, usable without drawing: what each figure of notebook 04 shows.

- :func:`entity_sizes`: non-zeros of every entity's composed vector, with its kind (user /
  item), training interactions and popularity bucket;
- :func:`threshold_values`: the learnt thresholds ``sigmoid(s)`` of each pruned table;
- :func:`nonzero_counts`: non-zeros per row and per dimension of each mask;
- :func:`complementarity`: how CERP's P and Q share the non-zeros of the composed vectors,
  against :func:`chance_exclusive`, what independent masks would give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from cerp_core.embeddings.base import module_device
from cerp_core.embeddings.cerp import CERPEmbedding, composition_indices
from cerp_core.embeddings.pruning import PrunableEmbedding

KIND_ORDER = ("user", "item")
ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def as_numpy(values: ArrayLike) -> np.ndarray:
    """``values`` as a NumPy array (tensors detached and moved to the CPU)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


@torch.no_grad()
def entity_sizes(
    embedding: torch.nn.Module,
    num_users: int,
    user_activity: ArrayLike,
    item_popularity: ArrayLike,
    buckets: int = 3,
    batch_size: int = 65536,
) -> pd.DataFrame:
    """Per-entity embedding size: non-zeros of each composed vector, with the entity's kind
    (user / item), training interactions and popularity bucket (quantiles within its kind)."""
    device = module_device(embedding)
    ids = torch.arange(embedding.num_entities, device=device)
    sizes = torch.cat(
        [torch.count_nonzero(embedding(chunk), dim=1) for chunk in ids.split(batch_size)]
    )
    counts = np.concatenate([as_numpy(user_activity), as_numpy(item_popularity)])
    frame = pd.DataFrame(
        {
            "entity": np.arange(len(counts)),
            "kind": np.where(np.arange(len(counts)) < num_users, "user", "item"),
            "interactions": counts,
            "size": sizes.cpu().numpy(),
        }
    )
    labels = ["low", "mid", "high"] if buckets == 3 else [f"Q{i + 1}" for i in range(buckets)]
    bucket = np.empty(len(frame), dtype=object)
    for kind in KIND_ORDER:
        rows = (frame["kind"] == kind).to_numpy()
        ranks = frame.loc[rows, "interactions"].rank(method="first")
        bucket[rows] = pd.qcut(ranks, buckets, labels=labels).astype(str)
    frame["popularity"] = pd.Categorical(bucket, categories=labels, ordered=True)
    return frame


@torch.no_grad()
def threshold_values(embedding: PrunableEmbedding) -> dict[str, np.ndarray]:
    """Learnt thresholds ``sigmoid(S)`` of each pruned table (flattened), where it has any."""
    return {
        name: torch.sigmoid(raw).detach().cpu().numpy().ravel()
        for name, raw in embedding.thresholds().items()
    }


@torch.no_grad()
def threshold_reach(embedding: PrunableEmbedding) -> dict[str, float]:
    """Where the thresholds stand against the weights they must catch, over every table: the
    5th, 50th and 95th percentiles of ``sigmoid(S)`` (``threshold_p05`` ...) and of ``|W|``
    (``weight_p05`` ...). An entry above the thresholds is kept; decay stops ``sigmoid(S)``
    near 0.5, so weights above that are out of reach (``docs/method.md``)."""
    levels = torch.cat([torch.sigmoid(raw).flatten() for raw in embedding.thresholds().values()])
    weights = torch.cat([part.weight.abs().flatten() for part in embedding.tables.values()])
    quantiles = (0.05, 0.5, 0.95)
    reach = {}
    for name, values in (("threshold", levels), ("weight", weights)):
        found = values.float().cpu().quantile(torch.tensor(quantiles)).tolist()
        reach.update(
            {f"{name}_p{round(q * 100):02d}": v for q, v in zip(quantiles, found, strict=True)}
        )
    return reach


def nonzero_counts(masks: Mapping[str, ArrayLike]) -> dict[str, dict[str, np.ndarray]]:
    """Per mask (rows x dimensions): the kept entries of each row (``per_row``) and the rows
    that keep each dimension (``per_dim``)."""
    counts = {}
    for name, mask in masks.items():
        kept = as_numpy(mask).astype(bool)
        counts[name] = {"per_row": kept.sum(axis=1), "per_dim": kept.sum(axis=0)}
    return counts


def chance_exclusive(p_density: float, q_density: float) -> float:
    """The exclusive share if the masks of P and Q were independent: a pair is non-zero in P
    with probability ``p_density`` and in Q with ``q_density``, so the exclusive share is
    ``(p (1 - q) + q (1 - p)) / (1 - (1 - p) (1 - q))``. An ``exclusive`` above it means the
    pruning made P and Q complementary; at or below it, no more than chance does."""
    either = 1.0 - (1.0 - p_density) * (1.0 - q_density)
    if not either:
        return 0.0
    return (p_density * (1.0 - q_density) + q_density * (1.0 - p_density)) / either


@torch.no_grad()
def complementarity(embedding: CERPEmbedding) -> dict[str, float]:
    """How P and Q share the work in the composed vectors of every entity.

    Over all (entity, dimension) pairs: shares where both are zero, only P is non-zero, only
    Q, or both; ``exclusive`` = (only P + only Q) / (at least one non-zero), and
    ``exclusive_chance``, what masks of the same densities drawn independently would give
    (:func:`chance_exclusive`); and the entities whose composed vector is entirely zero
    (``zero_entities``, ``zero_entity_share``).
    """
    weights = embedding.effective_weights()
    ids = torch.arange(embedding.num_entities, device=weights["P"].device)
    rows_p, rows_q = composition_indices(ids, embedding.num_entities, embedding.bucket_size)
    p, q = weights["P"][rows_p] != 0, weights["Q"][rows_q] != 0
    shares = {
        "both_zero": float((~p & ~q).float().mean()),
        "only_P": float((p & ~q).float().mean()),
        "only_Q": float((~p & q).float().mean()),
        "both": float((p & q).float().mean()),
    }
    some = 1.0 - shares["both_zero"]
    zero = int((~(p | q)).all(dim=1).sum())
    return {
        **shares,
        "exclusive": (shares["only_P"] + shares["only_Q"]) / some if some else 0.0,
        "exclusive_chance": chance_exclusive(
            shares["only_P"] + shares["both"], shares["only_Q"] + shares["both"]
        ),
        "zero_entities": zero,
        "zero_entity_share": zero / embedding.num_entities,
    }
