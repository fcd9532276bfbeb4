"""The interface every backbone implements: score (user, item) pairs from any embedding table."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from cerp_core.embeddings.base import CompactEmbedding, module_device

Scorer = Callable[[torch.Tensor], torch.Tensor]


class Recommender(nn.Module):
    """A backbone that turns a :class:`CompactEmbedding` into (user, item) scores.

    Users and items share the embedding's id space: user ``u`` is entity ``u`` and item ``i`` is
    entity ``num_users + i``. Callers pass *user* and *item* ids; the model adds the offset.

    Args:
        embedding: Any table with ``num_entities == num_users + num_items``.
        num_users: Number of users.
        num_items: Number of items.
    """

    #: Whether the constructor takes the training interactions (``train=``), as graph models do.
    needs_train: ClassVar[bool] = False

    def __init__(self, embedding: CompactEmbedding, num_users: int, num_items: int) -> None:
        super().__init__()
        if num_users <= 0 or num_items <= 0:
            raise ValueError(f"need num_users, num_items > 0, got {num_users}, {num_items}")
        if embedding.num_entities != num_users + num_items:
            raise ValueError(
                f"embedding has {embedding.num_entities} entities, but num_users + num_items = "
                f"{num_users} + {num_items} = {num_users + num_items}"
            )
        self.embedding = embedding
        self.num_users = num_users
        self.num_items = num_items

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (that of the embedding table)."""
        return module_device(self)

    def item_entities(self, items: torch.Tensor) -> torch.Tensor:
        """Entity ids of item ids (any shape)."""
        return items + self.num_users

    def all_item_entities(self) -> torch.Tensor:
        """Entity ids of every item, ``[num_items]``, on the model's device."""
        return torch.arange(self.num_users, self.num_users + self.num_items, device=self.device)

    def batch_ids(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Entity ids of a batch: ``users[B]``, then ``items[B, k]`` flattened, ``[B + B * k]``."""
        return torch.cat([users, self.item_entities(items).reshape(-1)])

    def score_batch(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``[B, k]`` of ``users[b]`` for ``items[b, j]``, and the batch's layer-0 rows.

        The layer-0 rows are the table's embeddings of :meth:`batch_ids` (``[B + B * k,
        output_dim]``: one row per batch user, once per row however many items it is paired
        with, then one per item, as in the authors' code), the input of CERP's pruning loss and
        of the L2 penalty. Returning both lets training look the table up once per step.
        """
        raise NotImplementedError  # pragma: no cover - interface

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of ``users[b]`` for ``items[b, j]``: ``[B]`` and ``[B, k]`` ids -> ``[B, k]``."""
        return self.score_batch(users, items)[0]

    def scorer(self) -> Scorer:
        """Return ``f(users[n]) -> [n, num_items]`` scores; the work all users share is done once.

        Call it again after the parameters change: the returned function holds precomputed
        embeddings.
        """
        raise NotImplementedError  # pragma: no cover - interface

    def extra_repr(self) -> str:
        return f"num_users={self.num_users}, num_items={self.num_items}"
