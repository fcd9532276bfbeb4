"""The analyses behind notebook 04's figures, on small hand-made tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cerp_core import analysis
from cerp_core.embeddings.cerp import CERPEmbedding

RNG = np.random.default_rng(0)
NUM_USERS, NUM_ITEMS = 12, 18


def small_cerp(sparsity: float = 0.5) -> CERPEmbedding:
    """A 30-entity CERP table (b = 6) whose masks keep about ``1 - sparsity`` of P and Q."""
    torch.manual_seed(0)
    table = CERPEmbedding(NUM_USERS + NUM_ITEMS, 8, bucket_size=6, threshold_init=-3.0)
    masks = {name: torch.rand(6, 8) > sparsity for name in ("P", "Q")}
    masks["P"][0] = False  # an all-zero row of P, so that some entities lose entries
    table.rewind(masks)
    return table


def test_complementarity_shares_partition_all_pairs() -> None:
    table = small_cerp(0.5)
    stats = analysis.complementarity(table)
    total = stats["both_zero"] + stats["only_P"] + stats["only_Q"] + stats["both"]
    assert total == pytest.approx(1.0)
    composed = table(torch.arange(table.num_entities))
    assert stats["zero_entities"] == int((composed == 0).all(dim=1).sum())


def test_entity_sizes_count_nonzeros_and_bucket_per_kind() -> None:
    frame = analysis.entity_sizes(
        small_cerp(), NUM_USERS, RNG.integers(5, 50, NUM_USERS), RNG.integers(0, 40, NUM_ITEMS)
    )
    table = small_cerp()
    composed = table(torch.arange(table.num_entities))
    assert frame["size"].tolist() == torch.count_nonzero(composed, dim=1).tolist()
    assert (frame["kind"] == "user").sum() == NUM_USERS
    assert set(frame["popularity"]) == {"low", "mid", "high"}


def test_threshold_values_are_sigmoids_of_raw_thresholds() -> None:
    table = CERPEmbedding(NUM_USERS + NUM_ITEMS, 8, bucket_size=6, threshold_init=-3.0)
    values = analysis.threshold_values(table)
    assert set(values) == {"P", "Q"}
    assert values["P"] == pytest.approx(np.full(48, 1 / (1 + np.exp(3.0))))


def test_complementarity_of_hand_made_masks() -> None:
    """Two entities of a 4-entity table (b = 2, d = 2): every share counted by hand."""
    table = CERPEmbedding(4, 2, bucket_size=2, threshold_init=-30.0)
    ones = torch.ones(2, 2)
    table.rewind({"P": torch.tensor([[1, 0], [0, 0]]).bool(), "Q": ones.bool()})
    with torch.no_grad():
        table.tables["P"].weight.copy_(ones)
        table.tables["Q"].weight.copy_(ones)
        table.tables["Q"].weight[1] = (
            0.0  # entities 2 and 3 use Q row 1: zero unless P adds something
        )
    # entity e: P row e % 2, Q row e // 2 -> (0,0) (1,0) (0,1) (1,1)
    stats = analysis.complementarity(table)
    # pairs (entity, dim): e0 both|only_Q, e1 only_Q|only_Q, e2 only_P|zero, e3 zero|zero
    assert stats["both"] == pytest.approx(1 / 8)
    assert stats["only_Q"] == pytest.approx(3 / 8)
    assert stats["only_P"] == pytest.approx(1 / 8)
    assert stats["both_zero"] == pytest.approx(3 / 8)
    assert stats["exclusive"] == pytest.approx(4 / 5)
    # densities P 2/8, Q 4/8: independent masks give (1/4 * 1/2 + 1/2 * 3/4) / (1 - 3/4 * 1/2)
    assert stats["exclusive_chance"] == pytest.approx(0.5 / 0.625)
    assert stats["zero_entities"] == 1 and stats["zero_entity_share"] == 0.25


def test_nonzero_counts_per_row_and_dimension() -> None:
    mask = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=bool)
    counts = analysis.nonzero_counts({"P": mask, "Q": torch.from_numpy(~mask)})
    assert counts["P"]["per_row"].tolist() == [2, 0, 3]
    assert counts["P"]["per_dim"].tolist() == [2, 1, 2]
    assert counts["Q"]["per_row"].tolist() == [1, 3, 0]


def test_chance_exclusive_of_independent_masks() -> None:
    assert analysis.chance_exclusive(0.25, 0.25) == pytest.approx(0.375 / 0.4375)
    assert analysis.chance_exclusive(1.0, 0.5) == pytest.approx(0.5)  # P full: Q adds overlap
    assert analysis.chance_exclusive(0.0, 0.0) == 0.0
    masks = torch.rand(2, 200_000) < torch.tensor([[0.3], [0.1]])  # independent draws
    p, q = masks
    observed = float((p ^ q).sum() / (p | q).sum())
    assert observed == pytest.approx(analysis.chance_exclusive(0.3, 0.1), abs=0.01)


def test_threshold_reach_sets_the_thresholds_against_the_weights() -> None:
    from cerp_core.embeddings import PEPEmbedding

    table = PEPEmbedding(10, 2, threshold="global", threshold_init=0.0)  # sigmoid(0) = 0.5
    with torch.no_grad():
        table.tables["weight"].weight.copy_(-torch.arange(20.0).view(10, 2) / 19)  # |w| 0..1
    reach = analysis.threshold_reach(table)
    assert reach["threshold_p05"] == reach["threshold_p95"] == pytest.approx(0.5)
    assert reach["weight_p50"] == pytest.approx(0.5)  # the median of 0, 1/19, ..., 1
    assert reach["weight_p95"] == pytest.approx(0.95)
    assert reach["weight_p05"] == pytest.approx(0.05)
