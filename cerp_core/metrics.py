r"""Full-ranking Recall@k and NDCG@k, the LightGCN / CERP convention, computed in user batches.

For every user ``u`` with at least one test item, all items are ranked except ``u``'s training
items (and, when evaluating on test, its validation items), and with ``T_u`` its test items:

.. math::
    \mathrm{Recall@}k = \frac{|\mathrm{top}_k(u) \cap T_u|}{|T_u|}, \qquad
    \mathrm{NDCG@}k = \frac{\sum_{r=1}^{k} [\mathrm{item}_r \in T_u] / \log_2(r + 1)}
                           {\sum_{r=1}^{\min(k, |T_u|)} 1 / \log_2(r + 1)}

Recall divides by ``|T_u|``, not by ``min(k, |T_u|)``. Both are averaged over those users; users
without test items are skipped. Scores are never materialised for all users at once: each batch
costs one ``[n, num_items]`` score block and one top-k over it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)


class _Rows:
    """The non-zero pattern of a scipy sparse matrix on a torch device, gathered per user batch."""

    def __init__(self, matrix: sp.spmatrix, device: torch.device) -> None:
        matrix = sp.csr_matrix(matrix, copy=True)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        self.indptr = torch.from_numpy(matrix.indptr.astype(np.int64)).to(device)
        self.indices = torch.from_numpy(matrix.indices.astype(np.int64)).to(device)

    def counts(self) -> torch.Tensor:
        """Stored entries per row, ``[num_rows]``."""
        return self.indptr[1:] - self.indptr[:-1]

    def entries(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positions in users, columns)`` of every stored entry in the rows ``users[n]``."""
        starts = self.indptr[users]
        counts = self.indptr[users + 1] - starts
        positions = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        # Entry j of the batch lies at indptr[user] + (j - first entry of that user in the batch).
        shift = starts - (torch.cumsum(counts, 0) - counts)
        offsets = torch.arange(len(positions), device=users.device) + shift[positions]
        return positions, self.indices[offsets]


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def _evaluate_batches(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    train: sp.spmatrix,
    test: sp.spmatrix,
    ks: Sequence[int],
    batch_size: int,
    exclude: sp.spmatrix | None,
) -> dict[str, float]:
    """Mean Recall@k and NDCG@k of ``score_fn(users[n]) -> [n, num_items]`` over test users.

    ``score_fn``'s result is overwritten (excluded items set to ``-inf``) unless it is a view.
    """
    ks = _check_ks(ks)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    masked = [train] if exclude is None else [train, exclude]
    for matrix in (test, *masked):
        if matrix.shape != train.shape:
            raise ValueError(f"matrix shapes differ: {matrix.shape} and {train.shape}")
    num_items = train.shape[1]
    masked_rows = [_Rows(matrix, device) for matrix in masked]
    test_rows = _Rows(test, device)
    num_relevant = test_rows.counts()
    test_users = torch.nonzero(num_relevant).squeeze(1)
    if len(test_users) == 0:
        raise ValueError("test holds no interactions: no user to evaluate")

    depth = min(max(ks), num_items)  # top-k cannot go deeper than the catalogue
    ks_t = torch.tensor(ks, device=device)
    cutoffs = ks_t.clamp(max=depth) - 1
    discounts = 1.0 / torch.log2(torch.arange(2, max(ks) + 2, device=device, dtype=torch.float64))
    ideal_dcg = discounts.cumsum(0)
    recall_sum = torch.zeros(len(ks), device=device, dtype=torch.float64)
    ndcg_sum = torch.zeros_like(recall_sum)
    # Reused across batches: only the entries a batch sets are cleared again, which is much
    # cheaper than allocating (and page-faulting) a fresh users x items mask every time.
    relevant = torch.zeros(
        min(batch_size, len(test_users)), num_items, dtype=torch.bool, device=device
    )

    for users in test_users.split(batch_size):
        scores = score_fn(users)
        if scores.shape != (len(users), num_items):
            raise ValueError(
                f"scores have shape {tuple(scores.shape)}, expected {(len(users), num_items)}"
            )
        if scores._base is not None:  # never write into a tensor the caller still holds
            scores = scores.clone()
        for rows in masked_rows:
            scores[rows.entries(users)] = -torch.inf
        top_scores, top_items = scores.topk(depth, dim=1)
        test_entries = test_rows.entries(users)
        relevant[test_entries] = True
        # An excluded item only reaches the top k when fewer items remain; it never counts.
        hits = relevant.gather(1, top_items) & (top_scores > -torch.inf)
        relevant[test_entries] = False
        n_rel = num_relevant[users].unsqueeze(1)
        recall_sum += (hits.cumsum(1)[:, cutoffs].double() / n_rel).sum(0)
        dcg = (hits * discounts[:depth]).cumsum(1)[:, cutoffs]
        ndcg_sum += (dcg / ideal_dcg[torch.minimum(n_rel, ks_t) - 1]).sum(0)

    num_users = len(test_users)
    recall, ndcg = (recall_sum / num_users).tolist(), (ndcg_sum / num_users).tolist()
    return {
        **{f"recall@{k}": value for k, value in zip(ks, recall, strict=True)},
        **{f"ndcg@{k}": value for k, value in zip(ks, ndcg, strict=True)},
    }


@torch.no_grad()
def ranking_metrics(
    scores: torch.Tensor,
    train: sp.spmatrix,
    test: sp.spmatrix,
    ks: Sequence[int] = (20,),
    exclude: sp.spmatrix | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Recall@k and NDCG@k of a full score matrix.

    Args:
        scores: ``[num_users, num_items]`` float scores (higher ranks first); not modified.
        train: ``num_users x num_items`` scipy sparse training interactions, never recommended.
        test: Held-out interactions of the same shape; users without any are skipped.
        ks: Cut-offs. (default: ``(20,)``)
        exclude: Further interactions to mask out, e.g. validation items when scoring on test.
            (default: ``None``, only ``train``)
        batch_size: Users ranked at once. (default: ``1024``)

    Returns:
        ``{"recall@k": mean, ..., "ndcg@k": mean, ...}`` as Python floats.
    """
    if scores.shape != train.shape:
        raise ValueError(f"scores have shape {tuple(scores.shape)}, train {train.shape}")
    return _evaluate_batches(
        lambda users: scores[users], scores.device, train, test, ks, batch_size, exclude
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    train: sp.spmatrix,
    test: sp.spmatrix,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    exclude: sp.spmatrix | None = None,
) -> dict[str, float]:
    """Recall@k and NDCG@k of a model, ranking ``batch_size`` users at a time.

    The model is put in eval mode (BatchNorm, dropout) for the call and restored afterwards;
    :meth:`~cerp_core.models.Recommender.scorer` is called once, so shared work such as
    LightGCN's propagation happens once.

    Args:
        model: Module with parameters or buffers and ``scorer() -> f(users[n]) -> [n, num_items]``.
        train: ``num_users x num_items`` scipy sparse training interactions, never recommended.
        test: Held-out interactions of the same shape; users without any are skipped.
        ks: Cut-offs. (default: ``(5, 10, 20, 50)``)
        batch_size: Users ranked at once; bounds memory at ``batch_size x num_items`` scores.
            (default: ``1024``)
        exclude: Further interactions to mask out, e.g. validation items when scoring on test.
            (default: ``None``, only ``train``)

    Returns:
        ``{"recall@k": mean, ..., "ndcg@k": mean, ...}`` as Python floats.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(itertools.chain(model.parameters(), model.buffers())).device
        return _evaluate_batches(model.scorer(), device, train, test, ks, batch_size, exclude)
    finally:
        model.train(was_training)
