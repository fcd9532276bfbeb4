"""Every figure of the tutorial notebooks, and the small tables the figures are drawn from.

Each ``plot_*`` function takes arrays or DataFrames and returns a matplotlib ``Figure`` with
labelled axes (units in brackets), a legend where several series share an axis, seaborn's
color-blind-safe palette, and markers / line styles that also tell series apart in grey-scale
print. :func:`save_figure` writes a PNG (150 dpi) and a vector PDF of a figure.

The numbers behind the figures of trained tables (entity sizes, thresholds, mask counts, P/Q
complementarity) come from :mod:`cerp_core.analysis`, usable without drawing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, NullLocator

from cerp_core.analysis import KIND_ORDER, ArrayLike, as_numpy, nonzero_counts
from cerp_core.embeddings import FULL_MODEL, METHODS
from cerp_core.embeddings.cerp import composition_indices

PALETTE = "colorblind"
LineStyle = str | tuple[int, tuple[int, ...]]
STYLES: dict[str, tuple[int, str, LineStyle]] = {
    "popularity": (7, "x", ":"),
    "full": (7, "o", "-"),
    "lowdim": (8, "v", "--"),
    "hash": (1, "s", "--"),
    "qr": (2, "^", "-."),
    "tt": (3, "D", ":"),
    "pep": (4, "P", (0, (5, 1))),
    "magprune": (5, "X", (0, (3, 1, 1, 1))),
    "cerp-noreg": (9, "*", (0, (1, 1))),
    "cerp-b1000": (6, "*", "-."),
    "cerp": (0, "*", "-"),
}
"""How each registered method is drawn in every figure: a slot of seaborn's color-blind palette,
a marker and a line style (a method without an entry is drawn in black with its name)."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # series that are not methods (curves, masks)
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1)), "-")
PROTOCOL_LABELS = {
    "validation": "validation split (suite)",
    "paper": "authors' protocol (test-set selection, their batches)",
}
METRIC_LABELS = {
    "recall@20": "Recall@20",
    "ndcg@20": "NDCG@20",
    "recall@10": "Recall@10",
    "ndcg@10": "NDCG@10",
}


def use_style() -> None:
    """The notebooks' look: white grid, color-blind palette, print-sized fonts."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.9)
    plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42})


def method_label(method: str) -> str:
    """The registry's label of a method (its name for one the registry does not know)."""
    return METHODS[method].label if method in METHODS else method


def method_style(method: str) -> dict[str, Any]:
    """Color, marker, line style and label of a method (:data:`STYLES`), the same in every
    figure; a method without a style is drawn in black with its label."""
    if method not in STYLES:
        return {"color": "black", "marker": ".", "linestyle": "-", "label": method_label(method)}
    slot, marker, linestyle = STYLES[method]
    color = sns.color_palette(PALETTE, 10)[slot]
    return {
        "color": color,
        "marker": marker,
        "linestyle": linestyle,
        "label": method_label(method),
    }


def method_order(methods: Sequence[str]) -> list[str]:
    """``methods`` in the registry's order, unregistered ones last by name."""
    order = list(METHODS)
    return sorted(
        methods, key=lambda m: (m not in METHODS, order.index(m) if m in METHODS else 0, m)
    )


