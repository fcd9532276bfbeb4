"""A seed fixes a run bit for bit at torch's default thread count, for every backbone.

The gathers of the tables' rows must have a deterministic backward pass: indexing
(``weight[ids]``) backpropagates through ``index_put_(accumulate=True)``, which on the CPU adds
with parallel atomic float additions once the gradient has at least 32768 elements and more
than one thread runs. The batches here are sized to cross that bound (1024 users + 1024 items,
16 wide), so the test fails on such a kernel wherever torch runs more than one thread.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import torch

from cerp_core.data import load_dataset
from cerp_core.experiment import ExperimentConfig, ExperimentResult, build_model, run_experiment
from cerp_core.train import TrainConfig, _epoch_batches, bpr_loss

TIMINGS = ("seconds", "prune_seconds", "train_seconds", "eval_seconds")


def _config(
    backbone: str, method: str, budget: float, train: TrainConfig, **fields: Any
) -> ExperimentConfig:
    """The tests' seeded configuration (d = 16, seed 3) with their own training settings."""
    return ExperimentConfig(
        backbone=backbone, method=method, budgets=(budget,), dim=16, seed=3, train=train, **fields
    )


def _run(backbone: str, method: str, budget: float) -> ExperimentResult:
    """One short seeded run: ~3200 training pairs, so three full batches of 1024 and a rest
    per epoch; three epochs at lr 0.03, so that CERP's stage 1 learns before its snapshot."""
    config = _config(
        backbone,
        method,
        budget,
        TrainConfig(epochs=3, batch_size=1024, lr=0.03, progress=False, seed=3),
        data_options={"num_users": 150, "num_items": 250},
    )
    data = load_dataset("synthetic", valid_fraction=0.1, seed=3, **config.data_options)
    return run_experiment(config, data=data)


def _untimed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k not in TIMINGS} for record in records]


def _histories(result: ExperimentResult) -> list[pd.DataFrame]:
    frames = [t.history for t in result.trainings]
    if result.pruning is not None:
        frames += [result.pruning.history, result.pruning.steps]
    return [frame.drop(columns=[c for c in TIMINGS if c in frame]) for frame in frames]


@pytest.mark.parametrize(
    ("backbone", "method", "budget"),
    [("mlp", "qr", 0.2), ("mf", "qr", 0.2), ("lightgcn", "qr", 0.2), ("mlp", "cerp", 0.2)],
)
def test_identically_seeded_runs_are_bit_identical(
    backbone: str, method: str, budget: float
) -> None:
    first, second = _run(backbone, method, budget), _run(backbone, method, budget)
    assert _untimed(first.records) == _untimed(second.records)
    for a, b in zip(_histories(first), _histories(second), strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    state_a, state_b = first.model.state_dict(), second.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, a in state_a.items():
        b = state_b[name]
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b, f"{name} differs between runs"


GATHERS = [  # every table's gathers under MF; the backbones' own gathers and layers
    *[("mf", m, b) for m, b in [("full", 1.0), ("hash", 0.2), ("qr", 0.2), ("tt", 0.2)]],
    *[("mf", m, 0.2) for m in ("pep", "magprune", "cerp")],
    ("mlp", "qr", 0.2),
    ("lightgcn", "qr", 0.2),
    ("lightgcn", "full", 1.0),
]


def _backward_nodes(output: torch.Tensor) -> set[str]:
    """Names of the autograd nodes that ``output.backward()`` would run."""
    names, todo, seen = set(), [output.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo += [next_node for next_node, _ in node.next_functions]
    return names


@pytest.mark.parametrize(("backbone", "method", "budget"), GATHERS)
def test_training_step_has_no_racy_backward(backbone: str, method: str, budget: float) -> None:
    """No gather of a training step goes through indexing, whose backward pass on the CPU adds
    with atomic float additions across threads; the batch gives bit-identical gradients.

    The graph check is what catches a regression reliably: a race changes a sum only when the
    threads happen to interleave differently, which the gradient comparison may not see.
    """
    data = load_dataset("synthetic", num_users=150, num_items=250, seed=3)
    config = _config(
        backbone,
        method,
        budget,
        TrainConfig(batch_size=2048, progress=False, seed=3),
        valid_fraction=0.0,
    )
    model = build_model(config, data).train()
    users, items = next(_epoch_batches(data, config.train, 0, torch.device("cpu")))

    def loss() -> torch.Tensor:
        scores, layer0 = model.score_batch(users, items)
        return bpr_loss(scores[:, 0], scores[:, 1:]) + layer0.square().sum()

    racy = {"IndexBackward0", "IndexPutBackward0", "PutBackward0"} & _backward_nodes(loss())
    assert not racy, f"the training graph backpropagates through {sorted(racy)}"

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    reference = gradients()
    assert reference
    for _ in range(5):
        for name, grad in gradients().items():
            assert torch.equal(grad, reference[name]), f"gradient of {name} varies"
