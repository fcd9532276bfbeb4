"""Each figure function draws labelled axes from small inputs; save_figure writes PNG and PDF."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from test_analysis import NUM_ITEMS, NUM_USERS, small_cerp  # noqa: E402

from cerp_core import analysis, plots  # noqa: E402
from cerp_core.embeddings import METHODS  # noqa: E402

RNG = np.random.default_rng(0)


def budget_table() -> pd.DataFrame:
    rows = [
        {"method": "full", "budget": 1.0, "num_params": 1000, "recall@20": 0.30, "ndcg@20": 0.20}
    ]
    for method, scale in (("hash", 0.6), ("cerp", 0.9), ("pep", 0.8)):
        for budget in (0.05, 0.1, 0.25):
            rows.append(
                {
                    "method": method,
                    "budget": budget,
                    "num_params": int(1000 * budget),
                    "recall@20": 0.3 * scale * (1 + budget) / 1.25,
                    "ndcg@20": 0.2 * scale * (1 + budget) / 1.25,
                }
            )
    return pd.DataFrame(rows)


def protocol_table() -> pd.DataFrame:
    rows = []
    for protocol, lift in (("validation", 1.0), ("paper", 1.1)):
        for method, budget, value in (("full", 1.0, 0.15), ("cerp", 0.1, 0.12)):
            rows.append(
                {
                    "dataset": "gowalla",
                    "backbone": "lightgcn",
                    "method": method,
                    "budget": budget,
                    "protocol": protocol,
                    "recall@20": value * lift,
                    "ndcg@20": value * lift * 0.8,
                }
            )
    return pd.DataFrame(rows)


def complementarity_frame() -> pd.DataFrame:
    stats = {
        "CERP": analysis.complementarity(small_cerp(0.5)),
        "CERP w/o regularizer": analysis.complementarity(small_cerp(0.7)),
    }
    return pd.DataFrame.from_dict(stats, orient="index")


def entity_frame() -> pd.DataFrame:
    return analysis.entity_sizes(
        small_cerp(), NUM_USERS, RNG.integers(5, 50, NUM_USERS), RNG.integers(0, 40, NUM_ITEMS)
    )


MASKS = {"P": RNG.random((20, 8)) > 0.6, "Q": torch.rand(20, 8) > 0.3}
STEPS = pd.DataFrame({"step": np.arange(50), "num_nonzero": np.linspace(320, 40, 50).astype(int)})
FIGURES: dict[str, Callable[[], Figure]] = {
    "popularity": lambda: plots.plot_popularity(RNG.zipf(1.5, 300).clip(max=1000)),
    "user_activity": lambda: plots.plot_user_activity(
        RNG.integers(5, 200, 100), RNG.integers(0, 80, 150)
    ),
    "composition_grid": lambda: plots.plot_composition_grid(NUM_USERS, NUM_ITEMS, 6),
    "sparsity_curve": lambda: plots.plot_sparsity_curve(
        {"CERP": STEPS, "no regularizer": STEPS.assign(num_nonzero=STEPS.num_nonzero + 20)},
        targets=(200, 100),
        snapshots=[(20, 198), (40, 99)],
        stored=320,
    ),
    "training_curves": lambda: plots.plot_training_curves(
        {"full": pd.DataFrame({"epoch": [1, 2, 3], "ndcg@20": [0.1, 0.15, 0.17]})}
    ),
    "budget_curves": lambda: plots.plot_budget_curves(budget_table()),
    "mask_heatmap": lambda: plots.plot_mask_heatmap(MASKS, max_rows=10),
    "nonzeros": lambda: plots.plot_nonzeros_per_row_and_dim(MASKS),
    "entity_sizes": lambda: plots.plot_entity_sizes(entity_frame()),
    "thresholds": lambda: plots.plot_thresholds_against_weights(
        {"P": RNG.random(48) * 0.1, "Q": RNG.random(48) * 0.05},
        {"P": RNG.normal(0, 0.1, 48), "Q": RNG.normal(0, 0.1, 48)},
    ),
    "complementarity": lambda: plots.plot_complementarity(complementarity_frame()),
    "protocols": lambda: plots.plot_protocol_comparison(
        protocol_table(),
        references=pd.DataFrame(
            {
                "dataset": ["gowalla"],
                "backbone": ["lightgcn"],
                "source": ["LightGCN paper"],
                "recall@20": [0.183],
                "ndcg@20": [0.155],
            }
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_has_labelled_axes(name: str) -> None:
    plots.use_style()
    fig = FIGURES[name]()
    try:
        assert isinstance(fig, Figure)
        drawn = [ax for ax in fig.axes if ax.has_data() and ax.get_label() != "<colorbar>"]
        assert drawn, "no axes with data"
        for ax in drawn:
            assert ax.get_xlabel(), f"{name}: x axis unlabelled"
            assert ax.get_ylabel(), f"{name}: y axis unlabelled"
    finally:
        plt.close(fig)


@pytest.mark.slow
def test_save_figure_writes_png_and_pdf(tmp_path: Path) -> None:
    fig = plots.plot_budget_curves(budget_table())
    paths = plots.save_figure(fig, "budget", tmp_path / "figures")
    plt.close(fig)
    assert [p.name for p in paths] == ["budget.png", "budget.pdf"]
    assert (tmp_path / "figures" / "budget.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "figures" / "budget.pdf").read_bytes()[:4] == b"%PDF"


def test_budget_curves_use_log_x_and_full_reference() -> None:
    fig = plots.plot_budget_curves(budget_table(), metrics=("recall@20",))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "Recall@20" in ax.get_ylabel()
    full_lines = [line for line in ax.get_lines() if "Full table" in line.get_label()]
    assert len(full_lines) == 1 and full_lines[0].get_ydata()[0] == pytest.approx(0.30)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["50\n(0.05)", "100\n(0.1)", "250\n(0.25)"]  # a tick under every budget
    plt.close(fig)


def test_budget_curves_keep_equal_results_apart() -> None:
    """Two methods with the same accuracy at the same sizes are drawn side by side, centred on
    the true sizes, not on top of each other."""
    table = budget_table().replace({"method": {"pep": "qr"}})
    table.loc[table["method"] == "qr", "recall@20"] = table.loc[
        table["method"] == "cerp", "recall@20"
    ].to_numpy()
    fig = plots.plot_budget_curves(table, metrics=("recall@20",))
    xs = {c.get_label(): c.lines[0].get_xdata() for c in fig.axes[0].containers}
    plt.close(fig)
    assert xs["QR trick"][0] != pytest.approx(xs["CERP"][0])
    middle = np.exp(np.mean([np.log(x[0]) for x in xs.values()]))
    assert middle == pytest.approx(50)  # the methods' shifts centre on the true size


def test_budget_curves_in_bytes_with_error_bars_over_seeds() -> None:
    """Two seeds 0.02 apart give error bars of their standard deviation (0.02 / sqrt 2); x is
    the stored bytes when asked."""
    one = budget_table().assign(seed=0, memory_bytes=lambda t: t["num_params"] * 6)
    two = one.assign(seed=1, **{"recall@20": one["recall@20"] + 0.02})
    fig = plots.plot_budget_curves(pd.concat([one, two]), metrics=("recall@20",), x="memory_bytes")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("Stored embedding bytes")
    (cerp,) = [c for c in ax.containers if c.get_label() == "CERP"]
    line, _, (bars,) = cerp.lines
    order = plots.method_order(["hash", "cerp", "pep"])  # drawn in this order, dodged about 0
    shift = plots.DODGE ** (order.index("cerp") - 1)
    assert line.get_xdata() == pytest.approx([300 * shift, 600 * shift, 1500 * shift])  # 6 B each
    spans = [segment[1, 1] - segment[0, 1] for segment in bars.get_segments()]
    assert spans == pytest.approx([2 * 0.02 / np.sqrt(2)] * 3)
    plt.close(fig)
    with pytest.raises(ValueError, match="x must be one of"):
        plots.plot_budget_curves(one, x="budget")


def test_threshold_panels_count_the_kept_entries() -> None:
    thresholds = {"P": np.array([0.1, 0.1, 0.3, 0.3])}
    weights = {"P": np.array([0.2, -0.05, -0.4, 0.1])}  # kept: 0.2 and -0.4
    fig = plots.plot_thresholds_against_weights(thresholds, weights)
    assert fig.axes[0].get_title() == "P: 50.0% of entries kept (right of the line)"
    plt.close(fig)


def test_sparsity_curve_labels_each_target() -> None:
    steps = pd.DataFrame({"step": [0, 1, 2], "num_nonzero": [100, 60, 20]})
    ax = plots.plot_sparsity_curve(steps, targets=[50, 25], snapshots=[(1, 60)]).axes[0]
    assert [t.get_text() for t in ax.texts] == ["target 50", "target 25"]


def test_mask_heatmap_spreads_its_rows_over_the_whole_table() -> None:
    """Q's first rows are users only (entity blocks); evenly spaced rows reach the last one."""
    mask = np.zeros((30, 4), dtype=bool)
    mask[29] = True  # only the last row keeps anything
    ax = plots.plot_mask_heatmap({"Q": mask}, max_rows=10).axes[0]
    assert ax.get_title() == "Q\n3.3% kept (10 of 30 rows, evenly spaced)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "6", "13", "23", "29"]
    assert ax.images[0].get_array()[-1].all()  # the last row shown is row 29


