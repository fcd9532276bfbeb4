"""The budget solver: every method within ``budget * N * d`` or a ValueError naming the minimum."""

from __future__ import annotations

import math
import re

import pytest
import torch

from cerp_core.config import ExperimentConfig
from cerp_core.embeddings import (
    FULL_MODEL,
    METHODS,
    POPULARITY,
    STUDIED,
    SUITE_THRESHOLD_INIT,
    CERPEmbedding,
    HashEmbedding,
    PrunableEmbedding,
    QREmbedding,
    TTEmbedding,
    cerp_bucket_size,
    make_embedding,
    max_parameters,
    min_bucket_size,
    options_for,
    qr_remainder_rows,
)
from cerp_core.embeddings.budget import BUCKET_FACTOR, pruning_targets

NUM_ENTITIES = (100, 1000, 70839)
DIMS = (16, 64, 128)
BUDGETS = (1.0, 0.5, 0.1, 0.05, 0.02, 0.01)
UNPRUNED = ("full", "lowdim", "hash", "qr", "tt")
PRUNED = ("pep", "magprune", "cerp", "cerp-noreg", "cerp-b1000")


def fits(params: int, budget: float, n: int, d: int) -> bool:
    return params <= budget * n * d * (1 + 1e-12)


def test_registry_names_every_method():
    assert set(METHODS) == {"popularity", *UNPRUNED, *PRUNED}
    assert all(METHODS[name].prunable == (name in PRUNED) for name in METHODS)
    assert {name for name, m in METHODS.items() if m.reference} == {"popularity", "full", "lowdim"}
    labels = [m.label for m in METHODS.values()]
    assert len(set(labels)) == len(labels)
    assert (FULL_MODEL, POPULARITY, STUDIED) == ("full", "popularity", "cerp")
    assert [name for name, m in METHODS.items() if not m.stores_table] == ["popularity"]


def test_lowdim_is_a_narrower_full_table():
    table = make_embedding("lowdim", 1000, 64, 0.1)
    assert (table.output_dim, table.dim, table.num_parameters()) == (6, 64, 6000)
    assert table(torch.tensor([3])).shape == (1, 6)
    with pytest.raises(ValueError, match="smallest feasible budget is 0.01563"):
        make_embedding("lowdim", 1000, 64, 0.01)


def test_option_names_are_checked_against_the_constructor():
    with pytest.raises(ValueError, match=r"\['regulariser_weight'\].*'regularizer_weight'"):
        make_embedding("cerp", 1000, 8, 0.1, regulariser_weight=1.0)
    with pytest.raises(ValueError, match=r"option bucket_factor='4': input should be a valid"):
        make_embedding("cerp", 1000, 8, 0.1, bucket_factor="4")
    with pytest.raises(ValueError, match=r"option row_factors=\[10, 10\]: .*expected tuple"):
        make_embedding("tt", 1000, 8, 0.1, row_factors=[10, 10])
    with pytest.raises(ValueError, match=r"method 'popularity' takes no options"):
        METHODS["popularity"].check_options({"seed": 1})
    # 4 x the 800-parameter target over two 8-wide tables: b = 4 * 800 / 16
    assert make_embedding("cerp", 1000, 8, 0.1, bucket_factor=4.0).bucket_size == 200
    with pytest.raises(ValueError, match="stores no embedding"):
        make_embedding("popularity", 1000, 8, 0.1)


def test_max_parameters_reads_budget_as_a_decimal():
    assert max_parameters(0.29, 100, 1) == 29  # 0.29 * 100 == 28.999999999999996 in floats
    assert max_parameters(0.05, 70839, 128) == 453369


@pytest.mark.parametrize("method", UNPRUNED)
@pytest.mark.parametrize("n", NUM_ENTITIES)
@pytest.mark.parametrize("d", DIMS)
def test_unpruned_tables_fit_or_name_the_smallest_budget(method, n, d):
    for budget in BUDGETS:
        try:
            table = make_embedding(method, n, d, budget)
        except ValueError as error:
            found = re.search(
                r"needs at least (\d+), so the smallest feasible budget is (\S+)$", str(error)
            )
            assert found, str(error)
            needed, smallest = int(found[1]), float(found[2])
            assert needed > max_parameters(budget, n, d)
            assert budget < needed / (n * d) <= smallest
            # the quoted minimum is feasible and one parameter fewer is not
            assert fits(make_embedding(method, n, d, smallest).num_parameters(), smallest, n, d)
            with pytest.raises(ValueError):
                make_embedding(method, n, d, (needed - 1) / (n * d))
            continue
        stored = sum(p.numel() for p in table.parameters())
        assert fits(stored, budget, n, d)
        assert table.num_parameters() <= stored
        assert table.memory().dense_bytes == 4 * stored
        assert table.full_parameters == n * d
        ids = torch.tensor([0, n - 1])
        assert table(ids).shape == (2, table.output_dim)