def save_figure(
    fig: Figure,
    name: str,
    folder: str | Path = "../figures",
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
) -> list[Path]:
    """Write ``folder/name.png`` and ``folder/name.pdf`` (created if missing); return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths


def _budget_ticks(ax: Axes, positions: pd.Series) -> None:
    """A log x axis whose ticks are the budgets: at each budget's mean x (``positions``, indexed
    by budget), labelled with that x and the budget, so that every point has a tick below it."""
    ax.set_xscale("log")
    plain = EngFormatter(places=0, sep=" ")
    labels = [f"{plain(value)}\n({budget:g})" for budget, value in positions.items()]
    ax.set_xticks(positions.to_numpy(), labels, fontsize="x-small")
    ax.xaxis.set_minor_locator(NullLocator())


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


# ----------------------------------------------------------------------------- data


def plot_popularity(item_popularity: ArrayLike, head_share: float = 0.2) -> Figure:
    """Long tail of item popularity: rank-frequency on log-log axes, and the cumulative share
    of interactions held by the most popular items (the head ``head_share`` marked)."""
    counts = np.sort(as_numpy(item_popularity).astype(float))[::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    ranks = np.arange(1, len(counts) + 1)
    positive = counts > 0
    left.loglog(ranks[positive], counts[positive], marker=".", linestyle="none", markersize=3)
    left.set(
        xlabel="Item rank (1 = most popular)",
        ylabel="Training interactions (count)",
        title="Rank-frequency (log-log)",
    )
    share_items = ranks / len(counts) * 100
    share_interactions = np.cumsum(counts) / max(counts.sum(), 1) * 100
    right.plot(share_items, share_interactions, label="items by popularity")
    right.plot([0, 100], [0, 100], linestyle="--", color="grey", label="uniform popularity")
    head = int(math.ceil(head_share * len(counts)))
    held = share_interactions[head - 1] if head else 0.0
    right.axvline(head_share * 100, color="grey", linestyle=":", linewidth=1)
    right.annotate(
        f"top {head_share:.0%} of items:\n{held:.0f}% of interactions",
        (head_share * 100, held),
        xytext=(35, 30),
        textcoords="data",
        arrowprops={"arrowstyle": "->", "color": "grey"},
    )
    right.set(
        xlabel="Most popular items (% of catalogue)",
        ylabel="Training interactions (% of total)",
        title="Concentration",
        xlim=(0, 100),
        ylim=(0, 100),
    )
    right.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_user_activity(
    user_activity: ArrayLike, item_popularity: ArrayLike | None = None
) -> Figure:
    """Histogram of training interactions per user (log-spaced bins), with the median marked;
    items per popularity as a second series when given."""
    series = {"users": as_numpy(user_activity)}
    if item_popularity is not None:
        series["items"] = as_numpy(item_popularity)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    top = max(max(int(v.max(initial=1)), 1) for v in series.values())
    bins = np.unique(np.logspace(0, math.log10(top + 1), 30).round())
    colors = sns.color_palette(PALETTE, len(series))
    for (name, values), color, hatch in zip(series.items(), colors, ("", "//"), strict=False):
        ax.hist(
            values[values > 0],
            bins=bins,
            color=color,
            alpha=0.6,
            hatch=hatch,
            label=f"{name} (median {np.median(values):.0f})",
        )
        ax.axvline(np.median(values), color=color, linestyle="--", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="Training interactions per user / item (count, log scale)",
        ylabel="Users / items (count)",
    )
    ax.set_title("Activity distribution", pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)  # off the bars
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- CERP mechanics


def plot_composition_grid(num_users: int, num_items: int, bucket_size: int) -> Figure:
    """Where every entity sits in CERP's two meta tables: cell (row of Q, row of P).

    Entities in the same grid row share a row of P; in the same column, a row of Q. No cell
    holds two entities iff ``ceil(N / b) <= b``. Ids are written in the cells for small grids.
    """
    num_entities = num_users + num_items
    ids = torch.arange(num_entities)
    rows_p, rows_q = (r.numpy() for r in composition_indices(ids, num_entities, bucket_size))
    per_row = math.ceil(num_entities / bucket_size)
    grid = np.zeros((bucket_size, max(per_row, int(rows_q.max()) + 1)))
    grid[rows_p, rows_q] = np.where(ids.numpy() < num_users, 1, 2)
    colors = sns.color_palette(PALETTE, 3)
    cmap = ListedColormap([(1, 1, 1), colors[0], colors[1]])
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * grid.shape[1], 1.0 + 0.32 * bucket_size))
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=2, aspect="auto")
    if num_entities <= 400:
        for entity, (p, q) in enumerate(zip(rows_p, rows_q, strict=False)):
            ax.text(
                q,
                p,
                str(entity),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if entity < num_users else "black",
            )
    ax.set_xticks(range(grid.shape[1]))
    ax.set_yticks(range(bucket_size))
    ax.grid(False)
    ax.set(
        xlabel="Row of Q  (entity div ceil(N / b))",
        ylabel="Row of P  (entity mod b)",
        title=f"N = {num_entities} entities, b = {bucket_size}",
    )
    ax.legend(
        handles=[
            Patch(color=colors[0], label="user"),
            Patch(color=colors[1], label="item"),
            Patch(facecolor="white", edgecolor="grey", label="unused pair"),
        ],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    fig.tight_layout()
    return fig


def plot_sparsity_curve(
    steps: pd.DataFrame | Mapping[str, pd.DataFrame],
    targets: Sequence[int] = (),
    snapshots: Sequence[tuple[int, int]] = (),
    stored: int | None = None,
) -> Figure:
    """Non-zero parameters after every stage-1 optimizer step (``steps`` has ``step`` and
    ``num_nonzero``; a mapping draws one curve per variant), the targets as dashed lines and
    the snapshots taken as ``(step, num_nonzero)`` markers; ``stored`` marks the tables' size."""
    curves = {"stage 1": steps} if isinstance(steps, pd.DataFrame) else dict(steps)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    colors = sns.color_palette(PALETTE, len(curves) + 2)
    for (name, frame), color, style in zip(curves.items(), colors, LINESTYLES, strict=False):
        ax.plot(frame["step"], frame["num_nonzero"], color=color, linestyle=style, label=name)
    for i, target in enumerate(targets):
        ax.axhline(
            target, color="grey", linestyle="--", linewidth=1, label="targets" if i == 0 else None
        )
        ax.annotate(
            f"target {target:,}", xy=(0, target), xycoords=("axes fraction", "data"),
            xytext=(3, 2), textcoords="offset points", fontsize="x-small", color="dimgrey",
        )  # fmt: skip
    points = [(step, count) for step, count in snapshots if step is not None]
    if points:
        ax.scatter(
            *zip(*points, strict=True),
            marker="o",
            s=40,
            zorder=3,
            color=colors[-1],
            edgecolor="black",
            label="snapshots",
        )
    if stored is not None:
        ax.axhline(stored, color="black", linestyle=":", linewidth=1, label="stored entries")
    ax.set(
        xlabel="Optimizer step (stage 1)",
        ylabel="Non-zero parameters (count)",
        title="Sparsity during pruning",
    )
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig


def plot_training_curves(
    histories: Mapping[str, pd.DataFrame], metric: str = "ndcg@20", ylabel: str | None = None
) -> Figure:
    """``metric`` per epoch for each labelled training run (``ylabel`` default: validation
    ``metric``; pass one for a loss such as stage 1's ``bpr_loss``)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    colors = sns.color_palette(PALETTE, len(histories))
    for (name, frame), color, marker in zip(histories.items(), colors, MARKERS, strict=False):
        if metric in frame:
            ax.plot(frame["epoch"], frame[metric], color=color, marker=marker, label=name)
    ylabel = ylabel or f"Validation {_metric_label(metric)}"
    ax.set(xlabel="Epoch", ylabel=ylabel, title="Training progress")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- budgets


X_LABELS = {
    "num_params": "Stored embedding parameters (non-zeros, log scale)",
    "memory_bytes": "Stored embedding bytes (values + indices or mask, log scale)",
}


DODGE = 1.025
"""Factor between neighbouring methods' x positions in :func:`plot_budget_curves`."""


def plot_budget_curves(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
    full: Mapping[str, float] | None = None,
    x: str = "num_params",
) -> Figure:
    """Accuracy against stored parameters, or bytes (``x="memory_bytes"``: values plus sparse
    indices or mask, as ``memory()`` reports), log x, one line per method: the mean over seeds,
    with error bars of one standard deviation where there are several seeds.

    Each method's points are shifted along x by a factor of :data:`DODGE` from the next one's
    (centred on the true sizes, which the ticks mark), so that close results at one budget stay
    apart. Methods with a fixed budget (the full table, popularity) are horizontal reference
    lines with their value written beside each panel: the full table from ``full`` (metric ->
    value) if given, else from its rows, and popularity from its rows. One panel per metric;
    each panel's y axis starts at 0; one legend below the panels, so that it hides no line.
    """
    if x not in X_LABELS:
        raise ValueError(f"x must be one of {list(X_LABELS)}, got {x!r}")
    fixed = {m for m in table["method"].unique() if m in METHODS and
             METHODS[m].fixed_budget is not None}  # fmt: skip
    curves = table[~table["method"].isin(fixed)]
    groups = curves.groupby(["method", "budget"], as_index=False)
    grouped = (
        groups[[x, *metrics]]
        .mean()
        .merge(groups[list(metrics)].std().rename(columns={m: f"{m}_std" for m in metrics}))
    )
    references = {m: table.loc[table["method"] == m, list(metrics)].mean().to_dict() for m in fixed}
    if full is not None:
        references[FULL_MODEL] = dict(full)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.4 * len(metrics), 4.0), squeeze=False)
    drawn = method_order(grouped["method"].unique())
    for ax, metric in zip(axes[0], metrics, strict=False):
        for position, method in enumerate(drawn):
            rows = grouped[grouped["method"] == method].sort_values(x)
            spread = rows[f"{metric}_std"]
            shift = DODGE ** (position - (len(drawn) - 1) / 2)
            ax.errorbar(rows[x] * shift, rows[metric],
                        yerr=spread if spread.notna().any() else None,
                        capsize=2.5, **method_style(method))  # fmt: skip
        for method in method_order(list(references)):
            if metric in references[method]:
                style = method_style(method)
                value = references[method][metric]
                ax.axhline(value, color=style["color"], linestyle=style["linestyle"],
                           linewidth=1.4, label=style["label"])  # fmt: skip
                ax.annotate(  # this panel's value, beside the line, outside the data
                    f"{value:.3f}", (1.0, value), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize="x-small", color=style["color"],
                )  # fmt: skip
        _budget_ticks(ax, grouped.groupby("budget")[x].mean())
        ax.grid(axis="y", alpha=0.35)  # faint, so that no reference line merges with it
        ax.set(
            xlabel=X_LABELS[x],
            ylabel=f"Test {_metric_label(metric)}",
            title=_metric_label(metric),
        )
        ax.set_ylim(bottom=0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    columns = min(5, len(labels)) or 1
    rows = -(-len(labels) // columns)
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06 * rows + 0.02, 1, 1))  # one legend below: no line hidden
    return fig


