"""Full-ranking metrics: hand-computed cases, ranx as an independent implementation, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from cerp_core.metrics import evaluate, ranking_metrics

LOG3, LOG5 = math.log2(3), math.log2(5)


def csr(rows: list[list[int]], num_items: int) -> sp.csr_matrix:
    """A binary users x items matrix from per-user item lists."""
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([i for r in rows for i in r], dtype=np.int64)
    return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(rows), num_items))


class FixedScores(nn.Module):
    """A stand-in model that scores from a fixed matrix and records calls of ``scorer``."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores, requires_grad=False)
        self.scorer_modes: list[bool] = []

    def scorer(self):
        self.scorer_modes.append(self.training)
        return lambda users: self.scores[users] * 1.0


# Three users, five items. User 0: train {0}, test {2, 4}; after masking item 0 the ranking is
# 1, 2, 3, 4 -> hits at ranks 2 and 4. User 1: train {4}, test {0, 3}; ranking 3, 2, 1, 0 -> hits
# at ranks 1 and 4. User 2 has no test items and must be skipped.
HAND_SCORES = [[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]]
HAND_TRAIN = csr([[0], [4], [1]], 5)
HAND_TEST = csr([[2, 4], [0, 3], []], 5)
IDEAL_2 = 1 + 1 / LOG3  # two relevant items
HAND_EXPECTED = {
    "recall@1": (0 + 1 / 2) / 2,
    "recall@2": (1 / 2 + 1 / 2) / 2,
    "recall@5": (1 + 1) / 2,
    "ndcg@1": (0 + 1) / 2,
    "ndcg@2": ((1 / LOG3) / IDEAL_2 + 1 / IDEAL_2) / 2,
    "ndcg@5": ((1 / LOG3 + 1 / LOG5) / IDEAL_2 + (1 + 1 / LOG5) / IDEAL_2) / 2,
}


def test_hand_computed_case(device: str) -> None:
    scores = torch.tensor(HAND_SCORES, device=device)
    result = ranking_metrics(scores, HAND_TRAIN, HAND_TEST, ks=(1, 2, 5))
    assert result == pytest.approx(HAND_EXPECTED, abs=1e-12)


def test_ideal_dcg_uses_min_of_k_and_test_size() -> None:
    # Three test items, only the second-ranked one is found: NDCG@2 = (1/log2 3) / (1 + 1/log2 3)
    # (ideal over min(2, 3) = 2 hits), and Recall@2 = 1/3 (divided by |T_u|, not by min(k, |T_u|)).
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    result = ranking_metrics(scores, csr([[]], 5), csr([[1, 3, 4]], 5), ks=(2,))
    assert result == pytest.approx({"recall@2": 1 / 3, "ndcg@2": (1 / LOG3) / IDEAL_2})


def test_training_items_are_excluded() -> None:
    # Without masking, user 0's training item 0 would take rank 1 and push item 2 out of the top 2.
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.2]])
    test = csr([[2]], 4)
    assert ranking_metrics(scores, csr([[0]], 4), test, ks=(1,))["recall@1"] == 1.0
    assert ranking_metrics(scores, csr([[]], 4), test, ks=(1,))["recall@1"] == 0.0


def test_masked_test_item_is_never_a_hit() -> None:
    # Item 1 is both a training and a test item (a split that should not happen): it is masked,
    # so even a ranking of the whole catalogue finds only item 3 of the two.
    result = ranking_metrics(
        torch.tensor([[0.1, 0.9, 0.2, 0.3]]), csr([[1]], 4), csr([[1, 3]], 4), ks=(4,)
    )
    assert result == pytest.approx({"recall@4": 1 / 2, "ndcg@4": 1 / IDEAL_2})


def test_extra_exclude_matrix_is_masked() -> None:
    # Masking user 0's item 1 as well: ranking 2, 3, 4 -> hits at ranks 1 and 3.
    exclude = csr([[1], [], []], 5)
    scores = torch.tensor(HAND_SCORES)
    result = ranking_metrics(scores, HAND_TRAIN, HAND_TEST, ks=(2,), exclude=exclude)
    user0 = {"recall@2": 1 / 2, "ndcg@2": 1 / IDEAL_2}
    user1 = {"recall@2": 1 / 2, "ndcg@2": 1 / IDEAL_2}
    assert result == pytest.approx({k: (user0[k] + user1[k]) / 2 for k in user0})


