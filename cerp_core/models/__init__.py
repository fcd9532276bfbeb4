"""Backbones that score (user, item) pairs from any compact embedding table."""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp

from cerp_core.data.interactions import Interactions
from cerp_core.embeddings.base import CompactEmbedding
from cerp_core.models.base import Recommender, Scorer
from cerp_core.models.lightgcn import LightGCN, normalized_adjacency
from cerp_core.models.mf import MF
from cerp_core.models.mlp import NCFMLP, PAPER_HIDDEN
from cerp_core.models.popularity import Popularity

#: Backbone name -> class, so that configurations and sweeps can name a backbone.
MODELS: dict[str, type[Recommender]] = {"mf": MF, "mlp": NCFMLP, "lightgcn": LightGCN}


def make_model(
    name: str,
    embedding: CompactEmbedding,
    data: Interactions | sp.spmatrix | tuple[int, int],
    **kwargs: Any,
) -> Recommender:
    """Build the backbone called ``name`` (a key of :data:`MODELS`) over ``embedding``.

    Args:
        name: ``"mf"``, ``"mlp"`` or ``"lightgcn"``.
        embedding: Table with ``num_entities == num_users + num_items``.
        data: The data set (its ``train`` split is used), the ``num_users x num_items``
            training interactions (scipy sparse), or just ``(num_users, num_items)`` for
            backbones that need no graph (MF, MLP).
        **kwargs: Further constructor arguments of the backbone (``num_layers``, ``hidden``, ...).
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    if isinstance(data, tuple):
        if cls.needs_train:
            raise TypeError(f"model {name!r} needs the training interactions, not only counts")
        num_users, num_items = data
    else:
        train = data.train if isinstance(data, Interactions) else data
        num_users, num_items = train.shape
        if cls.needs_train:
            kwargs["train"] = train
    return cls(embedding, num_users, num_items, **kwargs)


__all__ = [
    "LightGCN",
    "MF",
    "MODELS",
    "NCFMLP",
    "PAPER_HIDDEN",
    "Popularity",
    "Recommender",
    "Scorer",
    "make_model",
    "normalized_adjacency",
]