def test_entity_size_boxes_start_at_zero() -> None:
    fig = plots.plot_entity_sizes(entity_frame())
    assert fig.axes[1].get_ylim()[0] == 0
    plt.close(fig)


def test_complementarity_names_the_lost_entities_and_marks_the_chance_share() -> None:
    stats = complementarity_frame()
    fig = plots.plot_complementarity(stats)
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert all(t.endswith("entities all-zero") for t in texts) and len(texts) == 2
    (ticks,) = fig.axes[1].collections
    assert list(ticks.get_offsets()[:, 0]) == pytest.approx(list(stats["exclusive_chance"] * 100))
    plt.close(fig)


def test_every_registered_method_has_its_own_style() -> None:
    """Each compact method has its own color; the reference rows share grey shades."""
    assert set(plots.STYLES) == set(METHODS)
    compact = [plots.STYLES[name] for name, m in METHODS.items() if not m.reference]
    assert len({slot for slot, _, _ in compact}) == len(compact)


def test_published_numbers_mark_the_full_table_bars_only() -> None:
    fig = FIGURES["protocols"]()
    try:
        for ax, metric_value in zip(fig.axes, (0.183, 0.155), strict=True):
            marks = [c for c in ax.collections if c.get_label() == "published: LightGCN paper"]
            assert len(marks) == 1  # one full-table bar in the gowalla/lightgcn panel
            assert marks[0].get_offsets()[0][1] == pytest.approx(metric_value)
    finally:
        plt.close(fig)
