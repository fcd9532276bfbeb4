"""NCF-style multilayer perceptron on concatenated user and item embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from cerp_core.embeddings.base import CompactEmbedding
from cerp_core.models.base import Recommender, Scorer

#: Hidden widths of the authors' MLP for ``d = 128`` (input 256): their code uses
#: ``in_dim * 2 ** (layer + 1)`` for ``num_layers = 3``.
PAPER_HIDDEN: tuple[int, ...] = (512, 1024, 2048)


class NCFMLP(Recommender):
    r"""The MLP backbone of the CERP paper: an NCF-style tower over ``[e_u ; e_i]``.

    The concatenated input is divided by its number of non-zero entries, so that users and
    items whose pruned embeddings keep few entries do not get systematically smaller inputs
    (``concat_embs / torch.count_nonzero(concat_embs, dim=1)`` in ``MLP.forward`` of
    ``CERP/models/modules.py`` in github.com/xurong-liang/CERP). An all-zero input (an entity
    pruned away entirely) would divide 0 by 0 there; here the count is clamped to at least 1.
    Every hidden layer is Linear -> BatchNorm -> ReLU -> Dropout (torchfm's
    ``MultiLayerPerceptron``, Xavier-uniform weights), followed by a Linear layer to one score:

    .. math::
        \mathbf{x}_{ui} = \frac{[\mathbf{e}_u ; \mathbf{e}_{N_U + i}]}
            {\max(1, \|[\mathbf{e}_u ; \mathbf{e}_{N_U + i}]\|_0)}, \qquad
        \hat{y}_{ui} = \mathbf{w}^\top \mathrm{MLP}(\mathbf{x}_{ui}) + b

    Reference: He et al., "Neural Collaborative Filtering", WWW 2017; Liang et al., "Learning
    Compact Compositional Embeddings via Regularized Pruning for Recommendation", ICDM 2023.

    Full ranking runs the tower on every (user, item) pair, ``num_users x num_items`` inputs, so
    the default tower is small; pass ``hidden=PAPER_HIDDEN`` for the paper's (with ``d = 128``).

    Args:
        embedding: Any table with ``num_entities == num_users + num_items``.
        num_users: Number of users.
        num_items: Number of items.
        hidden: Widths of the hidden layers. (default: ``(64, 32)``)
        dropout: Dropout probability after each hidden layer. (default: ``0.0``, as the authors)
        chunk_elements: Bound on the ``pairs x widest hidden layer`` activations that
            :meth:`scorer` holds at once; it scores users in chunks below it. (default: ``2**25``)
    """

    def __init__(
        self,
        embedding: CompactEmbedding,
        num_users: int,
        num_items: int,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.0,
        chunk_elements: int = 2**25,
    ) -> None:
        super().__init__(embedding, num_users, num_items)
        widths = [2 * embedding.output_dim, *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in pairwise(widths):
            layers += [
                nn.Linear(width_in, width_out),
                nn.BatchNorm1d(width_out),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
        layers.append(nn.Linear(widths[-1], 1))
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
        self.chunk_elements = chunk_elements
        self._widest = max(hidden, default=1)

    def score_batch(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer0 = self.embedding(self.batch_ids(users, items))
        item_emb = layer0[len(users) :].view(*items.shape, -1)
        user_emb = layer0[: len(users)].unsqueeze(1).expand_as(item_emb)
        x = torch.cat([user_emb, item_emb], dim=-1)
        x = x / torch.count_nonzero(x, dim=-1).clamp_min(1).unsqueeze(-1)
        return self.mlp(x.reshape(-1, x.shape[-1])).view(items.shape), layer0

    def scorer(self) -> Scorer:
        """Score every item without building the ``[n, num_items, 2d]`` input.

        The first layer is linear, so ``W [e_u ; e_i] / c + b = (W_u e_u + W_i e_i) / c + b``
        with ``c = nnz(e_u) + nnz(e_i)``: the item half ``W_i e_i`` is computed once for all
        items and each pair costs an addition instead of a ``2d x hidden[0]`` product.
        """
        first, rest = self.mlp[0], self.mlp[1:]
        w_user, w_item = first.weight.split(self.embedding.output_dim, dim=1)
        item_emb = self.embedding(self.all_item_entities())
        item_part = item_emb @ w_item.t()  # [num_items, hidden[0]]
        item_nnz = torch.count_nonzero(item_emb, dim=-1)
        users_per_chunk = max(1, self.chunk_elements // (self.num_items * self._widest))

        def score(users: torch.Tensor) -> torch.Tensor:
            user_emb = self.embedding(users)
            user_part = user_emb @ w_user.t()  # [n, hidden[0]]
            user_nnz = torch.count_nonzero(user_emb, dim=-1)
            chunks = []
            for part, nnz in zip(
                user_part.split(users_per_chunk), user_nnz.split(users_per_chunk), strict=True
            ):
                count = (nnz[:, None] + item_nnz[None, :]).clamp_min(1).unsqueeze(-1)
                hidden = (part[:, None, :] + item_part[None, :, :]) / count + first.bias
                scores = rest(hidden.view(-1, hidden.shape[-1]))
                chunks.append(scores.view(len(part), self.num_items))
            return torch.cat(chunks)

        return score

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk_elements={self.chunk_elements}"
