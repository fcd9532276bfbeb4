"""Pruned tables: soft thresholds, CERP's composition and regularizer, snapshots, rewinding."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from cerp_core.embeddings import (
    CERPEmbedding,
    MagnitudePrunedEmbedding,
    PEPEmbedding,
    PrunableEmbedding,
    bitmask_bytes,
    composition_indices,
    csr_bytes,
    min_bucket_size,
    soft_threshold,
)
from cerp_core.embeddings.cerp import PAPER_BATCH_ROWS


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def set_(param: torch.Tensor, values) -> None:
    with torch.no_grad():
        param.copy_(torch.as_tensor(values, dtype=param.dtype).reshape(param.shape))


def as_list(tensor: torch.Tensor) -> list[float]:
    return tensor.detach().cpu().flatten().tolist()


def approx(tensor: torch.Tensor):
    return pytest.approx(as_list(tensor), abs=1e-6)


def flat(rows) -> list[float]:
    return [v for row in rows for v in row]


def test_soft_threshold_by_hand():
    weight = torch.tensor([0.5, -0.5, 0.1, -0.05, 0.0])
    out = soft_threshold(weight, torch.tensor(logit(0.2)))
    assert out.tolist() == pytest.approx([0.3, -0.3, 0.0, 0.0, 0.0], abs=1e-7)


# --- PEP ------------------------------------------------------------------------------------


def test_pep_element_wise_forward_counts_and_bytes(device):
    table = PEPEmbedding(3, 2, threshold="element-wise").to(device)
    set_(table.tables["weight"].weight, [[0.5, -0.2], [0.05, -0.6], [0.3, 0.0]])
    set_(
        table.tables["weight"].threshold,
        [[logit(p) for p in row] for row in [[0.1, 0.1], [0.1, 0.5], [0.25, 0.1]]],
    )
    expected = [[0.4, -0.1], [0.0, -0.1], [0.05, 0.0]]
    assert as_list(table(torch.tensor([0, 1, 2], device=device))) == approx(torch.tensor(expected))
    assert as_list(table.effective_weights()["weight"]) == approx(torch.tensor(expected))
    assert table.num_nonzero() == table.num_parameters() == 4
    assert table.current_masks()["weight"].cpu().tolist() == [
        [True, True],
        [False, True],
        [True, False],
    ]
    report = table.memory()
    assert report.dense_bytes == 24
    assert report.sparse_bytes == csr_bytes(3, 4) == 48
    assert report.bitmask_bytes == bitmask_bytes(6, 4) == 17
    assert (report.inference_bytes, report.inference_format) == (17, "bitmask")
    assert report.training_only_bytes == 24
    assert table.threshold_parameters() == [table.tables["weight"].threshold]
    assert table.pruning_loss(torch.ones(2, 2, device=device), epoch=0).item() == 0.0


@pytest.mark.parametrize(
    ("kind", "shape", "raw"),
    [
        ("row-wise", (3, 1), [0.1, 0.5, 0.2]),
        ("dimension-wise", (1, 2), [0.1, 0.15]),
        ("global", (1, 1), [0.1]),
    ],
)
def test_pep_threshold_granularities_gather_the_right_rows(device, kind, shape, raw):
    table = PEPEmbedding(3, 2, threshold=kind).to(device)
    assert tuple(table.tables["weight"].threshold.shape) == shape
    weight = [[0.5, -0.2], [0.05, -0.6], [0.3, 0.0]]
    set_(table.tables["weight"].weight, weight)
    set_(table.tables["weight"].threshold, [logit(p) for p in raw])
    thresholds = torch.tensor(raw).reshape(shape).expand(3, 2)
    w = torch.tensor(weight)
    expected = torch.sign(w) * torch.relu(w.abs() - thresholds)
    ids = torch.tensor([2, 0, 1, 2], device=device)
    assert as_list(table(ids)) == approx(expected[[2, 0, 1, 2]])
    assert table.memory().training_only_bytes == 4 * math.prod(shape)


def test_unknown_threshold_kind_is_rejected():
    with pytest.raises(ValueError, match="threshold"):
        PEPEmbedding(3, 2, threshold="feature")


# --- CERP -----------------------------------------------------------------------------------


def cerp_by_hand(combine: str, threshold: str = "element-wise") -> CERPEmbedding:
    table = CERPEmbedding(7, 2, bucket_size=3, combine=combine, threshold=threshold)
    set_(table.tables["P"].weight, [[1.0, 0.2], [-0.5, 2.0], [0.1, -1.0]])
    set_(table.tables["Q"].weight, [[0.5, 0.5], [-2.0, 0.3], [1.0, 0.0]])
    for raw in table.threshold_parameters():
        with torch.no_grad():
            raw.fill_(logit(0.25))
    return table


P_HAT = [[0.75, 0.0], [-0.25, 1.75], [0.0, -0.75]]
Q_HAT = [[0.25, 0.25], [-1.75, 0.05], [0.75, 0.0]]


@pytest.mark.parametrize("threshold", ["element-wise", "global"])
def test_cerp_add_forward_counts_and_bytes(device, threshold):
    table = cerp_by_hand("add", threshold).to(device)
    assert table.output_dim == 2
    # id 5: P row 5 mod 3 = 2, Q row 5 div ceil(7 / 3) = 1; id 0: rows (0, 0); id 6: rows (0, 2)
    out = table(torch.tensor([5, 0, 6], device=device))
    assert as_list(out) == approx(torch.tensor([[-1.75, -0.7], [1.0, 0.25], [1.5, 0.0]]))
    weights = table.effective_weights()
    assert as_list(weights["P"]) == approx(torch.tensor(P_HAT))
    assert as_list(weights["Q"]) == approx(torch.tensor(Q_HAT))
    assert table.num_nonzero() == table.num_parameters() == 4 + 5
    report = table.memory()
    assert report.dense_bytes == 2 * 3 * 2 * 4
    assert report.sparse_bytes == csr_bytes(3, 4) + csr_bytes(3, 5)
    assert report.bitmask_bytes == bitmask_bytes(6, 4) + bitmask_bytes(6, 5) == 38
    assert report.training_only_bytes == (2 * 3 * 2 * 4 if threshold == "element-wise" else 8)
    assert table.full_parameters == 14


def test_cerp_concat_forward(device):
    table = cerp_by_hand("concat").to(device)
    assert table.output_dim == 4
    out = table(torch.tensor([5, 4], device=device))
    # P first, as in the authors' code; id 4: rows (1, 1)
    assert as_list(out) == approx(
        torch.tensor([flat([P_HAT[2], Q_HAT[1]]), flat([P_HAT[1], Q_HAT[1]])])
    )


def test_cerp_official_defaults():
    torch.manual_seed(0)
    table = CERPEmbedding(100, 8, bucket_size=10)
    assert table.combine == "add"
    assert table.tables["P"].threshold.shape == table.tables["P"].weight.shape == (10, 8)
    assert torch.all(table.tables["P"].threshold == -100.0) and torch.all(
        table.tables["Q"].threshold == -100.0
    )
    bound = math.sqrt(6 / (10 + 8))  # Xavier uniform, as in com_embedding.py
    assert (
        table.tables["P"].weight.abs().max() <= bound
        and table.tables["P"].weight.abs().max() > 0.8 * bound
    )
    assert table.num_nonzero() == 2 * 10 * 8
    # the paper's gamma_0 = 1 summed over its 70-row batches is 70 as a per-row mean
    assert (table.regularizer_weight, table.regularizer_decay) == (PAPER_BATCH_ROWS, 0.5)
    assert table.regularizer_sharpness == 100.0


def test_cerp_pairs_are_unique_iff_quotient_fits():
    for n in range(1, 90):
        for b in range(1, n + 3):
            rows_p, rows_q = composition_indices(torch.arange(n), n, b)
            distinct = len(set(zip(rows_p.tolist(), rows_q.tolist(), strict=True)))
            assert (distinct == n) == (math.ceil(n / b) <= b), (n, b)
            if math.ceil(n / b) <= b:
                assert rows_q.max() < b
        smallest = min_bucket_size(n)
        assert math.ceil(n / smallest) <= smallest
        assert smallest == 1 or math.ceil(n / (smallest - 1)) > smallest - 1
    assert min_bucket_size(70839) == 267


def test_cerp_rejects_bucket_sizes_with_shared_pairs():
    with pytest.raises(ValueError, match="smallest valid bucket size is 267"):
        CERPEmbedding(70839, 4, bucket_size=200)
    with pytest.raises(ValueError, match="smallest valid bucket size is 4"):
        CERPEmbedding(10, 4, bucket_size=3)
    with pytest.raises(ValueError):
        CERPEmbedding(10, 4, bucket_size=0)
    with pytest.raises(ValueError):
        CERPEmbedding(10, 4, bucket_size=4, combine="mult")
    CERPEmbedding(10, 4, bucket_size=4)


def test_cerp_regularizer_value_and_gradient(device):
    """A per-row mean of ``sum_k tanh(K e_k)^2``, decayed continuously per epoch of samples."""
    table = CERPEmbedding(4, 2, bucket_size=2, regularizer_weight=1.0, regularizer_decay=0.5)
    table.to(device)
    values = [[0.01, -0.02], [0.0, 0.5]]
    embeddings = torch.tensor(values, device=device, requires_grad=True)
    loss = table.pruning_loss(embeddings, epoch=2.5)  # gamma = 1 * 0.5^2.5
    gamma, k, rows = 0.5**2.5, 100.0, 2
    expected = -gamma * sum(math.tanh(k * v) ** 2 for v in flat(values)) / rows
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    grads = [
        -gamma * 2 * math.tanh(k * v) * (1 - math.tanh(k * v) ** 2) * k / rows for v in flat(values)
    ]
    assert embeddings.grad.cpu().flatten().tolist() == pytest.approx(grads, rel=1e-5, abs=1e-9)


def test_cerp_regularizer_does_not_grow_with_the_batch():
    """The same rows, repeated into a 100 times larger batch, give the same loss: the weight
    means the same at the paper's 70 rows and at the suite's thousands."""
    table = CERPEmbedding(4, 2, bucket_size=2)
    rows = torch.tensor([[0.01, -0.02], [0.0, 0.5], [0.003, 0.2]])
    small, large = table.pruning_loss(rows, 0), table.pruning_loss(rows.repeat(100, 1), 0)
    torch.testing.assert_close(small, large)
    summed_like_the_paper = -1.0 * torch.tanh(100 * rows).square().sum()
    torch.testing.assert_close(small, summed_like_the_paper * PAPER_BATCH_ROWS / len(rows))


def test_cerp_without_regularizer_and_after_rewind_has_no_pruning_loss():
    embeddings = torch.full((3, 2), 0.3)
    assert CERPEmbedding(4, 2, 2, regularizer_weight=0.0).pruning_loss(embeddings, 0).item() == 0
    table = CERPEmbedding(4, 2, 2)
    assert table.pruning_loss(embeddings, 0).item() < 0
    table.rewind(table.current_masks())
    assert table.pruning_loss(embeddings, 0).item() == 0


# --- snapshots, magnitude masks, rewinding --------------------------------------------------


def test_magnitude_masks_keep_exactly_the_largest_with_ties_by_position():
    table = MagnitudePrunedEmbedding(2, 3, targets=(2,))
    set_(table.tables["weight"].weight, [[3.0, -2.0, 2.0], [2.0, 0.0, 1.0]])
    assert table.threshold_parameters() == []
    assert table.num_nonzero() == 5

    def kept(target):
        return table.magnitude_masks(target)["weight"].tolist()

    assert kept(2) == [[True, True, False], [False, False, False]]
    assert kept(3) == [[True, True, True], [False, False, False]]
    assert kept(10) == [[True, True, True], [True, False, True]]  # only the 5 non-zeros
    assert kept(0) == [[False] * 3, [False] * 3]


def test_magnitude_masks_rank_both_cerp_tables_jointly():
    table = CERPEmbedding(4, 2, bucket_size=2)
    set_(table.tables["P"].weight, [[0.9, 0.1], [0.3, -0.8]])
    set_(table.tables["Q"].weight, [[-0.5, 0.2], [0.7, 0.05]])
    masks = table.magnitude_masks(3)
    assert masks["P"].tolist() == [[True, False], [False, True]]
    assert masks["Q"].tolist() == [[False, False], [True, False]]


def run_stage_one(table: PrunableEmbedding, steps: int) -> dict[int, dict[str, torch.Tensor]]:
    """What the trainer does: snapshot each target the first time it is reached."""
    device = next(table.parameters()).device
    thresholds = table.threshold_parameters()
    weights = [p for p in table.parameters() if all(p is not t for t in thresholds)]
    optimizer = torch.optim.Adam(
        [{"params": weights}, {"params": thresholds, "lr": 0.1, "weight_decay": 1e-2}], lr=1e-2
    )
    generator = torch.Generator().manual_seed(0)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    for epoch in range(steps):
        ids = torch.randint(0, table.num_entities, (16,), generator=generator).to(device)
        embeddings = table(ids)
        loss = (embeddings - 0.05).square().sum() + table.pruning_loss(embeddings, epoch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        nonzero = table.num_nonzero()
        for target in table.targets:
            if target not in snapshots and nonzero <= target:
                snapshots[target] = table.current_masks()
                assert sum(int(m.sum()) for m in snapshots[target].values()) == nonzero
    return snapshots


@pytest.mark.parametrize(
    ("make", "extra", "targets"),
    [(PEPEmbedding, {}, (150, 100, 60, 1)), (CERPEmbedding, {"bucket_size": 10}, (60, 40, 20, 1))],
)
def test_snapshots_and_rewinding_never_exceed_their_targets(device, make, extra, targets):
    torch.manual_seed(0)
    table = make(50, 4, targets=targets[::-1], threshold_init=-4.0, **extra).to(device)
    assert table.targets == targets
    snapshots = run_stage_one(table, steps=40)
    assert snapshots, "the rising thresholds should reach at least the largest target"
    for target in table.targets:
        candidates = [table.magnitude_masks(target)]
        candidates += [snapshots[target]] if target in snapshots else []
        for masks in candidates:
            assert sum(int(m.sum()) for m in masks.values()) <= target
            retrained = copy.deepcopy(table)
            retrained.rewind(masks)
            assert retrained.num_parameters() <= target


@pytest.mark.parametrize("kind", ["pep", "magprune", "cerp"])
def test_rewind_fixes_masks_and_gradients_reach_only_kept_entries(device, kind):
    torch.manual_seed(0)
    table: PrunableEmbedding = {
        "pep": lambda: PEPEmbedding(30, 4, threshold_init=-4.0),
        "magprune": lambda: MagnitudePrunedEmbedding(30, 4),
        "cerp": lambda: CERPEmbedding(30, 4, bucket_size=6, threshold_init=-4.0),
    }[kind]().to(device)
    with torch.no_grad():  # pretend stage 1 trained the weights
        for part in table.tables.values():
            part.weight.mul_(torch.rand_like(part.weight) * 2)
    masks = table.magnitude_masks(table.num_nonzero() // 2)
    table.rewind(masks)
    for name, part in table.tables.items():
        assert torch.equal(part.weight, part.initial * masks[name])
    fixed = {name: m.clone() for name, m in table.current_masks().items()}
    assert all(torch.equal(fixed[n], masks[n]) for n in masks)
    with torch.no_grad():  # thresholds are off: even a huge threshold changes nothing
        before = table(torch.arange(30, device=device))
        for raw in table.threshold_parameters():
            raw.fill_(10.0)
        assert torch.equal(table(torch.arange(30, device=device)), before)

    optimizer = torch.optim.Adam(table.parameters(), lr=0.05, weight_decay=0.1)
    for _ in range(5):
        loss = (table(torch.arange(30, device=device)) - 1.0).square().sum()
        optimizer.zero_grad()
        loss.backward()
        for name, part in table.tables.items():
            assert torch.all(part.weight.grad[~masks[name]] == 0)
            assert torch.any(part.weight.grad[masks[name]] != 0)
        optimizer.step()
    for name, part in table.tables.items():
        assert torch.all(part.weight[~masks[name]] == 0)
        assert not torch.equal(part.weight, part.initial * masks[name])
        assert torch.equal(part.mask, masks[name])
    assert table.num_nonzero() <= sum(int(m.sum()) for m in masks.values())


def test_rewind_validates_masks_and_state_dict_carries_the_stage():
    torch.manual_seed(0)
    table = CERPEmbedding(30, 4, bucket_size=6, targets=(20,))
    masks = table.magnitude_masks(20)
    with pytest.raises(ValueError):
        table.rewind({"P": masks["P"]})
    with pytest.raises(ValueError):
        table.rewind({"P": masks["P"], "Q": masks["Q"][:3]})
    table.rewind(masks)
    fresh = CERPEmbedding(30, 4, bucket_size=6, targets=(20,))
    assert not fresh.rewound
    fresh.load_state_dict(table.state_dict())
    assert fresh.rewound
    ids = torch.arange(30)
    assert torch.equal(fresh(ids), table(ids))
    assert fresh.num_parameters() == table.num_parameters() <= 20
    assert fresh.memory() == table.memory()
    assert fresh.memory().training_only_bytes == 2 * 6 * 4 * 4  # thresholds still exist


def test_masks_and_thresholds_are_exposed_by_table_name():
    table = CERPEmbedding(10, 4, bucket_size=4, threshold_init=-3.0)
    assert set(table.masks()) == set(table.thresholds()) == {"P", "Q"}
    assert all(bool(m.all()) for m in table.masks().values())
    assert all(float(s.max()) == -3.0 for s in table.thresholds().values())
    assert table.threshold_parameters() == list(table.thresholds().values())
    masks = {name: torch.zeros_like(mask) for name, mask in table.masks().items()}
    masks["P"][0, 0] = True
    table.rewind(masks)
    assert int(table.masks()["P"].sum()) == 1 and int(table.masks()["Q"].sum()) == 0
    assert MagnitudePrunedEmbedding(10, 4).thresholds() == {}
