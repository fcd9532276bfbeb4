"""Each tutorial notebook runs with tiny parameters (papermill) and records sane key numbers.

The notebooks run as the main job runs them (:func:`cerp_core.notebooks.run_notebooks`, working
directory ``notebooks/``) on a 400-entity synthetic data set, one or two epochs, ``d = 8``; the
executed copies, ``results.json`` files and figures go to ``tmp_path``. The committed notebooks
themselves are checked by ``pytest --nbval-lax notebooks``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from papermill.translators import PythonTranslator

from cerp_core.data import load_dataset
from cerp_core.embeddings import METHODS
from cerp_core.experiment import ExperimentConfig, run_experiment
from cerp_core.notebooks import NOTEBOOK_DIR, load_parameters, notebook_paths, run_notebooks
from cerp_core.train import TrainConfig

pytestmark = pytest.mark.notebook
TINY_DATA = {"num_users": 150, "num_items": 250}
NUM_ENTITIES = TINY_DATA["num_users"] + TINY_DATA["num_items"]
DIM = 8
FULL_PARAMS = NUM_ENTITIES * DIM
TINY: dict[str, dict[str, Any]] = {
    "01_data_preparation": {"DATA_OPTIONS": TINY_DATA, "DIM": DIM},
    "02_cerp_training": {
        "DATA_OPTIONS": TINY_DATA,
        "DIM": DIM,
        "BUDGETS": [0.25, 0.1],
        "EPOCHS": 2,
        "BATCH_SIZE": 256,
        "LR": 0.05,  # stage 1 must learn before its masks are kept
    },
    "03_budget_sweep": {
        "DATA_OPTIONS": TINY_DATA,
        "DIM": DIM,
        "BUDGETS": [0.25, 0.125],  # lowdim needs budget * DIM >= 1
        "EPOCHS": 3,  # stage 1 must learn before its masks are kept
        "BATCH_SIZE": 256,
        "LR": 0.05,
        # at this toy scale PEP's default decay (0.4) prunes rows before stage 1 learns
        "EMBEDDING_OPTIONS": {"pep": {"pruning_l2": 0.1}},
    },
    "04_sparsity_visualization": {
        "DATA_OPTIONS": TINY_DATA,
        "DIM": DIM,
        "BUDGET": 0.1,
        "EPOCHS": 2,
        "BATCH_SIZE": 256,
        "LR": 0.05,  # stage 1 must learn before its masks are kept
    },
    "05_paper_reproduction": {
        "DATASETS": ["synthetic", "no-such-folder"],
        "DATA_OPTIONS": {"num_users": 60, "num_items": 100},
        "DIM": DIM,
        "BUDGETS": [0.25],
        "EPOCHS": 3,  # stage 1 must learn before its masks are kept
        "BATCH_SIZE": 256,
        "LR": 0.05,
    },
}
FIGURES = {
    "01_data_preparation": ["01_item_popularity", "01_user_activity"],
    "02_cerp_training": [
        "02_composition_grid",
        "02_sparsity_curve",
        "02_snapshot_masks",
        "02_training_curves",
        "02_cerp_vs_full",
    ],
    "03_budget_sweep": ["03_budget_curves"],
    "04_sparsity_visualization": [
        "04_mask_heatmap",
        "04_nonzeros_per_row_and_dim",
        "04_entity_sizes",
        "04_thresholds_against_weights",
        "04_complementarity",
    ],
    "05_paper_reproduction": ["05_protocol_comparison"],
}


def run(stem: str, tmp_path: Path) -> dict[str, Any]:
    """Execute one notebook with its tiny parameters; return its ``results.json``."""
    parameters = {
        **TINY[stem],
        "OUTPUT_DIR": str(tmp_path / "runs" / stem),
        "FIGURE_DIR": str(tmp_path / "figures"),
    }
    (executed,) = run_notebooks(
        {stem: parameters}, output_dir=tmp_path, only=[stem], progress=False
    )
    assert executed.is_file()
    for name in FIGURES[stem]:
        for suffix in ("png", "pdf"):
            figure = tmp_path / "figures" / f"{name}.{suffix}"
            assert figure.is_file() and figure.stat().st_size > 1000, f"{figure.name} missing"
    return json.loads((tmp_path / "runs" / stem / "results.json").read_text())


def assert_metrics(row: dict[str, Any]) -> None:
    for metric in ("recall@20", "ndcg@20"):
        assert 0.0 <= row[metric] <= 1.0, (metric, row)


def test_every_numbered_notebook_is_tested() -> None:
    assert [p.stem for p in notebook_paths(NOTEBOOK_DIR)] == sorted(TINY)


def test_data_preparation(tmp_path: Path) -> None:
    results = run("01_data_preparation", tmp_path)
    stats = load_dataset("synthetic", **TINY_DATA).statistics().iloc[0]
    for key in ("users", "items", "entities", "train", "valid", "test", "users_with_test"):
        assert results[key] == int(stats[key]), key
    assert results["density"] == pytest.approx(stats["density"])
    assert results["full_params"] == FULL_PARAMS
    assert results["min_bucket_size"] ** 2 >= NUM_ENTITIES > (results["min_bucket_size"] - 1) ** 2
    assert 0.2 <= results["head20_share"] <= 1.0


def test_cerp_training(tmp_path: Path) -> None:
    results = run("02_cerp_training", tmp_path)
    targets = [int(0.25 * FULL_PARAMS), int(0.1 * FULL_PARAMS)]
    assert results["targets"] == targets
    assert results["full_params"] == FULL_PARAMS
    assert set(results["snapshot_sources"]) <= {"threshold", "magnitude"}
    runs = {(r["method"], r["budget"]): r for r in results["runs"]}
    assert runs[("full", 1.0)]["num_params"] == FULL_PARAMS
    for budget, target in zip((0.25, 0.1), targets, strict=True):
        assert 0 < runs[("cerp", budget)]["num_params"] <= target
    for row in runs.values():
        assert_metrics(row)


def test_budget_sweep(tmp_path: Path) -> None:
    results = run("03_budget_sweep", tmp_path)
    assert results["failed"] == 0
    methods = set(METHODS)  # every registered method, the reference rows included
    assert {r["method"] for r in results["runs"]} == methods
    assert len(results["runs"]) == 2 + 2 * (len(methods) - 2)  # popularity, full: one row
    (popularity,) = [r for r in results["runs"] if r["method"] == "popularity"]
    assert (popularity["budget"], popularity["num_params"]) == (0.0, 0)
    for row in results["runs"]:
        assert row["num_params"] <= row["budget"] * FULL_PARAMS, row
        assert row["memory_bytes"] > 0
        assert_metrics(row)
    # the notebook reports what the library computes for the same settings
    tiny = TINY["03_budget_sweep"]
    train = TrainConfig(epochs=tiny["EPOCHS"], batch_size=256, lr=tiny["LR"], progress=False)
    config = ExperimentConfig(
        backbone="lightgcn",
        method="full",
        budgets=(1.0,),
        dim=DIM,
        data_options=TINY_DATA,
        train=train,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the notebook runs (THREADS = 1)
    try:
        (direct,) = run_experiment(config).records
    finally:
        torch.set_num_threads(threads)
    (full,) = [row for row in results["runs"] if row["method"] == "full"]
    for metric in ("recall@20", "ndcg@20", "num_params"):
        assert full[metric] == pytest.approx(direct[metric], rel=1e-4), metric


def test_sparsity_visualization(tmp_path: Path) -> None:
    results = run("04_sparsity_visualization", tmp_path)
    assert results["target"] == int(0.1 * FULL_PARAMS)
    assert set(results["variants"]) == {"cerp", "cerp-noreg"}
    for variant in results["variants"].values():
        assert 0 < variant["num_nonzero"] <= results["target"]
        shares = variant["both_zero"] + variant["only_P"] + variant["only_Q"] + variant["both"]
        assert shares == pytest.approx(1.0)
        assert 0 <= variant["zero_entities"] <= NUM_ENTITIES
    assert set(results["mean_size"]) == {"user", "item"}
    assert all(0 <= size <= DIM for size in results["mean_size"].values())


def test_paper_reproduction(tmp_path: Path) -> None:
    results = run("05_paper_reproduction", tmp_path)
    assert results["datasets"] == ["synthetic"]  # the missing folder is skipped
    assert results["failed"] == 0
    rows = results["runs"]
    assert {r["protocol"] for r in rows} == {"validation", "paper"}
    assert {r["backbone"] for r in rows} == {"lightgcn"}  # the paper's graph backbone
    assert len(rows) == 2 * 2  # protocols x (full, cerp)
    full = (60 + 100) * DIM
    for row in rows:
        assert row["num_params"] <= row["budget"] * full, row
        assert_metrics(row)


def test_paper_parameter_file_names_only_existing_parameters() -> None:
    parameters = load_parameters(NOTEBOOK_DIR / "paper.yaml")
    for path in notebook_paths(NOTEBOOK_DIR):
        notebook = nbformat.read(path, as_version=4)
        (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        declared = {p.name for p in PythonTranslator.inspect(cell)}
        given = {**parameters.get("common", {}), **parameters.get(path.stem, {})}
        assert set(given) <= declared, (path.stem, set(given) - declared)
        assert len(declared) == len(cell.source.splitlines()), f"{path.stem}: unparsed parameter"
