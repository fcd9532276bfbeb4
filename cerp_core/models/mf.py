"""Matrix factorisation: the simplest backbone."""

from __future__ import annotations

import torch

from cerp_core.models.base import Recommender, Scorer


class MF(Recommender):
    r"""Matrix factorisation scored by the inner product of user and item embeddings.

    With no parameters besides the table, MF shows most directly how much a compact table loses
    against the full one (Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit
    Feedback", UAI 2009, trained it with the BPR loss used here):

    .. math::
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_{N_U + i}

    Args:
        embedding: Any table with ``num_entities == num_users + num_items``.
        num_users: Number of users.
        num_items: Number of items.
    """

    def score_batch(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer0 = self.embedding(self.batch_ids(users, items))
        user_emb = layer0[: len(users)]  # [B, d]
        item_emb = layer0[len(users) :].view(*items.shape, -1)  # [B, k, d]
        return torch.einsum("bd,bkd->bk", user_emb, item_emb), layer0

    def scorer(self) -> Scorer:
        item_emb_t = self.embedding(self.all_item_entities()).t()  # [d, num_items]
        return lambda users: self.embedding(users) @ item_emb_t
