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

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from cerp_core.embeddings.base import module_device

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


def recall_at(hits: torch.Tensor, num_relevant: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Recall@k per user, ``[n, len(ks)]``: test items in the top ``k`` over all test items."""
    return hits.cumsum(1)[:, _cutoffs(hits, ks)].double() / num_relevant.unsqueeze(1)


def ndcg_at(hits: torch.Tensor, num_relevant: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """NDCG@k per user, ``[n, len(ks)]``: discounted hits over the best possible for the user."""
    discounts = _discounts(int(ks.max()), hits.device)
    dcg = (hits * discounts[: hits.shape[1]]).cumsum(1)[:, _cutoffs(hits, ks)]
    return dcg / discounts.cumsum(0)[torch.minimum(num_relevant.unsqueeze(1), ks) - 1]


METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "recall": recall_at,
    "ndcg": ndcg_at,
}
"""Each metric from the batch's hit matrix ``[n, depth]`` (is the ``r``-th ranked item a test
item), the users' test-item counts ``[n]`` and the cut-offs; a new metric is one entry here."""


def _cutoffs(hits: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Column of each cut-off in a ``[n, depth]`` hit matrix (``k`` beyond the depth: the last)."""
    return ks.clamp(max=hits.shape[1]) - 1


def _discounts(depth: int, device: torch.device) -> torch.Tensor:
    """``1 / log2(r + 1)`` for ranks ``r = 1..depth``, in float64."""
    return 1.0 / torch.log2(torch.arange(2, depth + 2, device=device, dtype=torch.float64))


class _HitFinder:
    """The hit matrix of a user batch: its ``[n, num_items]`` scores with the masked (train,
    exclude) items set to ``-inf``, ranked to ``depth``, each ranked item looked up in test."""

    def __init__(
        self, masked: list[_Rows], test: _Rows, depth: int, shape: tuple[int, int]
    ) -> None:
        self.masked, self.test, self.depth = masked, test, depth
        # Reused across batches: only the entries a batch sets are cleared again, which is much
        # cheaper than allocating (and page-faulting) a fresh users x items mask every time.
        self.relevant = torch.zeros(shape, dtype=torch.bool, device=test.indptr.device)

    def __call__(self, scores: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        if scores._base is not None:  # never write into a tensor the caller still holds
            scores = scores.clone()
        for rows in self.masked:
            scores[rows.entries(users)] = -torch.inf
        top_scores, top_items = scores.topk(self.depth, dim=1)
        test_entries = self.test.entries(users)
        self.relevant[test_entries] = True
        # An excluded item only reaches the top k when fewer items remain; it never counts.
        hits = self.relevant.gather(1, top_items) & (top_scores > -torch.inf)
        self.relevant[test_entries] = False
        return hits


def _evaluate_batches(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    train: sp.spmatrix,
    test: sp.spmatrix,
    ks: Sequence[int],
    exclude: sp.spmatrix | None,
    batch_size: int,
) -> dict[str, float]:
    """Mean of each of :data:`METRICS` at each cut-off of ``score_fn(users[n]) -> [n,
    num_items]`` over the test users. ``score_fn``'s result is overwritten unless a view."""
    ks = _check_ks(ks)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    masked = [train] if exclude is None else [train, exclude]
    for matrix in (test, *masked):
        if matrix.shape != train.shape:
            raise ValueError(f"matrix shapes differ: {matrix.shape} and {train.shape}")
    num_items = train.shape[1]
    test_rows = _Rows(test, device)
    num_relevant = test_rows.counts()
    test_users = torch.nonzero(num_relevant).squeeze(1)
    if len(test_users) == 0:
        raise ValueError("test holds no interactions: no user to evaluate")
    depth = min(max(ks), num_items)  # top-k cannot go deeper than the catalogue
    find_hits = _HitFinder(
        [_Rows(m, device) for m in masked],
        test_rows,
        depth,
        (min(batch_size, len(test_users)), num_items),
    )
    ks_t = torch.tensor(ks, device=device)
    sums = {name: torch.zeros(len(ks), device=device, dtype=torch.float64) for name in METRICS}
    for users in test_users.split(batch_size):
        scores = score_fn(users)
        if scores.shape != (len(users), num_items):
            raise ValueError(
                f"scores have shape {tuple(scores.shape)}, expected {(len(users), num_items)}"
            )
        hits = find_hits(scores, users)
        for name, metric in METRICS.items():
            sums[name] += metric(hits, num_relevant[users], ks_t).sum(0)
    return {
        f"{name}@{k}": value
        for name, total in sums.items()
        for k, value in zip(ks, (total / len(test_users)).tolist(), strict=True)
    }


@torch.no_grad()
def ranking_metrics(
    scores: torch.Tensor,
    train: sp.spmatrix,
    test: sp.spmatrix,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    exclude: sp.spmatrix | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Recall@k and NDCG@k of a full score matrix.

    Args:
        scores: ``[num_users, num_items]`` float scores (higher ranks first); not modified.
        train: ``num_users x num_items`` scipy sparse training interactions, never recommended.
        test: Held-out interactions of the same shape; users without any are skipped.
        ks: Cut-offs. (default: ``(5, 10, 20, 50)``)
        exclude: Further interactions to mask out, e.g. validation items when scoring on test.
            (default: ``None``, only ``train``)
        batch_size: Users ranked at once. (default: ``1024``)

    Returns:
        ``{"recall@k": mean, ..., "ndcg@k": mean, ...}`` as Python floats.
    """
    if scores.shape != train.shape:
        raise ValueError(f"scores have shape {tuple(scores.shape)}, train {train.shape}")
    return _evaluate_batches(
        lambda users: scores[users], scores.device, train, test, ks, exclude, batch_size
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    train: sp.spmatrix,
    test: sp.spmatrix,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    exclude: sp.spmatrix | None = None,
    batch_size: int = 1024,
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
        exclude: Further interactions to mask out, e.g. validation items when scoring on test.
            (default: ``None``, only ``train``)
        batch_size: Users ranked at once; bounds memory at ``batch_size x num_items`` scores.
            (default: ``1024``)

    Returns:
        ``{"recall@k": mean, ..., "ndcg@k": mean, ...}`` as Python floats.
    """
    was_training = model.training
    model.eval()
    try:
        return _evaluate_batches(
            model.scorer(), module_device(model), train, test, ks, exclude, batch_size
        )
    finally:
        model.train(was_training)
