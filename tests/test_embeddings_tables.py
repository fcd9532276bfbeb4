"""Unpruned tables: hand-computed forward values, parameter counts and bytes."""

from __future__ import annotations

import math

import pytest
import torch

from cerp_core.embeddings import (
    FullEmbedding,
    HashEmbedding,
    MemoryReport,
    QREmbedding,
    TTEmbedding,
    bitmask_bytes,
    csr_bytes,
)
from cerp_core.embeddings.tt import factor_dim, factor_rows, max_useful_rank, tt_parameters


def ids_on(device: str, *values: int) -> torch.Tensor:
    return torch.tensor(values, device=device)


def test_memory_report_picks_the_cheapest_format():
    report = MemoryReport(dense_bytes=100, sparse_bytes=60, bitmask_bytes=70, training_only_bytes=8)
    assert (report.inference_bytes, report.inference_format) == (60, "csr")
    report = MemoryReport(dense_bytes=100, sparse_bytes=60, bitmask_bytes=50)
    assert (report.inference_bytes, report.inference_format) == (50, "bitmask")
    assert MemoryReport.unpruned(25) == MemoryReport(100, 100, 100)
    assert MemoryReport.unpruned(25).inference_format == "dense"
    # 5 non-zeros in 3 rows: 5 * (4 + 4) value/column bytes + 4 row pointers * 4 bytes
    assert csr_bytes(3, 5) == 56
    # 5 non-zeros in a 3 x 3 table: 5 * 4 value bytes + 9 bits, i.e. 2 bytes
    assert bitmask_bytes(9, 5) == 22
    assert bitmask_bytes(16, 0) == 2


def test_full_forward_counts_and_bytes(device):
    table = FullEmbedding(4, 3).to(device)
    with torch.no_grad():
        table.weight.copy_(torch.arange(12.0).reshape(4, 3))
    out = table(ids_on(device, 2, 0))
    assert out.tolist() == [[6.0, 7.0, 8.0], [0.0, 1.0, 2.0]]
    assert table.num_parameters() == 11  # entry (0, 0) is zero
    assert table.full_parameters == 12
    assert table.memory() == MemoryReport.unpruned(12)
    assert table(ids_on(device, 1, 2, 3).reshape(3, 1)).shape == (3, 1, 3)


def test_hash_forward_with_set_constants(device):
    table = HashEmbedding(10, 2, num_rows=3).to(device)
    with torch.no_grad():
        table.hash_a.fill_(5)
        table.hash_c.fill_(7)
        table.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    # h(i) = ((5 i + 7) mod (2^31 - 1)) mod 3: h(0) = 1, h(1) = 0, h(2) = 2, h(9) = 52 mod 3 = 1
    assert table.rows(ids_on(device, 0, 1, 2, 9)).tolist() == [1, 0, 2, 1]
    assert table(ids_on(device, 0, 1, 2)).tolist() == [[3.0, 4.0], [1.0, 2.0], [5.0, 6.0]]
    assert table.num_parameters() == 6
    assert table.memory().dense_bytes == 24


def constants(table: HashEmbedding) -> tuple[int, int]:
    return int(table.hash_a), int(table.hash_c)


def test_hash_constants_follow_seed_and_rows_stay_in_range():
    first, again = HashEmbedding(1000, 4, 37, seed=0), HashEmbedding(1000, 4, 37, seed=0)
    other = HashEmbedding(1000, 4, 37, seed=1)
    assert constants(first) == constants(again) != constants(other)
    torch.manual_seed(5)  # without a seed, the global generator (the experiment's seed) decides
    drawn = constants(HashEmbedding(1000, 4, 37))
    torch.manual_seed(5)
    assert constants(HashEmbedding(1000, 4, 37)) == drawn
    assert constants(HashEmbedding(1000, 4, 37)) != drawn
    rows = first.rows(torch.arange(1000))
    assert rows.min() >= 0 and rows.max() < 37
    a, c = int(first.hash_a), int(first.hash_c)
    assert rows.tolist() == [((a * i + c) % (2**31 - 1)) % 37 for i in range(1000)]
    with pytest.raises(ValueError):
        HashEmbedding(10, 2, num_rows=0)


@pytest.mark.parametrize(
    ("combine", "expected"),
    [("mult", [150.0, 240.0]), ("add", [53.0, 64.0]), ("concat", [3.0, 4.0, 50.0, 60.0])],
)
def test_qr_forward(device, combine, expected):
    table = QREmbedding(10, 2, num_remainder_rows=4, combine=combine).to(device)
    assert table.num_quotient_rows == 3
    assert table.output_dim == (4 if combine == "concat" else 2)
    with torch.no_grad():
        table.remainder_weight.copy_(torch.tensor([[1.0, 2], [3, 4], [5, 6], [7, 8]]))
        table.quotient_weight.copy_(torch.tensor([[10.0, 20], [30, 40], [50, 60]]))
    # id 9: remainder row 9 mod 4 = 1, quotient row 9 div 4 = 2
    assert table(ids_on(device, 9)).tolist() == [expected]
    assert table.num_parameters() == (4 + 3) * 2
    assert table.memory() == MemoryReport.unpruned(14)


