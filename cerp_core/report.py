"""Paper tables, accuracy-vs-memory curves, Pareto fronts and relative accuracy.

Every function reads a results table: the ``results.csv`` of a sweep
(:class:`cerp_core.sweep.ResultStore`), one row per evaluated model with the columns of the
result record (ARCHITECTURE.md): ``dataset, backbone, method, budget, seed, num_params,
param_fraction, memory_bytes, recall@20, ndcg@20, ...``. Seeds are aggregated as mean and
sample standard deviation. A *panel* is one (data set, backbone) pair: tables, fronts and
ratios never mix panels. Figures are drawn by :mod:`cerp_core.plots` from these frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cerp_core.analysis import chance_exclusive
from cerp_core.embeddings import FULL_MODEL, METHODS, POPULARITY, STUDIED, reference_methods
from cerp_core.render import to_latex, to_markdown

METRICS = ("recall@20", "ndcg@20")
PANEL = ["dataset", "backbone"]
GROUP = [*PANEL, "method", "budget"]
SIZES = ("num_params", "param_fraction", "memory_bytes")
INFEASIBLE = "infeasible"
"""A table cell whose method cannot meet the budget (the reason is in ``results.csv``)."""
BELOW_POPULARITY = " †"
STOPPED_BY_BOUND = " §"
"""Marks a cell with a seed whose training the epoch bound stopped (``stopped_by_bound``)."""
BY_MAGNITUDE = " ‡"
"""Marks a cell with a seed whose snapshot magnitude pruning completed, not the method's
thresholds (``snapshot_source == "magnitude"``)."""


def _require(results: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks the columns {missing}")


def _check_one_row_per_seed(results: pd.DataFrame) -> None:
    """Raise if two rows would be averaged as seeds while they are one seed's runs of two
    configurations (a result folder keeps the rows of every sweep written into it)."""
    repeated = results[results.duplicated([*GROUP, "seed"], keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        raise ValueError(
            f"{len(repeated)} rows share a (dataset, backbone, method, budget, seed), e.g. "
            f"{'/'.join(str(first[c]) for c in GROUP)} seed {first['seed']}: runs of different "
            "configurations are in one table; select one configuration's rows first "
            "(python -m cerp_core report DIR --config SWEEP.yaml)"
        )


def summarize(results: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean and std over seeds per (dataset, backbone, method, budget), in order of appearance.

    Columns: the group, ``seeds`` (how many), the mean sizes (``num_params``,
    ``param_fraction``, ``memory_bytes``), ``<metric>_mean`` / ``<metric>_std`` (NaN for
    one seed) and, where the results record it, ``infeasible`` (why a method cannot meet the
    budget; NaN for a run).
    """
    _require(results, [*GROUP, "seed", *SIZES, *metrics])
    _check_one_row_per_seed(results)
    aggregations = {"seeds": ("seed", "nunique")} | {size: (size, "mean") for size in SIZES}
    if "infeasible" in results:  # the reason a method cannot meet a budget (sweeps record it)
        aggregations["infeasible"] = ("infeasible", "first")
    for metric in metrics:
        aggregations[f"{metric}_mean"] = (metric, "mean")
        aggregations[f"{metric}_std"] = (metric, "std")
    return results.groupby(GROUP, sort=False).agg(**aggregations).reset_index()


def _format(mean: float, std: float, precision: int) -> str:
    if np.isnan(mean):
        return "-"
    text = f"{mean:.{precision}f}"
    return text if np.isnan(std) else f"{text} ± {std:.{precision}f}"