@pytest.mark.parametrize("n", NUM_ENTITIES)
@pytest.mark.parametrize("d", DIMS)
def test_pruning_targets_and_cerp_bucket_size_fit(n, d):
    targets = pruning_targets("cerp", n, d, BUDGETS)
    assert list(targets) == sorted(targets, reverse=True)
    assert targets == tuple(max_parameters(b, n, d) for b in BUDGETS)
    assert all(fits(t, b, n, d) for t, b in zip(targets, BUDGETS, strict=True))
    for budget in BUDGETS:
        target = max_parameters(budget, n, d)
        b = cerp_bucket_size(n, d, target)
        assert math.ceil(n / b) <= b <= n
        assert 2 * b * d >= min(BUCKET_FACTOR * target, 2 * n * d)
        assert b == min_bucket_size(n) or b == n or 2 * (b - 1) * d < BUCKET_FACTOR * target


@pytest.mark.parametrize("method", PRUNED)
@pytest.mark.parametrize("n", (100, 1000))
@pytest.mark.parametrize("d", (16, 64))
def test_one_pruning_run_serves_every_budget(method, n, d):
    torch.manual_seed(0)
    budgets = BUDGETS[1:]
    if method in ("pep", "magprune"):  # a full-size table is within budget 1.0 from the start
        with pytest.raises(ValueError, match="before any pruning, so nothing would be pruned"):
            make_embedding(method, n, d, BUDGETS)
    else:  # CERP's two tables can hold 2 N d, so even 1.0 is pruned to
        budgets = BUDGETS
    table = make_embedding(method, n, d, budgets)
    assert isinstance(table, PrunableEmbedding)
    assert table.targets == tuple(max_parameters(b, n, d) for b in budgets)
    masks = {target: table.magnitude_masks(target) for target in table.targets}
    for budget, target in zip(budgets, table.targets, strict=True):
        table.rewind(masks[target])
        assert fits(table.num_parameters(), budget, n, d)


def test_cerp_bucket_rule_by_hand():
    # Gowalla, d = 128, budget 0.05: target 453,369; b = ceil(4 * 453369 / 256) = 7084
    table = make_embedding("cerp", 70839, 128, [0.05, 0.01])
    assert isinstance(table, CERPEmbedding)
    assert table.bucket_size == 7084 and table.targets == (453369, 90673)
    assert torch.all(table.tables["P"].threshold == SUITE_THRESHOLD_INIT)
    # a tiny budget falls back on the smallest bucket size with unique pairs
    assert cerp_bucket_size(70839, 128, max_parameters(0.001, 70839, 128)) == 267
    assert make_embedding("cerp", 100, 4, 0.5, bucket_factor=1.5).bucket_size == 38
    for factor in (1.0, -1.0, float("nan")):  # tables no larger than the target: nothing to prune
        with pytest.raises(ValueError, match="bucket_factor must be a number above 1"):
            make_embedding("cerp", 100, 4, 0.5, bucket_factor=factor)
    assert make_embedding("cerp", 100, 4, 1.0).bucket_size == 100  # capped at N