def test_qr_pairs_are_unique_and_composed_scale_matches_full_table():
    for m in (1, 3, 7, 10):
        table = QREmbedding(10, 1, num_remainder_rows=m, combine="concat")
        for rows in (table.remainder_weight.detach(), table.quotient_weight.detach()):
            rows.copy_(torch.arange(float(len(rows))).unsqueeze(1))
        pairs = table(torch.arange(10)).tolist()  # [i mod m, i div m] for each id
        assert pairs == [[i % m, i // m] for i in range(10)]
    torch.manual_seed(0)
    for combine in ("mult", "add", "concat"):
        table = QREmbedding(40000, 64, num_remainder_rows=200, combine=combine)
        with torch.no_grad():
            std = table(torch.arange(40000)).std().item()
        assert std == pytest.approx(0.1, rel=0.1)
    with pytest.raises(ValueError):
        QREmbedding(10, 2, num_remainder_rows=11)
    with pytest.raises(ValueError):
        QREmbedding(10, 2, num_remainder_rows=3, combine="max")


def test_tt_factorisation_helpers():
    assert factor_dim(128) == (4, 4, 8)
    assert factor_dim(64) == (4, 4, 4)
    assert factor_dim(16) == (2, 2, 4)
    assert factor_dim(7) == (1, 1, 7)
    assert factor_rows(70839) == (42, 42, 41)
    for n in (1, 2, 9, 100, 1000, 70839):
        rows = factor_rows(n)
        assert math.prod(rows) >= n and rows[0] >= rows[1] >= rows[2]
    assert tt_parameters((5, 5, 4), (2, 2, 4), 3) == 3 * (10 + 16) + 9 * 10
    assert max_useful_rank((5, 5, 4), (2, 2, 4)) == 10


def test_tt_rank_one_by_hand(device):
    table = TTEmbedding(8, 2, rank=1, row_factors=(2, 2, 2), dim_factors=(1, 1, 2)).to(device)
    with torch.no_grad():
        table.core1.copy_(torch.tensor([1.0, 2.0]).reshape(2, 1, 1))
        table.core2.copy_(torch.tensor([3.0, 5.0]).reshape(2, 1, 1, 1))
        table.core3.copy_(torch.tensor([[1.0, 10.0], [100.0, 1000.0]]).reshape(2, 1, 2))
    # id 5 has digits (1, 0, 1): 2 * 3 * [100, 1000]; id 2 has digits (0, 1, 0): 1 * 5 * [1, 10]
    assert table(ids_on(device, 5, 2)).tolist() == [[600.0, 6000.0], [5.0, 50.0]]
    assert table.num_parameters() == 2 + 2 + 4
    assert table.memory().dense_bytes == 32


def test_tt_matches_the_defining_sum(device):
    torch.manual_seed(0)
    table = TTEmbedding(20, 8, rank=2, row_factors=(3, 3, 3), dim_factors=(2, 2, 2)).to(device)
    out = table(torch.arange(20, device=device)).cpu()
    g1, g2, g3 = (c.detach().cpu() for c in (table.core1, table.core2, table.core3))
    for i in range(20):
        i1, i2, i3 = i // 9, (i // 3) % 3, i % 3
        for j1 in range(2):
            for j2 in range(2):
                for j3 in range(2):
                    value = sum(
                        g1[i1, j1, a] * g2[i2, a, j2, b] * g3[i3, b, j3]
                        for a in range(2)
                        for b in range(2)
                    )
                    assert out[i, j1 * 4 + j2 * 2 + j3].item() == pytest.approx(
                        value.item(), abs=1e-6
                    )
    assert table.num_parameters() == tt_parameters((3, 3, 3), (2, 2, 2), 2)


def test_tt_initial_scale_and_validation():
    torch.manual_seed(0)
    table = TTEmbedding(1000, 64, rank=8)
    with torch.no_grad():
        assert table(torch.arange(1000)).std().item() == pytest.approx(0.1, rel=0.15)
    with pytest.raises(ValueError):
        TTEmbedding(100, 16, rank=2, row_factors=(4, 4, 4))
    with pytest.raises(ValueError):
        TTEmbedding(100, 16, rank=2, dim_factors=(2, 2, 2))
    with pytest.raises(ValueError):
        TTEmbedding(100, 16, rank=0)


def test_combine_is_checked_in_one_place_with_the_accepted_values() -> None:
    from cerp_core.embeddings import CERPEmbedding, QREmbedding

    with pytest.raises(ValueError, match="combine must be one of 'mult', 'add', 'concat', got 'x'"):
        QREmbedding(100, 8, 10, combine="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="combine must be one of 'add', 'concat', got 'mult'"):
        CERPEmbedding(100, 8, 10, combine="mult")  # type: ignore[arg-type]


def test_module_device_reads_parameters_or_buffers() -> None:
    from torch import nn

    from cerp_core.embeddings.base import module_device

    holder = nn.Module()
    holder.register_buffer("counts", torch.zeros(3))
    assert module_device(holder) == torch.device("cpu")
    with pytest.raises(ValueError, match="Module has no parameter or buffer, so no device"):
        module_device(nn.Module())