def paper_table(
    results: pd.DataFrame,
    metrics: Sequence[str] = METRICS,
    budgets: Sequence[float] | None = None,
    precision: int = 4,
) -> pd.DataFrame:
    """The paper's table: methods x budgets, ``mean ± std`` over seeds, best per column in bold.

    The best is taken among compact methods (reference rows, :attr:`Method.reference`, are
    shown but never bold), and every cell below the popularity ranking of its panel ends in
    ``" †"`` (the popularity row is at budget 0: it stores no embedding). Defects until shown
    otherwise are marked too: ``" §"`` when the epoch bound stopped a seed's training (it may
    not have converged), ``" ‡"`` when a seed's snapshot was completed by magnitude pruning
    rather than taken by the method's thresholds.

    Rows are (dataset, backbone, method) in order of appearance; columns are (budget, metric),
    budgets descending. A cell is ``"0.1234 ± 0.0012"`` (``"0.1234"`` for one seed, ``"-"`` when
    the method has no result at that budget, ``"infeasible"`` when it cannot meet the budget).
    In each panel and column holding two or more results, the best mean is wrapped in Markdown
    bold (``**0.1234 ± 0.0012**``, every tied cell), which :func:`to_markdown` keeps and
    :func:`to_latex` turns into ``\\textbf``.

    Args:
        results: The results table.
        metrics: Metric columns, each a column of the table per budget.
        budgets: Budgets to show (default: all in the table).
        precision: Decimals of means and stds.
    """
    summary = summarize(results, metrics)
    if budgets is not None:
        absent = sorted(set(budgets) - set(summary["budget"]))
        if absent:
            raise ValueError(f"budgets {absent} are not in the results")
        summary = summary[summary["budget"].isin(budgets)]
    rows = pd.MultiIndex.from_frame(summary[[*PANEL, "method"]].drop_duplicates())
    order = sorted(summary["budget"].unique(), reverse=True)
    infeasible = (
        summary.pivot(index=[*PANEL, "method"], columns="budget", values="infeasible")
        if "infeasible" in summary
        else pd.DataFrame(index=rows, columns=order)
    ).reindex(index=rows, columns=order)
    defects = _defects(results, rows, order)
    columns = pd.MultiIndex.from_product([order, list(metrics)], names=["budget", "metric"])
    table = pd.DataFrame(index=rows, columns=columns, dtype=object)
    for metric in metrics:
        mean, std = (
            summary.pivot(index=[*PANEL, "method"], columns="budget", values=f"{metric}_{stat}")
            .reindex(index=rows, columns=order)
            .astype(float)
            for stat in ("mean", "std")
        )
        methods = mean.index.get_level_values("method")
        compact = mean[~np.isin(methods, list(reference_methods()))]
        panels = compact.groupby(level=PANEL, sort=False)
        best = (compact == panels.transform("max")) & (panels.transform("count") >= 2)
        best = best.reindex(index=rows, fill_value=False)
        floor = _popularity(summary, f"{metric}_mean")
        below = (
            mean.lt(pd.Series([floor.get(key[:-1], np.nan) for key in rows], index=rows), axis=0)
            & ~np.isin(methods, [POPULARITY])[:, None]
        )
        for budget in order:
            pairs = zip(mean[budget], std[budget], infeasible[budget], strict=True)
            cells = [
                INFEASIBLE if isinstance(reason, str) else _format(m, sd, precision)
                for m, sd, reason in pairs
            ]
            marks = zip(cells, best[budget], below[budget], defects[budget], strict=True)
            table[(budget, metric)] = [
                (f"**{c}**" if is_best else c) + (BELOW_POPULARITY if is_below else "") + defect
                for c, is_best, is_below, defect in marks
            ]
    return table


def _defects(results: pd.DataFrame, rows: pd.MultiIndex, budgets: list[float]) -> pd.DataFrame:
    """Per row and budget, the marks of :data:`STOPPED_BY_BOUND` and :data:`BY_MAGNITUDE` that
    any of its seeds earns (``""`` for none, and where the results do not record them)."""
    flags = pd.DataFrame(index=results.index)
    flags["bound"] = results.get("stopped_by_bound", pd.Series(False, index=results.index))
    flags["magnitude"] = results.get("snapshot_source", pd.Series("", index=results.index))
    flags["bound"] = flags["bound"].astype("boolean").fillna(False).astype(bool)
    flags["magnitude"] = flags["magnitude"].eq("magnitude")
    found = flags.groupby([results[name] for name in GROUP], sort=False).any()
    text = found["bound"].map({True: STOPPED_BY_BOUND, False: ""}) + found["magnitude"].map(
        {True: BY_MAGNITUDE, False: ""}
    )
    return text.unstack("budget").reindex(index=rows, columns=budgets).fillna("")


def _popularity(summary: pd.DataFrame, column: str) -> dict[tuple[str, str], float]:
    """The popularity ranking's value of ``column`` per panel (none: no popularity row)."""
    rows = summary[summary["method"] == POPULARITY]
    return {tuple(key): value for *key, value in rows[[*PANEL, column]].itertuples(index=False)}