def test_overrides_reach_the_constructor():
    paper = make_embedding("cerp", 70839, 8, 0.01, bucket_size=1000, threshold_init=-100.0)
    assert paper.bucket_size == 1000 and torch.all(paper.tables["Q"].threshold == -100.0)
    concat = make_embedding("cerp", 1000, 8, 0.05, combine="concat")
    assert concat.output_dim == 16
    suite = make_embedding("cerp", 1000, 8, 0.05)
    assert (suite.regularizer_weight, suite.regularizer_decay) == pytest.approx((0.07, 0.5))
    paper_reg = make_embedding("cerp", 1000, 8, 0.05, regularizer_weight=1.0, regularizer_decay=0.5)
    assert (paper_reg.regularizer_weight, paper_reg.regularizer_decay) == (1.0, 0.5)
    assert make_embedding("cerp-noreg", 1000, 8, 0.05).regularizer_weight == 0.0
    pep = make_embedding("pep", 1000, 8, [0.1, 0.05], threshold="global")
    assert (
        pep.tables["weight"].threshold.shape == (1, 1)
        and pep.tables["weight"].threshold.item() == -6.0
    )
    qr = make_embedding("qr", 1000, 8, 0.5, combine="concat")
    assert isinstance(qr, QREmbedding) and qr.output_dim == 16
    tt = make_embedding("tt", 1000, 8, 0.1, row_factors=(20, 10, 5))
    assert isinstance(tt, TTEmbedding) and tt.row_factors == (20, 10, 5)
    assert isinstance(make_embedding("hash", 1000, 8, [0.1], seed=3), HashEmbedding)
    with pytest.raises(ValueError, match="stores"):
        make_embedding("hash", 1000, 8, 0.1, num_rows=500)


def test_solver_rules_by_hand():
    # QR: largest m with m + ceil(N / m) <= 0.1 * 1000 = 100 rows: m = 88 (88 + 12 = 100)
    assert qr_remainder_rows(1000, 16, 0.1) == 88
    assert make_embedding("hash", 1000, 16, 0.1).num_rows == 100
    # TT, N = 1000 -> (10, 10, 10), d = 16 -> (2, 2, 4): r (20 + 40) + 20 r^2 <= 1600 -> r = 7
    assert make_embedding("tt", 1000, 16, 0.1).rank == 7


@pytest.mark.parametrize(
    "budget", [0.0, -0.1, 1.5, float("nan"), [], [0.1, 2.0], "0.1", None, True]
)
def test_invalid_budgets_are_rejected(budget):
    with pytest.raises(ValueError, match="budget"):
        make_embedding("cerp", 100, 4, budget)


def test_other_rejections():
    with pytest.raises(ValueError, match="unknown method"):
        make_embedding("dhe", 100, 4, 0.1)
    with pytest.raises(ValueError, match="one table per budget"):
        make_embedding("hash", 100, 4, [0.5, 0.1])
    with pytest.raises(ValueError, match="smallest feasible budget is 1.0"):
        make_embedding("full", 100, 4, 0.5)
    with pytest.raises(ValueError, match="smallest feasible budget is 0.0025"):
        make_embedding("pep", 100, 4, [0.1, 0.001])  # 0.4 parameters < 1


def test_cerp_b1000_keeps_the_papers_buckets_and_prunes_only_below_its_size():
    """Gowalla, d = 64: b = 1000 tables hold 2 * 1000 * 64 = 128,000 parameters, 0.0282 of the
    full table; the paper's sparsities of them are budgets 0.0141 / 0.0085 / 0.0028."""
    table = make_embedding("cerp-b1000", 70839, 64, (0.0141, 0.0085, 0.0028))
    assert isinstance(table, CERPEmbedding) and table.bucket_size == 1000
    assert table.targets == (63925, 38536, 12694)
    assert table.regularizer_weight > 0
    # 0.05 allows 226,684 parameters: met before any pruning, so no snapshot would be pruned
    with pytest.raises(ValueError, match=r"cerp-b1000 stores only 128000 parameters, within budget "
                                         r"0.05 \(226684\).*prune to is 0.02823"):  # fmt: skip
        make_embedding("cerp-b1000", 70839, 64, (0.05, 0.0141))
    with pytest.raises(ValueError, match=r"cerp with \{'bucket_size': 40\} stores only 1280"):
        make_embedding("cerp", 1000, 16, 0.1, bucket_size=40)
    assert make_embedding("cerp-b1000", 100, 4, 0.5).bucket_size == 100  # at most N


