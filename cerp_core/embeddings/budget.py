"""One budget knob for every table: the fraction of the full table's parameters to store."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from numbers import Integral, Real
from typing import Any

import numpy as np

from cerp_core.embeddings.base import CompactEmbedding
from cerp_core.embeddings.cerp import PAPER_BATCH_ROWS, CERPEmbedding, min_bucket_size
from cerp_core.embeddings.full import FullEmbedding
from cerp_core.embeddings.hashing import HashEmbedding
from cerp_core.embeddings.lowdim import LowDimEmbedding
from cerp_core.embeddings.magnitude import MagnitudePrunedEmbedding
from cerp_core.embeddings.pep import PEPEmbedding
from cerp_core.embeddings.pruning import PrunableEmbedding
from cerp_core.embeddings.qr import QREmbedding
from cerp_core.embeddings.tt import (
    TTEmbedding,
    factor_dim,
    factor_rows,
    max_useful_rank,
    tt_parameters,
)
from cerp_core.schema import check_arguments

Budget = float | Sequence[float]
Budgets = tuple[float, ...]
Kwargs = dict[str, Any]

SUITE_THRESHOLD_INIT = -6.0
"""The highest raw threshold init that :func:`threshold_init_for` gives PEP and CERP (the papers
use -15 and -100, which prune nothing for ~9e4 Adam steps at lr 1e-3); large tables get a lower
one. Measurements: ``docs/method.md``, "Measurements behind the defaults"."""

SUITE_REGULARIZER = {"regularizer_weight": PAPER_BATCH_ROWS * 1e-3, "regularizer_decay": 0.5}
"""CERP's regularizer in :func:`make_embedding`: a thousandth of the paper's weight (its
``gamma_0 = 1`` summed over 70 rows is ``regularizer_weight = 70`` as the suite's per-row mean),
halved per epoch as in the paper; at 70 or 7 stage 1 stayed at chance (``docs/method.md``)."""

SUITE_PRUNING_L2 = 0.1
"""Stage-1 decay (``pruning_l2``, divided by a table's rows: 1e-4 per entry for ``b = 1000``)
that :func:`make_embedding` gives CERP's tables, so that its
thresholds, not magnitude completion, take the snapshots (``docs/method.md``, measured in
``results/pruning-schedule-synthetic/``)."""

SUITE_PEP_PRUNING_L2 = 0.4
"""PEP's stage-1 decay in :func:`make_embedding`. A full table must lose 90-99% of its entries
while its thresholds stop near ``sigmoid(0) = 0.5``, so it needs more decay than CERP's
tables: with 0.1 no target was reached, with 0.5 LightGCN's stage 1 collapsed before learning;
0.4 is the largest that learns with both backbones (``docs/method.md``, measured in
``results/pruning-schedule-synthetic/pep-decay.jsonl``)."""

INITIAL_PRUNED_SHARE = 0.25
"""At most this share of a Xavier-initialized table is pruned at step 0 (see
:func:`threshold_init_for`)."""


def threshold_init_for(rows: int, dim: int) -> float:
    """The suite's raw threshold init for a Xavier-uniform ``rows x dim`` table:
    ``min(SUITE_THRESHOLD_INIT, logit(INITIAL_PRUNED_SHARE * sqrt(6 / (rows + dim))))``.

    ``|w|`` is uniform on ``[0, a]`` with ``a = sqrt(6 / (rows + dim))``, so a threshold of
    ``share * a`` prunes that share of the entries at step 0. Tables of a million rows have
    ``a < sigmoid(-6)``: a fixed -6 would prune all of them before training.
    """
    bound = math.sqrt(6.0 / (rows + dim))
    return min(
        SUITE_THRESHOLD_INIT,
        math.log(INITIAL_PRUNED_SHARE * bound / (1 - INITIAL_PRUNED_SHARE * bound)),
    )


BUCKET_FACTOR = 4.0
"""CERP's two tables hold ``BUCKET_FACTOR`` times the largest target (75% sparsity there): 4
scored higher on validation than 2 (``docs/method.md``, ``results/bucket-factor/``)."""


def check_budgets(budgets: Any) -> tuple[float, ...]:
    """``budgets`` as a tuple of floats, checked: a non-empty sequence of distinct numbers in
    ``(0, 1]``. The one budget check of the suite (tables, configurations, the CLI)."""
    given = budgets  # named in the error as passed, not as the empty sequence a string becomes
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence):
        budgets = ()
    numbers = all(isinstance(b, Real) and not isinstance(b, bool) for b in budgets)
    if not budgets or not numbers or not all(0 < b <= 1 for b in budgets):
        raise ValueError(f"every budget must be a number in (0, 1], got {given!r}")
    if len(set(budgets)) < len(budgets):
        raise ValueError(f"budgets must be distinct, got {tuple(budgets)}")
    return tuple(float(b) for b in budgets)


def max_parameters(budget: float, num_entities: int, dim: int) -> int:
    """``floor(budget * N * d)``, with ``budget`` read as the decimal it prints as (so that
    ``0.29 * 100`` is 29, not 28)."""
    return math.floor(Fraction(str(budget)) * num_entities * dim)


def _round_up(value: Fraction, digits: int = 4, up: bool = True) -> float:
    """``value`` rounded up (or down) to ``digits`` significant digits, so a quoted minimum
    (maximum) is feasible."""
    scale = Fraction(10) ** (digits - 1 - math.floor(math.log10(value)))
    return float((math.ceil if up else math.floor)(value * scale) / scale)


def infeasible(method: str, num_entities: int, dim: int, budget: float, needed: int) -> ValueError:
    """The error for a budget below what ``method`` can store; names the smallest budget."""
    return ValueError(
        f"{method} cannot fit N={num_entities} ids x d={dim} into budget {budget} "
        f"({max_parameters(budget, num_entities, dim)} parameters): it needs at least {needed}, "
        f"so the smallest feasible budget is {_round_up(Fraction(needed, num_entities * dim))}"
    )


def qr_remainder_rows(num_entities: int, dim: int, budget: float) -> int:
    """Largest ``m`` with ``(m + ceil(N / m)) * d <= budget * N * d``."""
    allowed = max_parameters(budget, num_entities, dim) // dim
    m = np.arange(1, num_entities + 1, dtype=np.int64)
    rows = m + (num_entities + m - 1) // m
    fits = rows <= allowed
    if not fits.any():
        raise infeasible("qr", num_entities, dim, budget, int(rows.min()) * dim)
    return int(m[fits].max())


def tt_rank(
    num_entities: int,
    dim: int,
    budget: float,
    row_factors: Sequence[int],
    dim_factors: Sequence[int],
) -> int:
    """Largest rank ``r <= max_useful_rank`` whose cores fit ``budget * N * d``."""
    allowed = max_parameters(budget, num_entities, dim)
    if tt_parameters(row_factors, dim_factors, 1) > allowed:
        needed = tt_parameters(row_factors, dim_factors, 1)
        raise infeasible("tt", num_entities, dim, budget, needed)
    ranks = range(1, max_useful_rank(row_factors, dim_factors) + 1)
    return max(r for r in ranks if tt_parameters(row_factors, dim_factors, r) <= allowed)


def cerp_bucket_size(
    num_entities: int, dim: int, max_target: int, bucket_factor: float = BUCKET_FACTOR
) -> int:
    """``b = max(min_bucket_size(N), ceil(bucket_factor * max_target / (2 d)))``, capped at N."""
    if not math.isfinite(bucket_factor) or bucket_factor <= 1:
        raise ValueError(
            f"bucket_factor must be a number above 1 (the tables hold bucket_factor times the "
            f"largest target, so that stage 1 has something to prune), got {bucket_factor}"
        )
    wanted = math.ceil(bucket_factor * max_target / (2 * dim))
    return min(num_entities, max(min_bucket_size(num_entities), wanted))


def pruning_targets(
    method: str, num_entities: int, dim: int, budgets: Sequence[float]
) -> tuple[int, ...]:
    """``floor(budget_i * N * d)`` for each budget, descending; each must be at least 1."""
    targets = []
    for budget in budgets:
        target = max_parameters(budget, num_entities, dim)
        if target < 1:
            raise infeasible(method, num_entities, dim, budget, 1)
        targets.append(target)
    return tuple(sorted(set(targets), reverse=True))


def _full(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    if budgets[0] != 1.0:
        raise infeasible("full", n, d, budgets[0], n * d)
    return FullEmbedding(n, d, **overrides)


def _lowdim(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    width = max_parameters(budgets[0], n, d) // n
    if width < 1:
        raise infeasible("lowdim", n, d, budgets[0], n)
    return LowDimEmbedding(n, d, **{"width": min(width, d), **overrides})


def _hash(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    rows = max_parameters(budgets[0], n, d) // d
    if rows < 1:
        raise infeasible("hash", n, d, budgets[0], d)
    return HashEmbedding(n, d, **{"num_rows": rows, **overrides})


def _qr(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    solved = {"num_remainder_rows": qr_remainder_rows(n, d, budgets[0])}
    return QREmbedding(n, d, **{**solved, **overrides})


def _tt(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    rows = tuple(overrides.pop("row_factors", factor_rows(n)))
    dims = tuple(overrides.pop("dim_factors", factor_dim(d)))
    rank = tt_rank(n, d, budgets[0], rows, dims)
    return TTEmbedding(n, d, **{"rank": rank, **overrides}, row_factors=rows, dim_factors=dims)


def _pep(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    solved = {"threshold_init": threshold_init_for(n, d), "pruning_l2": SUITE_PEP_PRUNING_L2}
    targets = pruning_targets("pep", n, d, budgets)
    return PEPEmbedding(n, d, targets=targets, **{**solved, **overrides})


def _magprune(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    targets = pruning_targets("magprune", n, d, budgets)
    return MagnitudePrunedEmbedding(n, d, targets=targets, **overrides)


def _cerp(
    n: int, d: int, budgets: Budgets, overrides: Kwargs, name: str = "cerp"
) -> CompactEmbedding:
    targets = pruning_targets(name, n, d, budgets)
    bucket_factor = overrides.pop("bucket_factor", BUCKET_FACTOR)
    bucket_size = overrides.get("bucket_size", cerp_bucket_size(n, d, targets[0], bucket_factor))
    solved = {
        "bucket_size": bucket_size,
        "threshold_init": threshold_init_for(bucket_size, d),
        "pruning_l2": SUITE_PRUNING_L2,
        **SUITE_REGULARIZER,
    }
    return CERPEmbedding(n, d, targets=targets, **{**solved, **overrides})


def _cerp_noreg(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    return _cerp(n, d, budgets, {"regularizer_weight": 0.0, **overrides}, name="cerp-noreg")


PAPER_BUCKET_SIZE = 1000
"""The paper's bucket size ``b`` on Gowalla and Yelp2020, whatever the budget."""


def _cerp_paper_buckets(n: int, d: int, budgets: Budgets, overrides: Kwargs) -> CompactEmbedding:
    buckets = min(PAPER_BUCKET_SIZE, n)
    return _cerp(n, d, budgets, {"bucket_size": buckets, **overrides}, name="cerp-b1000")


FACTORS = tuple[int, int, int]  # TT's row and width factors


@dataclass(frozen=True)
class Method:
    """One compact-embedding method (or reference row): how to build it and what it is.

    The single place a method is defined: the CLI's choices, sweeps, experiments, reports and
    figures all read :data:`METHODS` (figures draw each method in the style that
    :data:`cerp_core.plots.STYLES` gives its name). Call it as
    ``METHODS[name](N, d, budget, **overrides)``.

    Attributes:
        name: The key used in configurations and result tables.
        label: Human-readable name in tables and figures.
        build: ``(N, d, budgets, overrides) -> table``; ``None`` for a method that stores no
            embedding table (popularity).
        prunable: Trains in two stages (prune to every target, retrain each snapshot), so one
            run serves several budgets.
        reference: A reference row shown beside every compact method (full, popularity,
            lowdim), not a compact method competing for "best".
        fixed_budget: The one budget the method runs at whatever the sweep's budgets (``1.0``
            for the full table, ``0.0`` for popularity, which stores nothing); ``None`` for
            methods that run at every budget below 1.
        studied: The method the suite studies (CERP): reports compare it head to head with
            every other one.
        table: The class ``build`` returns (its arguments are the method's options).
        solver_options: Options ``build`` takes itself to size the table, with their types
            (``{"bucket_factor": float}``).
        fixed_options: Options of ``table`` that the method sets itself and that define it
            (``cerp-noreg``: the regularizer, off; ``cerp-b1000``: ``b``); giving one is
            refused instead of silently turning the method into another.
    """

    name: str
    label: str
    build: Callable[[int, int, Budgets, Kwargs], CompactEmbedding] | None
    prunable: bool = False
    reference: bool = False
    fixed_budget: float | None = None
    studied: bool = False
    table: type[CompactEmbedding] | None = None
    solver_options: Mapping[str, Any] = field(default_factory=dict)
    fixed_options: frozenset[str] = frozenset()

    def __call__(
        self, num_entities: int, dim: int, budget: Budget, **overrides: Any
    ) -> CompactEmbedding:
        if self.build is None:
            raise ValueError(f"method {self.name!r} stores no embedding table")
        budgets = check_budgets((budget,) if isinstance(budget, Real) else budget)
        if len(budgets) > 1 and not self.prunable:
            raise ValueError(f"{self.name} builds one table per budget; got {len(budgets)} budgets")
        table = self.build(num_entities, dim, tuple(float(b) for b in budgets), dict(overrides))
        allowed = max_parameters(budgets[0], num_entities, dim)
        if isinstance(table, PrunableEmbedding):
            prunable = sum(part.weight.numel() for part in table.tables.values())
            if prunable <= allowed:  # every target met at step 0: no snapshot would be pruned
                raise ValueError(
                    f"{self.name}{f' with {overrides}' if overrides else ''} stores only "
                    f"{prunable} parameters, within "
                    f"budget {budgets[0]} ({allowed}) before any pruning, so nothing would be "
                    "pruned; the largest budget it can prune to is "
                    f"{_round_up(Fraction(prunable - 1, num_entities * dim), up=False)}"
                    " (or make its tables larger)"
                )
            return table
        stored = sum(p.numel() for p in table.parameters())
        if stored > allowed:
            raise ValueError(f"{self.name} with {overrides} stores {stored} > {allowed} parameters")
        return table

    @property
    def stores_table(self) -> bool:
        """Whether the method trains an embedding table (all but popularity)."""
        return self.build is not None

    def option_names(self) -> set[str]:
        """The options the method takes: its table's constructor arguments (but the id space,
        width and targets, which the solver sets) and the solver's own, less the fixed ones."""
        if self.table is None:
            return set()
        names = set(inspect.signature(self.table).parameters) - {"num_entities", "dim", "targets"}
        return (names | set(self.solver_options)) - self.fixed_options

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the first option this method does not accept, by name
        or by type: the table's constructor arguments (but the id space, width and targets,
        which the solver sets) and the solver's own options."""
        if self.table is None:
            if options:
                raise ValueError(f"method {self.name!r} takes no options, got {sorted(options)}")
            return
        fixed = sorted(self.fixed_options & set(options))
        if fixed:
            raise ValueError(
                f"method {self.name!r} sets {fixed} itself (that is what makes it "
                f"{self.label!r}); use method 'cerp' to choose them"
            )
        check_arguments(
            self.table,
            options,
            f"method {self.name!r}",
            skip=("num_entities", "dim", "targets"),
            extra=self.solver_options,
        )


METHODS: dict[str, Method] = {
    method.name: method
    for method in (  # the order of tables and figures
        Method("popularity", "Popularity", None, reference=True, fixed_budget=0.0),
        Method(
            "full",
            "Full table",
            _full,
            reference=True,
            fixed_budget=1.0,
            table=FullEmbedding,
        ),
        Method(
            "lowdim",
            "Narrow full table",
            _lowdim,
            reference=True,
            table=LowDimEmbedding,
        ),
        Method("hash", "Hashing", _hash, table=HashEmbedding),
        Method("qr", "QR trick", _qr, table=QREmbedding),
        Method(
            "tt",
            "TT-Rec",
            _tt,
            table=TTEmbedding,
            solver_options={
                "row_factors": tuple[int, int, int],
                "dim_factors": tuple[int, int, int],
            },
        ),
        Method("pep", "PEP", _pep, prunable=True, table=PEPEmbedding),
        Method(
            "magprune",
            "Magnitude pruning",
            _magprune,
            prunable=True,
            table=MagnitudePrunedEmbedding,
        ),
        Method(
            "cerp-noreg",
            "CERP w/o regularizer",
            _cerp_noreg,
            prunable=True,
            table=CERPEmbedding,
            fixed_options=frozenset(
                {"regularizer_weight", "regularizer_decay", "regularizer_sharpness"}
            ),
            solver_options={"bucket_factor": float},
        ),
        Method(
            "cerp-b1000",
            "CERP, b = 1000",
            _cerp_paper_buckets,
            prunable=True,
            table=CERPEmbedding,
            fixed_options=frozenset({"bucket_size"}),
        ),
        Method(
            "cerp",
            "CERP",
            _cerp,
            prunable=True,
            studied=True,
            table=CERPEmbedding,
            solver_options={"bucket_factor": float},
        ),
    )
}
FULL_MODEL = next(name for name, method in METHODS.items() if method.fixed_budget == 1.0)
"""The full table: the reference every budget is a fraction of."""
POPULARITY = next(name for name, method in METHODS.items() if method.build is None)
"""The ranking that stores no table: the floor every compact method must clear."""
STUDIED = next(name for name, method in METHODS.items() if method.studied)
"""The method the suite studies (CERP), which reports compare with every other one."""


def options_for(methods: Iterable[str], **values: Any) -> dict[str, dict[str, Any]]:
    """For each of ``methods``, those of ``values`` that it takes as options (``None`` values
    left out): how one set of settings (a notebook's parameters) reaches every method that has a
    use for each, e.g. ``threshold_init`` PEP and the CERP variants, ``regularizer_weight`` only
    the CERP variants that have a regularizer."""
    given = {name: value for name, value in values.items() if value is not None}
    return {
        method: {k: v for k, v in given.items() if k in get_method(method).option_names()}
        for method in methods
    }


def reference_methods() -> set[str]:
    """The methods shown as reference rows, never competing for "best" (read live, so that a
    method registered later counts too)."""
    return {name for name, method in METHODS.items() if method.reference}


def make_embedding(
    method: str, num_entities: int, dim: int, budget: Budget, **overrides: Any
) -> CompactEmbedding:
    """Build the table of ``method`` that stores at most ``budget * N * d`` parameters.

    ``budget`` is the fraction of the full table's ``N * d`` parameters that may be stored,
    ``0 < budget <= 1`` (read as a decimal: ``floor(budget * N * d)`` parameters). Each method
    solves for its own size:

    - ``full``: only ``budget = 1.0``.
    - ``hash``: ``floor(budget * N)`` rows.
    - ``qr``: the largest remainder-table size ``m`` with ``(m + ceil(N / m)) * d`` within the
      budget (each table ``d`` wide; ``combine="concat"`` gives ``2d``-wide vectors). Needs at
      least ``ceil(2 sqrt(N)) * d`` parameters.
    - ``tt``: three cores, ``N`` and ``d`` split into near-equal factors
      (:func:`~cerp_core.embeddings.tt.factor_rows`, :func:`~cerp_core.embeddings.tt.factor_dim`),
      the largest rank (at most the useful maximum ``min(n1 d1, n3 d3)``) within the budget.
      Needs at least the rank-1 cores.
    - ``pep``, ``magprune``: one target ``floor(budget_i * N * d)`` per budget; PEP's stage-1
      decay ``pruning_l2=`` :data:`SUITE_PEP_PRUNING_L2`.
    - ``cerp``, ``cerp-noreg``: targets likewise; bucket size
      ``b = max(ceil(sqrt(N)), ceil(bucket_factor * max_target / (2 d)))`` capped at ``N``, so the
      two tables hold ``bucket_factor`` (default 4: 75% sparsity) times the largest target, or
      more where unique pairs need ``b >= sqrt(N)``; stage-1 decay ``pruning_l2=``
      :data:`SUITE_PRUNING_L2`. ``cerp-noreg`` sets ``regularizer_weight=0``;
      ``cerp-b1000`` fixes the paper's ``b = 1000`` (:data:`PAPER_BUCKET_SIZE`, at most ``N``),
      so its budgets must stay below its tables' ``2 b d`` parameters.

    Pruning methods accept a sequence of budgets (one pruning run, one target each) and, like
    the others, guarantee the budget for the *stored* non-zeros after pruning
    (``num_parameters() <= target``); before pruning their tables may be larger. PEP and CERP get
    ``threshold_init=threshold_init_for(rows, d)``: -6 (:data:`SUITE_THRESHOLD_INIT`), or lower
    for large tables, instead of the papers' -15 / -100.

    ``overrides`` go to the constructor and win over solved values (e.g. ``bucket_size=1000``,
    ``threshold_init=-100.0``, ``combine="concat"``); ``bucket_factor`` (CERP) and
    ``row_factors``/``dim_factors`` (TT) steer the solver. Impossible sizes raise
    :class:`ValueError` naming the smallest feasible budget.
    """
    entry = get_method(method)
    for name, size in (("num_entities", num_entities), ("dim", dim)):
        if not isinstance(size, Integral) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {size!r}")
    entry.check_options(overrides)
    return entry(int(num_entities), int(dim), budget, **overrides)


def get_method(name: str) -> Method:
    """The registry's entry ``name``; an unknown name raises ``ValueError`` listing the known."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]
