"""The progress bars as JupyterLab shows them: a real kernel runs a stage that stops early, and
the widget states it leaves (what the browser renders) are read back.

tqdm's notebook bar turns red ("danger") when it is closed short of its total; stage 1 stops
once its targets are reached and retraining stops early, so both must end green and full.
"""

from __future__ import annotations

import html

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.notebook
RUN = """
from cerp_core.experiment import ExperimentConfig, run_experiment
from cerp_core.train import TrainConfig
train = TrainConfig(epochs=20, batch_size=512, lr=1e-2, patience=1,
                    progress=True)
config = ExperimentConfig(dataset="synthetic", backbone="mf", method="pep", budgets=[0.5], dim=16,
                          data_options={"num_users": 300, "num_items": 400}, train=train,
                          embedding_options={"pruning_l2": 0.0})
result = run_experiment(config)
print(result.records[0]["snapshot_source"], len(result.trainings[0].history))
"""


def widget_bars() -> tuple[str, list[tuple[str, dict]]]:
    """Run :data:`RUN` in a kernel; its printed line and each bar's (label, progress state)."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(RUN)])
    NotebookClient(notebook, timeout=600, kernel_name="python3", store_widget_state=True).execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[0].outputs)
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = []
    for model in state.values():
        if model["model_name"] == "HBoxModel":
            label, progress, _ = (
                state[c.removeprefix("IPY_MODEL_")]["state"] for c in model["state"]["children"]
            )
            bars.append((html.unescape(label["value"]).replace("\u2007", " "), progress))
    return printed, bars


def test_bars_of_stages_that_stop_early_end_green_and_full() -> None:
    printed, bars = widget_bars()
    source, retrain_epochs = printed.split()
    assert source == "threshold"  # stage 1 stopped at the step that reached the target
    assert int(retrain_epochs) < 20  # retraining stopped early
    assert not [label for label, p in bars if p["bar_style"] == "danger"]
    stages = {
        label.split(":")[0].split()[0]: p for label, p in bars if not label.startswith("epoch")
    }
    assert set(stages) == {"prune", "retrain"}
    for progress in stages.values():
        assert progress["bar_style"] == "success"
        assert progress["value"] == progress["max"] < 20  # full, at the epoch it stopped