@pytest.mark.parametrize("method", ["pep", "cerp"])
@pytest.mark.parametrize(("n", "d"), [(5000, 32), (1_000_000, 16), (2_000_000, 8)])
@pytest.mark.slow
def test_initial_thresholds_prune_at_most_a_quarter_at_any_size(method, n, d):
    """A fixed -6 pruned every entry of tables with ~1M rows (Xavier bound < sigmoid(-6))."""
    torch.manual_seed(0)
    table = make_embedding(method, n, d, 0.5)
    entries = sum(p.numel() for name, p in table.named_parameters() if "threshold" not in name)
    assert table.num_nonzero() >= 0.74 * entries
    assert table.num_nonzero() > max(table.targets)


def test_a_method_registered_once_reaches_cli_sweeps_reports_and_plots(monkeypatch) -> None:
    """Registering a method in METHODS is all it takes for every layer to know it."""
    import pandas as pd

    from cerp_core import plots, report
    from cerp_core.cli import build_parser
    from cerp_core.embeddings.budget import Method, _hash
    from cerp_core.embeddings.hashing import HashEmbedding
    from cerp_core.sweep import SweepConfig

    toy = Method("toy-hash", "Toy hashing", _hash, reference=True, table=HashEmbedding)
    monkeypatch.setitem(METHODS, "toy-hash", toy)
    args = build_parser().parse_args(["train", "--method", "toy-hash", "--out", "x"])
    assert args.method == "toy-hash"
    (run,) = SweepConfig.from_dict({"methods": ["toy-hash"], "budgets": [0.1]}).runs()
    assert run.config.method == "toy-hash"
    assert plots.method_style("toy-hash")["label"] == "Toy hashing"  # black until styled
    monkeypatch.setitem(plots.STYLES, "toy-hash", (6, "h", "-"))
    assert plots.method_style("toy-hash")["marker"] == "h"
    rows = pd.DataFrame(
        {"dataset": "d", "backbone": "mf", "method": ["toy-hash", "hash"], "budget": 0.1,
         "seed": 0, "num_params": 1, "param_fraction": 0.1, "memory_bytes": 4,
         "recall@20": [0.5, 0.1], "ndcg@20": [0.5, 0.1]}
    )  # fmt: skip
    table = report.paper_table(rows)  # a reference row is never the bold "best"
    assert not table.loc[("d", "mf", "toy-hash"), (0.1, "recall@20")].startswith("**")


@pytest.mark.parametrize(
    ("num_entities", "dim", "budget", "message"),
    [
        (0, 8, 0.1, "num_entities must be an integer >= 1, got 0"),
        (10.5, 8, 0.1, "num_entities must be an integer >= 1, got 10.5"),
        ("100", 8, 0.1, "num_entities must be an integer >= 1, got '100'"),
        (True, 8, 0.1, "num_entities must be an integer >= 1, got True"),
        (100, 0, 0.1, "dim must be an integer >= 1, got 0"),
        (100, 8, "0.1", "every budget must be a number in (0, 1], got '0.1'"),
    ],
)
def test_make_embedding_refuses_sizes_that_are_not_counts(
    num_entities: object, dim: object, budget: object, message: str
) -> None:
    """Before: ZeroDivisionError, TypeError or a raw torch error from deep in the solver."""
    with pytest.raises(ValueError, match=re.escape(message)):
        make_embedding("cerp", num_entities, dim, budget)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "option"), [("cerp-noreg", "regularizer_weight"), ("cerp-b1000", "bucket_size")]
)
def test_a_variant_refuses_the_option_that_defines_it(method: str, option: str) -> None:
    """Before: cerp-noreg with regularizer_weight=1 silently trained CERP's regularizer."""
    with pytest.raises(ValueError, match=rf"method '{method}' sets \['{option}'\] itself"):
        make_embedding(method, 5000, 8, 0.01, **{option: 1})
    with pytest.raises(ValueError, match="sets"):
        ExperimentConfig(method=method, embedding_options={option: 1})


def test_options_reach_the_methods_that_take_them() -> None:
    options = options_for(
        METHODS, threshold_init=-8.0, regularizer_weight=0.07, regularizer_decay=None
    )
    assert options["pep"] == options["cerp-noreg"] == {"threshold_init": -8.0}
    assert options["cerp"] == options["cerp-b1000"] == {
        "threshold_init": -8.0, "regularizer_weight": 0.07
    }  # fmt: skip
    assert options["magprune"] == options["hash"] == options["popularity"] == {}
    for method, given in options.items():
        METHODS[method].check_options(given)  # every option handed out is one it accepts