def _on_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-dominated points: no other point has ``x`` as small and ``y`` as large, one strictly."""
    no_worse = (x[None, :] <= x[:, None]) & (y[None, :] >= y[:, None])
    better = (x[None, :] < x[:, None]) | (y[None, :] > y[:, None])
    return ~(no_worse & better).any(axis=1)


def tradeoff(results: pd.DataFrame, x: str = "memory_bytes", y: str = "recall@20") -> pd.DataFrame:
    """Accuracy-vs-memory curves: one point per (dataset, backbone, method, budget).

    Columns: the group, the means of ``x`` and ``y`` over seeds, ``<y>_std``, ``seeds``, and
    ``pareto``: whether the point is on its panel's Pareto front (no point of the panel is as
    small in ``x`` and as good in ``y``, and better in one). Sorted by panel, method, ``x``.
    """
    _require(results, [*GROUP, "seed", x, y])
    _check_one_row_per_seed(results)
    points = (
        results.groupby(GROUP, sort=False)
        .agg(
            **{x: (x, "mean"), y: (y, "mean"), f"{y}_std": (y, "std"), "seeds": ("seed", "nunique")}
        )
        .reset_index()
    )
    points["pareto"] = False
    for _, panel in points.groupby(PANEL, sort=False):
        points.loc[panel.index, "pareto"] = _on_front(panel[x].to_numpy(), panel[y].to_numpy())
    points["_panel"] = points.groupby(PANEL, sort=False).ngroup()
    points = points.sort_values(["_panel", "method", x], kind="stable")
    return points.drop(columns="_panel").reset_index(drop=True)


def pareto_front(
    results: pd.DataFrame, x: str = "num_params", y: str = "recall@20"
) -> pd.DataFrame:
    """The Pareto front of each panel (fewer ``x``, higher ``y``), sorted by ``x``."""
    points = tradeoff(results, x, y)
    front = points[points["pareto"]].drop(columns="pareto")
    front = front.assign(_panel=front.groupby(PANEL, sort=False).ngroup())
    front = front.sort_values(["_panel", x], kind="stable").drop(columns="_panel")
    return front.reset_index(drop=True)


def relative_accuracy(results: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Accuracy kept vs. the full model: each row's metric over the ``full`` row of the same
    dataset, backbone and seed, then mean and std over seeds.

    Columns as :func:`summarize` with ``relative_<metric>_mean`` / ``_std``; the full model's
    own row is 1.0. Rows whose seed has no full model are dropped; a panel without any raises.
    """
    _require(results, [*GROUP, "seed", *metrics])
    full = results[results["method"] == FULL_MODEL]
    panels = set(results[PANEL].itertuples(index=False, name=None))
    lacking = sorted(panels - set(full[PANEL].itertuples(index=False, name=None)))
    if lacking:
        names = ["/".join(panel) for panel in lacking]
        raise ValueError(f"no '{FULL_MODEL}' model for {names}; add it to the sweep")
    reference = full[[*PANEL, "seed", *metrics]].groupby([*PANEL, "seed"], as_index=False).mean()
    paired = results.merge(reference, on=[*PANEL, "seed"], suffixes=("", "_full"))
    relative = [f"relative_{metric}" for metric in metrics]
    for metric, name in zip(metrics, relative, strict=True):
        paired[name] = paired[metric] / paired[f"{metric}_full"]
    return summarize(paired, relative)


def head_to_head(
    results: pd.DataFrame, method: str = STUDIED, metric: str = "recall@20"
) -> pd.DataFrame:
    """``method`` against every other method at each of its budgets, per panel.

    One row per (dataset, backbone, budget, baseline): the two means over seeds, their
    ``difference`` (method - baseline), ``ratio`` (method / baseline) and whether the
    difference is ``beyond_noise``: larger than twice ``noise = sqrt(std_method^2 +
    std_baseline^2)``, the seed-to-seed spread of a difference of two single runs (``False``
    with one seed, where the spread is unknown). Reference rows that run at one budget (full,
    popularity) are compared at every budget.
    """
    summary = summarize(results, (metric,))
    mean, std = f"{metric}_mean", f"{metric}_std"
    ours = summary[summary["method"] == method]
    if ours.empty:
        raise ValueError(f"no result of method {method!r} to compare")
    fixed = [name for name, entry in METHODS.items() if entry.fixed_budget is not None]
    rows = []
    for _, own in ours.iterrows():
        panel = (summary["dataset"] == own["dataset"]) & (summary["backbone"] == own["backbone"])
        same_budget = summary["budget"] == own["budget"]
        others = summary[panel & (same_budget | summary["method"].isin(fixed))]
        for _, other in others[others["method"] != method].iterrows():
            noise = float(np.hypot(own[std], other[std]))
            difference = own[mean] - other[mean]
            rows.append(
                {
                    "dataset": own["dataset"],
                    "backbone": own["backbone"],
                    "budget": own["budget"],
                    "baseline": other["method"],
                    method: own[mean],
                    "baseline_value": other[mean],
                    "difference": difference,
                    "ratio": own[mean] / other[mean] if other[mean] else np.nan,
                    "noise": noise,
                    "beyond_noise": bool(np.isfinite(noise) and abs(difference) > 2 * noise),
                }
            )
    return pd.DataFrame(rows)