def test_ties_and_short_catalogue() -> None:
    # All scores tie; k beyond the catalogue still ranks every unmasked item, so recall is 1.
    scores = torch.zeros(3, 5)
    result = ranking_metrics(scores, HAND_TRAIN, HAND_TEST, ks=(4, 10))
    assert result["recall@4"] == result["recall@10"] == 1.0
    assert 0.0 < result["ndcg@4"] <= 1.0


def test_scores_are_not_modified() -> None:
    scores = torch.tensor(HAND_SCORES)
    before = scores.clone()
    ranking_metrics(scores, HAND_TRAIN, HAND_TEST, ks=(2,), batch_size=3)
    assert torch.equal(scores, before)


def test_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        ranking_metrics(torch.zeros(3, 4), HAND_TRAIN, HAND_TEST)
    with pytest.raises(ValueError, match="no user"):
        ranking_metrics(torch.zeros(3, 5), HAND_TRAIN, csr([[], [], []], 5))
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(torch.zeros(3, 5), HAND_TRAIN, HAND_TEST, ks=(0,))


def random_split(
    num_users: int, num_items: int, seed: int
) -> tuple[torch.Tensor, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Random scores without ties and disjoint random train / validation / test sets."""
    rng = np.random.default_rng(seed)
    part = rng.choice(4, size=(num_users, num_items), p=[0.55, 0.2, 0.1, 0.15])
    no_test = rng.random(num_users) < 0.2
    part[no_test] = np.where(part[no_test] == 3, 0, part[no_test])
    train, valid, test = (sp.csr_matrix((part == p).astype(np.float32)) for p in (1, 2, 3))
    scores = torch.from_numpy(rng.permutation(part.size).reshape(part.shape)).float()
    return scores, train, valid, test


@pytest.mark.filterwarnings("ignore:unsafe cast")  # numba, compiling ranx
@pytest.mark.parametrize("use_exclude", [False, True])
@pytest.mark.slow
def test_matches_ranx(use_exclude: bool) -> None:
    ranx = pytest.importorskip("ranx")
    scores, train, valid, test = random_split(40, 30, seed=1)
    exclude = valid if use_exclude else None
    ks = (1, 5, 10, 20)
    masked = (train + valid) if use_exclude else train
    qrels, run = {}, {}
    for u in range(test.shape[0]):
        relevant = test[u].indices
        if len(relevant):
            qrels[f"u{u}"] = {f"i{i}": 1 for i in relevant}
            candidates = np.setdiff1d(np.arange(test.shape[1]), masked[u].indices)
            run[f"u{u}"] = {f"i{i}": float(scores[u, i]) for i in candidates}
    names = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    expected = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), names)
    assert len(qrels) < test.shape[0]  # the users without test items are really skipped
    result = ranking_metrics(scores, train, test, ks=ks, exclude=exclude)
    assert result == pytest.approx({name: float(expected[name]) for name in names}, rel=1e-6)


def test_batched_evaluate_equals_full_matrix(device: str) -> None:
    scores, train, valid, test = random_split(25, 30, seed=2)
    scores = scores.to(device)
    ks = (1, 3, 10)
    full = ranking_metrics(scores, train, test, ks=ks, exclude=valid)
    for batch_size in (1, 3, 25):
        model = FixedScores(scores).train()
        result = evaluate(model, train, test, ks=ks, batch_size=batch_size, exclude=valid)
        assert result == pytest.approx(full, rel=1e-12)
        assert model.scorer_modes == [False]  # one call, in eval mode
        assert model.training  # and the mode is restored afterwards
    batched = ranking_metrics(scores, train, test, ks=ks, exclude=valid, batch_size=4)
    assert batched == pytest.approx(full, rel=1e-12)


def test_each_metric_is_a_function_of_the_hit_matrix() -> None:
    """One user whose ranks 1 and 3 are test items, of 2: the metrics by hand."""
    from cerp_core.metrics import METRICS

    hits = torch.tensor([[True, False, True]])
    recall, ndcg = (
        METRICS[name](hits, torch.tensor([2]), torch.tensor([1, 3])) for name in METRICS
    )
    assert recall.tolist() == [[0.5, 1.0]]
    ideal = 1 + 1 / math.log2(3)
    assert ndcg[0].tolist() == pytest.approx([1.0, (1 + 1 / math.log2(4)) / ideal], abs=1e-12)