# ----------------------------------------------------------------------------- what pruning kept


def _mask_arrays(masks: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    return {name: as_numpy(mask).astype(bool) for name, mask in masks.items()}


def plot_mask_heatmap(masks: Mapping[str, ArrayLike], max_rows: int = 200) -> Figure:
    """The kept entries of each pruned table (rows x dimensions): at most ``max_rows`` rows,
    evenly spaced over the table, so that a table indexed by entity blocks (CERP's ``Q``) shows
    users and items alike."""
    arrays = _mask_arrays(masks)
    colors = sns.color_palette(PALETTE, 1)
    cmap = ListedColormap([(0.95, 0.95, 0.95), colors[0]])
    fig, axes = plt.subplots(1, len(arrays), figsize=(3.4 * len(arrays) + 0.6, 4.4), squeeze=False)
    for ax, (name, mask) in zip(axes[0], arrays.items(), strict=False):
        shown = min(max_rows, len(mask))
        rows = np.unique(np.linspace(0, len(mask) - 1, shown).round()).astype(int)
        ax.imshow(mask[rows], cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.grid(False)
        ticks = np.unique(np.linspace(0, len(rows) - 1, 5).round()).astype(int)
        ax.set_yticks(ticks, [str(rows[t]) for t in ticks])  # the rows' own indices
        clipped = f" ({shown} of {len(mask)} rows, evenly spaced)" if shown < len(mask) else ""
        ax.set(
            xlabel="Embedding dimension (index)",
            ylabel=f"Row of {name.split(',')[0]} (index)",
            title=f"{name}\n{mask.mean():.1%} kept{clipped}",
        )
    fig.legend(
        handles=[
            Patch(color=colors[0], label="kept (non-zero)"),
            Patch(facecolor=(0.95, 0.95, 0.95), edgecolor="grey", label="pruned (zero)"),
        ],
        loc="upper center",
        ncol=2,
        bbox_to_anchor=(0.5, 0.0),
        frameon=False,
    )
    fig.tight_layout()
    return fig


def plot_nonzeros_per_row_and_dim(masks: Mapping[str, ArrayLike]) -> Figure:
    """Distribution of non-zeros per table row, and non-zero rows per dimension, per table."""
    counts = nonzero_counts(masks)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    colors = sns.color_palette(PALETTE, len(counts))
    width = max(len(c["per_dim"]) for c in counts.values())
    bins = np.arange(-0.5, width + 1.5, max(1, (width + 1) // 32))
    for (name, count), color, hatch, marker in zip(
        counts.items(), colors, ("", "//", "..", "xx"), MARKERS, strict=False
    ):
        left.hist(count["per_row"], bins=bins, color=color, alpha=0.6, hatch=hatch, label=name)
        right.plot(
            np.arange(len(count["per_dim"])),
            count["per_dim"],
            color=color,
            marker=marker,
            markersize=3,
            label=name,
        )
    left.set(xlabel="Non-zeros per row (count)", ylabel="Rows (count)", title="Per row")
    right.set(
        xlabel="Embedding dimension (index)", ylabel="Non-zero rows (count)", title="Per dimension"
    )
    right.set_ylim(bottom=0)
    left.legend()
    right.legend()
    fig.tight_layout()
    return fig


def plot_entity_sizes(sizes: pd.DataFrame) -> Figure:
    """Embedding sizes (non-zeros per composed vector): histogram by user / item, and box plots
    by popularity bucket (``sizes`` from :func:`entity_sizes`)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    palette = dict(zip(KIND_ORDER, sns.color_palette(PALETTE, 2), strict=False))
    width = int(sizes["size"].max()) if len(sizes) else 1
    bins = np.arange(-0.5, width + 1.5, max(1, (width + 1) // 32))
    for kind, hatch in zip(KIND_ORDER, ("", "//"), strict=False):
        values = sizes.loc[sizes["kind"] == kind, "size"]
        left.hist(
            values,
            bins=bins,
            color=palette[kind],
            alpha=0.6,
            hatch=hatch,
            label=f"{kind}s (mean {values.mean():.1f})",
        )
    left.set(
        xlabel="Embedding size (non-zeros per vector)",
        ylabel="Entities (count)",
        title="By entity kind",
    )
    left.legend()
    buckets = list(sizes["popularity"].cat.categories) if len(sizes) else []
    for offset, kind, hatch in zip((-0.2, 0.2), KIND_ORDER, ("", "//"), strict=False):
        groups = [
            sizes.loc[(sizes["kind"] == kind) & (sizes["popularity"] == b), "size"] for b in buckets
        ]
        boxes = right.boxplot(
            [g.to_numpy() for g in groups],
            positions=np.arange(len(buckets)) + offset,
            widths=0.35,
            patch_artist=True,
            flierprops={"markersize": 2},
            medianprops={"color": "black"},
        )
        for box in boxes["boxes"]:
            box.set(facecolor=palette[kind], hatch=hatch, alpha=0.8)
    right.set_xticks(range(len(buckets)), buckets)
    right.legend(
        handles=[
            Patch(facecolor=palette[k], hatch=h, label=k)
            for k, h in zip(KIND_ORDER, ("", "//"), strict=False)
        ],
        title="kind",
    )
    right.set(
        xlabel="Popularity bucket (training interactions, tertiles per kind)",
        ylabel="Embedding size (non-zeros per vector)",
        title="By popularity",
    )
    right.set_ylim(bottom=0)  # sizes are counts from 0: a cut axis would magnify differences
    fig.tight_layout()
    return fig


def _log_span(values: np.ndarray) -> tuple[float, float]:
    """A log axis' limits around the positive ``values`` (a factor of 1.5 either side)."""
    positive = values[values > 0]
    return float(positive.min(initial=1e-6)) / 1.5, float(values.max(initial=1.0)) * 1.5


def plot_thresholds_against_weights(
    thresholds: Mapping[str, ArrayLike], weights: Mapping[str, ArrayLike]
) -> Figure:
    """Every entry of each pruned table: its weight's magnitude ``|w|`` against its learnt
    threshold ``sigmoid(s)`` (hexagonal bins, log counts), each axis spanning its own values.
    Entries right of the diagonal (``|w| > sigmoid(s)``) are kept, those left of it are zero."""
    names = list(thresholds)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names) + 0.8, 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        threshold = as_numpy(thresholds[name]).ravel()
        magnitude = np.abs(as_numpy(weights[name])).ravel()
        kept = float((magnitude > threshold).mean())
        x_span, y_span = _log_span(magnitude), _log_span(threshold)  # each axis its own range
        cells = ax.hexbin(
            np.clip(magnitude, x_span[0], None), threshold, gridsize=40, bins="log", mincnt=1,
            cmap="viridis", xscale="log", yscale="log",
        )  # fmt: skip
        ax.plot(x_span, x_span, color="black", linewidth=1, linestyle="--")  # |w| = σ(s)
        ax.set(
            xlabel="Weight magnitude |w| (log scale)",
            ylabel="Threshold σ(s) (log scale)",
            title=f"{name}: {kept:.1%} of entries kept (right of the line)",
            xlim=x_span,
            ylim=y_span,
        )
        fig.colorbar(cells, ax=ax, label="Entries (count, log scale)")
    fig.tight_layout()
    return fig


def plot_complementarity(stats: pd.DataFrame) -> Figure:
    """P/Q complementarity per variant (rows of ``stats``, index = variant label, columns from
    :func:`~cerp_core.analysis.complementarity`): stacked shares of (entity, dimension) pairs,
    and the exclusive share (pairs non-zero in exactly one of P and Q, among pairs non-zero in
    at least one) against what independent masks of the same densities give (a black tick,
    ``exclusive_chance``), annotated with the entities whose composed vector is all zero."""
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 1.6 + 0.7 * len(stats)), gridspec_kw={"width_ratios": [3, 1.6]}
    )
    labels = [str(i) for i in stats.index]
    _draw_pair_shares(left, stats, labels)
    _draw_exclusive_shares(right, stats, labels)
    for ax in (left, right):
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.35 - 0.05 * len(stats)),
            ncol=4,
            fontsize="small",
            frameon=False,
        )
    right.set_yticklabels([])
    fig.tight_layout()
    return fig


