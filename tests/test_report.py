"""Reports on a fixed results table: summaries, paper tables, Markdown, LaTeX, fronts, ratios."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cerp_core.report import (
    complementarity_table,
    head_to_head,
    paper_table,
    pareto_front,
    relative_accuracy,
    standings,
    summarize,
    to_latex,
    to_markdown,
    tradeoff,
)

FULL = 1000
# dataset, backbone, method, budget, seed, recall@20, ndcg@20
ROWS = [
    ("toy", "mf", "full", 1.0, 0, 0.20, 0.10),
    ("toy", "mf", "full", 1.0, 1, 0.22, 0.12),
    ("toy", "mf", "hash", 0.2, 0, 0.10, 0.05),
    ("toy", "mf", "hash", 0.2, 1, 0.12, 0.07),
    ("toy", "mf", "hash", 0.1, 0, 0.08, 0.04),
    ("toy", "mf", "hash", 0.1, 1, 0.10, 0.05),
    ("toy", "mf", "my_cerp", 0.2, 0, 0.16, 0.05),
    ("toy", "mf", "my_cerp", 0.2, 1, 0.18, 0.06),
    ("toy", "mf", "my_cerp", 0.1, 0, 0.15, 0.04),
    ("toy", "mf", "my_cerp", 0.1, 1, 0.15, 0.05),
    ("toy", "lightgcn", "full", 1.0, 0, 0.30, 0.20),
    ("toy", "lightgcn", "hash", 0.2, 0, 0.12, 0.11),
]


@pytest.fixture
def results() -> pd.DataFrame:
    frame = pd.DataFrame(
        ROWS, columns=["dataset", "backbone", "method", "budget", "seed", "recall@20", "ndcg@20"]
    )
    frame["num_params"] = (frame["budget"] * FULL).astype(int)
    frame["param_fraction"] = frame["budget"]
    frame["memory_bytes"] = frame["num_params"] * 4
    return frame


def test_summarize_means_and_sample_stds_over_seeds(results: pd.DataFrame) -> None:
    summary = summarize(results)
    assert list(summary["method"][:3]) == ["full", "hash", "hash"]  # order of appearance
    summary = summary.set_index(["backbone", "method", "budget"])
    row = summary.loc[("mf", "my_cerp", 0.2)]
    assert row["seeds"] == 2
    assert row["num_params"] == 200
    assert row["recall@20_mean"] == pytest.approx(0.17)
    assert row["recall@20_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert math.isnan(summary.loc[("lightgcn", "hash", 0.2), "ndcg@20_std"])


def test_paper_table_cells_best_marks_and_layout(results: pd.DataFrame) -> None:
    table = paper_table(results, precision=3)
    assert table.index.names == ["dataset", "backbone", "method"]
    assert list(table.index.get_level_values("method")) == [
        "full",
        "hash",
        "my_cerp",
        "full",
        "hash",
    ]
    assert list(table.columns) == [
        (1.0, "recall@20"),
        (1.0, "ndcg@20"),
        (0.2, "recall@20"),
        (0.2, "ndcg@20"),
        (0.1, "recall@20"),
        (0.1, "ndcg@20"),
    ]
    table = table.sort_index()  # for fast lookups; the order is checked above
    mf = table.loc[("toy", "mf")]
    assert mf.loc["my_cerp", (0.2, "recall@20")] == "**0.170 ± 0.014**"
    assert mf.loc["hash", (0.2, "recall@20")] == "0.110 ± 0.014"
    assert mf.loc["hash", (0.2, "ndcg@20")] == "**0.060 ± 0.014**"
    assert mf.loc["my_cerp", (0.2, "ndcg@20")] == "0.055 ± 0.007"
    # a tie marks both cells; a column with a single result marks nothing
    assert mf.loc["hash", (0.1, "ndcg@20")] == "**0.045 ± 0.007**"
    assert mf.loc["my_cerp", (0.1, "ndcg@20")] == "**0.045 ± 0.007**"
    assert mf.loc["full", (1.0, "recall@20")] == "0.210 ± 0.014"
    assert mf.loc["full", (0.2, "recall@20")] == "-"
    # one seed: no std; the lightgcn panel is compared only with itself
    lightgcn = table.loc[("toy", "lightgcn")]
    assert lightgcn.loc["hash", (0.2, "recall@20")] == "0.120"
    assert lightgcn.loc["hash", (0.1, "recall@20")] == "-"


def test_paper_table_selects_budgets(results: pd.DataFrame) -> None:
    table = paper_table(results, metrics=["recall@20"], budgets=[0.1])
    assert list(table.columns) == [(0.1, "recall@20")]
    with pytest.raises(ValueError, match=r"budgets \[0.5\] are not in the results"):
        paper_table(results, budgets=[0.1, 0.5])


def test_missing_column_is_named(results: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="ndcg@20"):
        paper_table(results.drop(columns="ndcg@20"))


def test_two_configurations_are_not_averaged_as_seeds(results: pd.DataFrame) -> None:
    twice = pd.concat([results, results.iloc[[0]]])
    first = results.iloc[0]
    pattern = f"2 rows share .*/{first['method']}/{first['budget']} seed "
    with pytest.raises(ValueError, match=pattern):
        summarize(twice)


def test_markdown(results: pd.DataFrame) -> None:
    table = paper_table(results[results["backbone"] == "mf"], metrics=["recall@20"], precision=2)
    assert to_markdown(table) == "\n".join(
        [
            "| dataset | backbone | method | 1.0 recall@20 | 0.2 recall@20 | 0.1 recall@20 |",
            "| --- | --- | --- | ---: | ---: | ---: |",
            "| toy | mf | full | 0.21 ± 0.01 | - | - |",
            "| toy | mf | hash | - | 0.11 ± 0.01 | 0.09 ± 0.01 |",
            "| toy | mf | my_cerp | - | **0.17 ± 0.01** | **0.15 ± 0.00** |",
        ]
    )


def test_latex(results: pd.DataFrame) -> None:
    latex = to_latex(paper_table(results, precision=2)).splitlines()
    assert latex[0] == r"\begin{tabular}{lllrrrrrr}"
    assert latex[2] == (
        r" &  &  & \multicolumn{2}{c}{1.0} & \multicolumn{2}{c}{0.2} & \multicolumn{2}{c}{0.1} \\"
    )
    assert latex[3] == r"\cmidrule(lr){4-5} \cmidrule(lr){6-7} \cmidrule(lr){8-9}"
    assert latex[4] == (
        r"dataset & backbone & method & recall@20 & ndcg@20 & recall@20 & ndcg@20 "
        r"& recall@20 & ndcg@20 \\"
    )
    assert latex[8] == (
        r" &  & my\_cerp & - & - & \textbf{0.17 $\pm$ 0.01} & 0.06 $\pm$ 0.01 "
        r"& \textbf{0.15 $\pm$ 0.00} & \textbf{0.04 $\pm$ 0.01} \\"
    )
    assert latex[9] == r"\midrule"  # between panels
    assert latex[10].startswith(r" & lightgcn & full & 0.30 & 0.20 & ")
    assert latex[-2:] == [r"\bottomrule", r"\end{tabular}"]


def test_pareto_front_per_panel(results: pd.DataFrame) -> None:
    front = pareto_front(results)
    mf = front[front["backbone"] == "mf"]
    assert list(zip(mf["method"], mf["budget"], strict=True)) == [
        ("my_cerp", 0.1),
        ("my_cerp", 0.2),
        ("full", 1.0),
    ]
    assert list(mf["num_params"]) == [100, 200, 1000]
    lightgcn = front[front["backbone"] == "lightgcn"]
    assert list(lightgcn["method"]) == ["hash", "full"]


def test_tradeoff_points_flag_the_front(results: pd.DataFrame) -> None:
    points = tradeoff(results, y="ndcg@20")
    mf = points[points["backbone"] == "mf"].set_index(["method", "budget"])
    assert mf.loc[("hash", 0.1), "memory_bytes"] == 400
    assert mf.loc[("hash", 0.1), "ndcg@20"] == pytest.approx(0.045)
    # hash and my_cerp tie at 0.1; hash 0.2 beats my_cerp 0.2 on ndcg
    assert mf["pareto"].to_dict() == {
        ("full", 1.0): True,
        ("hash", 0.2): True,
        ("hash", 0.1): True,
        ("my_cerp", 0.2): False,
        ("my_cerp", 0.1): True,
    }


def test_relative_accuracy_pairs_seeds_with_the_full_model(results: pd.DataFrame) -> None:
    relative = relative_accuracy(results).set_index(["backbone", "method", "budget"])
    expected = (0.16 / 0.20 + 0.18 / 0.22) / 2
    assert relative.loc[("mf", "my_cerp", 0.2), "relative_recall@20_mean"] == pytest.approx(
        expected
    )
    assert relative.loc[("mf", "full", 1.0), "relative_ndcg@20_mean"] == pytest.approx(1.0)
    assert relative.loc[("lightgcn", "hash", 0.2), "relative_recall@20_mean"] == pytest.approx(0.4)


def test_relative_accuracy_needs_the_full_model(results: pd.DataFrame) -> None:
    lacking = results[~((results["backbone"] == "lightgcn") & (results["method"] == "full"))]
    with pytest.raises(ValueError, match=r"no 'full' model for \['toy/lightgcn'\]"):
        relative_accuracy(lacking)


def test_rows_below_popularity_are_marked_and_reference_rows_never_bold(
    results: pd.DataFrame,
) -> None:
    extra = pd.DataFrame(
        [("toy", "mf", "popularity", 0.0, s, 0.11, 0.045) for s in (0, 1)]
        + [("toy", "mf", "lowdim", 0.2, s, 0.17, 0.09) for s in (0, 1)],
        columns=["dataset", "backbone", "method", "budget", "seed", "recall@20", "ndcg@20"],
    ).assign(num_params=0, param_fraction=0.0, memory_bytes=0)
    table = paper_table(pd.concat([results, extra], ignore_index=True), precision=3)
    mf = table.loc[("toy", "mf")]
    # hash at 0.2 (0.110) ties popularity: not below; hash at 0.1 (0.090) is below
    assert mf.loc["hash", (0.2, "recall@20")] == "0.110 ± 0.014"
    assert mf.loc["hash", (0.1, "recall@20")] == "0.090 ± 0.014 †"
    assert mf.loc["popularity", (0.0, "recall@20")] == "0.110 ± 0.000"
    # lowdim (0.170) beats every compact method at 0.2 but is a reference row: my_cerp is bold
    assert mf.loc["lowdim", (0.2, "recall@20")] == "0.170 ± 0.000"
    assert mf.loc["my_cerp", (0.2, "recall@20")] == "**0.170 ± 0.014**"
    assert mf.loc["my_cerp", (0.1, "ndcg@20")] == "**0.045 ± 0.007**"  # ties: not below
    lightgcn = table.loc[("toy", "lightgcn")]  # no popularity row in that panel: no marks
    assert "†" not in "".join(lightgcn.fillna("").to_numpy().ravel())
    assert r"0.090 $\pm$ 0.014 $^\dagger$" in to_latex(table)


def test_head_to_head_compares_at_each_budget_and_against_the_fixed_references(
    results: pd.DataFrame,
) -> None:
    pep = results[(results["method"] == "hash") & (results["budget"] == 0.1)].assign(
        method="pep", **{"recall@20": [0.16, 0.12]}
    )  # 0.14 +- 0.028 against my_cerp's 0.15 +- 0
    table = head_to_head(pd.concat([results, pep]), method="my_cerp")
    table = table.set_index(["budget", "baseline"])
    assert sorted(table.index) == [
        (0.1, "full"), (0.1, "hash"), (0.1, "pep"), (0.2, "full"), (0.2, "hash")
    ]  # fmt: skip
    row = table.loc[(0.1, "hash")]  # 0.15 +- 0 against 0.09 +- 0.0141
    assert row["difference"] == pytest.approx(0.06)
    assert row["ratio"] == pytest.approx(0.15 / 0.09)
    assert row["noise"] == pytest.approx(math.sqrt(2) * 0.01)
    assert row["beyond_noise"]
    close = table.loc[(0.1, "pep")]
    assert close["difference"] == pytest.approx(0.01) and not close["beyond_noise"]
    assert table.loc[(0.2, "full"), "difference"] == pytest.approx(-0.04)  # 0.17 vs 0.21
    with pytest.raises(ValueError, match="no result of method 'cerp'"):
        head_to_head(results)


def test_standings_rank_the_method_among_compact_methods_per_budget(results: pd.DataFrame) -> None:
    pep = results[(results["method"] == "hash") & (results["backbone"] == "mf")].assign(
        method="pep", **{"recall@20": [0.30, 0.30, 0.14, 0.14]}
    )  # pep: best at 0.2 (0.30 against my_cerp's 0.17 +- 0.014), behind my_cerp at 0.1
    table = standings(pd.concat([results, pep]), method="my_cerp").set_index("budget")
    assert list(table.index) == [0.2, 0.1]  # mf only: my_cerp has no lightgcn row
    tight, loose = table.loc[0.1], table.loc[0.2]
    assert (loose["best"], loose["rank"], loose["compact"], loose["seeds"]) == ("pep", 2, 3, 2)
    assert loose["best_value"] == pytest.approx(0.30) and loose["my_cerp"] == pytest.approx(0.17)
    assert loose["beyond_noise"]  # 0.13 against 2 * 0.014
    assert (tight["best"], tight["rank"]) == ("my_cerp", 1) and not tight["beyond_noise"]
    assert tight["full"] == pytest.approx(0.21) and math.isnan(tight["popularity"])


def test_complementarity_table_adds_the_chance_share(results: pd.DataFrame) -> None:
    cerp = results[results["method"] == "my_cerp"].assign(
        pq_only_P=0.2, pq_only_Q=0.3, pq_both=0.1, pq_exclusive=0.5 / 0.6
    )  # densities P 0.3, Q 0.4: chance (0.3 * 0.6 + 0.4 * 0.7) / (1 - 0.7 * 0.6) = 0.46 / 0.58
    table = complementarity_table(pd.concat([results[results["method"] == "hash"], cerp]))
    assert table["method"].tolist() == ["my_cerp", "my_cerp"]  # rows without pq_* are left out
    assert table["pq_exclusive_chance"].tolist() == pytest.approx([0.46 / 0.58] * 2)


def test_cells_mark_runs_stopped_by_the_bound_and_snapshots_by_magnitude(
    results: pd.DataFrame,
) -> None:
    """A defect until shown otherwise is reported in the table: any seed stopped by the epoch
    bound earns " §", any snapshot completed by magnitude pruning " ‡"."""
    flagged = results.assign(stopped_by_bound=False, snapshot_source="threshold")
    flagged["stopped_by_bound"] = flagged["stopped_by_bound"].astype(object)  # NaN where no run
    cerp_01_seed1 = (flagged["method"] == "my_cerp") & (flagged["budget"] == 0.1)
    flagged.loc[cerp_01_seed1 & (flagged["seed"] == 1), "stopped_by_bound"] = True
    flagged.loc[cerp_01_seed1 & (flagged["seed"] == 0), "snapshot_source"] = "magnitude"
    flagged.loc[flagged["method"] == "full", "snapshot_source"] = "none"
    flagged.loc[(flagged["method"] == "full") & (flagged["seed"] == 0), "stopped_by_bound"] = None
    table = paper_table(flagged, precision=3).loc[("toy", "mf")]
    assert table.loc["my_cerp", (0.1, "recall@20")] == "**0.150 ± 0.000** § ‡"
    assert table.loc["my_cerp", (0.2, "recall@20")] == "**0.170 ± 0.014**"
    assert table.loc["full", (1.0, "ndcg@20")] == "0.110 ± 0.014"
    assert r"\S{} $^\ddagger$" in to_latex(paper_table(flagged, precision=3))