def standings(
    results: pd.DataFrame, method: str = STUDIED, metric: str = "recall@20"
) -> pd.DataFrame:
    """Where ``method`` stands among the compact methods at each of its budgets, per panel.

    One row per (dataset, backbone, budget): the ``best`` compact method and its mean over
    seeds (``best_value``), ``method``'s mean, its number of ``seeds`` and ``rank`` among the
    ``compact`` methods run at that budget (1 is best), the reference values (``popularity``,
    ``full``; NaN when absent), and whether ``method``'s gap to the best is ``beyond_noise`` (as
    :func:`head_to_head`; ``False`` when ``method`` is the best).
    """
    summary = summarize(results, (metric,))
    mean = f"{metric}_mean"
    references = reference_methods()
    versus = head_to_head(results, method, metric).set_index([*PANEL, "budget", "baseline"])
    rows = []
    for (dataset, backbone, budget), group in summary.groupby([*PANEL, "budget"], sort=False):
        compact = group[~group["method"].isin(references)].sort_values(mean, ascending=False)
        if method not in set(compact["method"]):
            continue
        panel = summary[(summary["dataset"] == dataset) & (summary["backbone"] == backbone)]
        reference = panel.set_index("method")[mean]
        best, own = compact.iloc[0], compact[compact["method"] == method]
        key = (dataset, backbone, budget, best["method"])
        rows.append(
            {
                "dataset": dataset,
                "backbone": backbone,
                "budget": budget,
                "best": best["method"],
                "best_value": best[mean],
                method: float(own[mean].iloc[0]),
                "seeds": int(own["seeds"].iloc[0]),
                "rank": compact["method"].tolist().index(method) + 1,
                "compact": len(compact),
                POPULARITY: reference.get(POPULARITY, np.nan),
                FULL_MODEL: reference.get(FULL_MODEL, np.nan),
                "beyond_noise": bool(key in versus.index and versus.loc[key, "beyond_noise"]),
            }
        )
    return pd.DataFrame(rows)


def complementarity_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of the P/Q complementarity columns (``pq_*``) of the CERP rows, per
    (dataset, backbone, method, budget): how the regularizer changed who holds the non-zeros.

    Where the shares are recorded (``pq_only_P``, ``pq_only_Q``, ``pq_both``),
    ``pq_exclusive_chance`` is (re)computed from them: the exclusive share of independent masks
    of the same densities (:func:`~cerp_core.analysis.chance_exclusive`), which ``pq_exclusive``
    has to exceed for P and Q to be more complementary than chance."""
    columns = [c for c in results.columns if c.startswith("pq_")]
    if not columns:
        raise ValueError("results table has no pq_* columns (no CERP run recorded them)")
    rows = results.dropna(subset=columns, how="all")
    if {"pq_only_P", "pq_only_Q", "pq_both"} <= set(columns):
        p_density, q_density = (
            rows["pq_only_P"] + rows["pq_both"],
            rows["pq_only_Q"] + rows["pq_both"],
        )
        densities = zip(p_density, q_density, strict=True)
        chance = [chance_exclusive(p, q) for p, q in densities]
        rows = rows.assign(pq_exclusive_chance=chance)
        columns = list(dict.fromkeys([*columns, "pq_exclusive_chance"]))
    return rows.groupby(GROUP, sort=False)[columns].mean().reset_index()


__all__ = [
    "METRICS",
    "complementarity_table",
    "head_to_head",
    "paper_table",
    "pareto_front",
    "relative_accuracy",
    "standings",
    "summarize",
    "to_latex",
    "to_markdown",
    "tradeoff",
]