def _draw_pair_shares(ax: Axes, stats: pd.DataFrame, labels: list[str]) -> None:
    """Stacked bars: the shares of (entity, dimension) pairs held by P only, Q only, both, none."""
    categories = {
        "only_P": "only P non-zero",
        "only_Q": "only Q non-zero",
        "both": "both non-zero",
        "both_zero": "both zero",
    }
    colors = sns.color_palette(PALETTE, len(categories))
    start = np.zeros(len(stats))
    for (column, label), color, hatch in zip(
        categories.items(), colors, ("", "//", "..", "xx"), strict=False
    ):
        values = stats[column].to_numpy() * 100
        ax.barh(
            labels, values, left=start, color=color, hatch=hatch, label=label, edgecolor="white"
        )
        start += values
    ax.set(
        xlabel="(entity, dimension) pairs (% of all)",
        ylabel="Variant",
        title="Who holds each entry",
        xlim=(0, 100),
    )


def _draw_exclusive_shares(ax: Axes, stats: pd.DataFrame, labels: list[str]) -> None:
    """Bars of the exclusive share, a tick at chance, and the all-zero entities written in."""
    exclusive = stats["exclusive"].to_numpy() * 100
    chance = stats["exclusive_chance"].to_numpy() * 100
    ax.barh(labels, exclusive, color=sns.color_palette(PALETTE, 5)[4])
    ax.scatter(
        chance, labels, marker="|", s=400, linewidths=2, color="black", zorder=3,
        label="independent masks of the same densities",
    )  # fmt: skip
    for y, (share, lost) in enumerate(zip(exclusive, stats["zero_entities"], strict=False)):
        ax.annotate(
            f"{share:.1f}%; {int(lost)} entities all-zero",
            (0, y),
            xytext=(3, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize="small",
            color="white",
        )
    ax.set(
        xlabel="Exclusive entries (% of non-zero pairs)",
        ylabel="Variant",
        title="Held by exactly one of P, Q",
        xlim=(0, 100),
    )


# ----------------------------------------------------------------------------- paper


def _mark_published(ax: Axes, bars: pd.DataFrame, references: pd.DataFrame, metric: str) -> None:
    """Black markers of the published full-model numbers on the full-table bars (``bars``: one
    row per bar, in order, with its ``dataset``, ``backbone`` and ``method``)."""
    for i, key in enumerate(bars.itertuples()):
        if key.method != FULL_MODEL:
            continue
        same = (references["dataset"] == key.dataset) & (references["backbone"] == key.backbone)
        for (_, row), marker in zip(references[same].iterrows(), ("D", "*"), strict=False):
            ax.scatter(
                [i], [row[metric]], marker=marker, color="black", zorder=4, s=40,
                label=f"published: {row['source']}",
            )  # fmt: skip


def plot_protocol_comparison(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
    references: pd.DataFrame | None = None,
) -> Figure:
    """Test accuracy per configuration under the suite's protocol and the paper's, side by side.

    ``table`` has ``dataset``, ``backbone``, ``method``, ``budget``, ``protocol`` and the
    metrics; ``references`` (``dataset``, ``backbone``, ``source`` and metric columns) adds the
    published full-model numbers as black markers on the matching full-table bars.
    """
    frame = table.sort_values(["dataset", "backbone", "method", "budget"]).copy()
    frame["configuration"] = [
        f"{r.dataset}\n{r.backbone}\n{method_label(r.method)}"
        + ("" if r.method == FULL_MODEL else f" {r.budget:g}")
        for r in frame.itertuples()
    ]
    order = list(dict.fromkeys(frame["configuration"]))
    keys = frame.drop_duplicates("configuration").set_index("configuration")
    protocols = [p for p in PROTOCOL_LABELS if p in set(frame["protocol"])]
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(max(6, 1.3 * len(order) + 2), 3.2 * len(metrics)), squeeze=False
    )
    palette = dict(zip(protocols, sns.color_palette(PALETTE, len(protocols)), strict=False))
    for ax, metric in zip(axes[:, 0], metrics, strict=False):
        sns.barplot(
            frame,
            x="configuration",
            y=metric,
            hue="protocol",
            order=order,
            hue_order=protocols,
            palette=palette,
            ax=ax,
            errorbar=None,
        )
        for bars, hatch in zip(ax.containers, ("", "//"), strict=False):
            for bar in bars:
                bar.set_hatch(hatch)
        if references is not None and metric in references:
            _mark_published(ax, keys.loc[order], references, metric)
        ax.set(
            xlabel="Data set / backbone / method (budget)", ylabel=f"Test {_metric_label(metric)}"
        )
        handles, labels = ax.get_legend_handles_labels()
        labels = [PROTOCOL_LABELS.get(label, label) for label in labels]
        unique = dict(zip(labels, handles, strict=False))
        ax.legend(unique.values(), unique.keys(), fontsize="small")
    axes[0, 0].set_title("Suite protocol vs. the paper's protocol")
    fig.tight_layout()
    return fig
