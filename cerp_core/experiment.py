"""One experiment: a data set, a compact table, a backbone, training, and honest evaluation.

:func:`run_experiment` runs an :class:`~cerp_core.config.ExperimentConfig` (the schema of a run
and its protocols live in :mod:`cerp_core.config`) and returns one record per budget.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import scipy.sparse as sp
import torch

from cerp_core.analysis import complementarity
from cerp_core.config import ExperimentConfig, resolve_device
from cerp_core.data import (
    DataIntegrityError,
    Interactions,
    load_dataset,
    source_fingerprint,
)
from cerp_core.embeddings import (
    METHODS,
    CERPEmbedding,
    PrunableEmbedding,
    make_embedding,
)
from cerp_core.embeddings.base import MemoryReport, module_device
from cerp_core.io import write_text_atomic
from cerp_core.metrics import evaluate
from cerp_core.models import Popularity, Recommender, make_model
from cerp_core.provenance import git_commit, provenance
from cerp_core.train import (
    PruneResult,
    Snapshot,
    TrainResult,
    prune,
    retrain,
    train,
)

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "build_model",
    "retrain_snapshots",
    "run_experiment",
]


@dataclass
class ExperimentResult:
    """Result records (one per budget), the trained model of the last budget, and histories."""

    records: list[dict[str, Any]]
    model: Recommender | Popularity | None  # None: every budget was infeasible
    data: Interactions
    trainings: list[TrainResult]
    pruning: PruneResult | None = None

    def table(self) -> pd.DataFrame:
        """The records as a DataFrame."""
        return pd.DataFrame(self.records)


def build_model(config: ExperimentConfig, data: Interactions) -> Recommender:
    """Seeded construction of the table (sized by the budgets) and the backbone on the device."""
    torch.manual_seed(config.seed)
    budget = config.budgets if len(config.budgets) > 1 else config.budgets[0]
    embedding = make_embedding(
        config.method, data.num_entities, config.dim, budget, **config.embedding_options
    )
    if isinstance(embedding, PrunableEmbedding) and len(embedding.targets) < len(config.budgets):
        raise ValueError(
            f"budgets {config.budgets} give only the targets {embedding.targets} "
            f"({data.num_entities} x {config.dim} table): two budgets round to the same number "
            "of non-zeros; drop one"
        )
    model = make_model(config.backbone, embedding, data, **config.model_options)
    return model.to(resolve_device(config.device))


def infeasible_budgets(config: ExperimentConfig, num_entities: int) -> dict[float, str]:
    """The budgets of ``config`` its method cannot be built for, each with the reason (the
    solver's error: the smallest or largest feasible budget)."""
    if not METHODS[config.method].stores_table:
        return {}
    reasons = {}
    for budget in config.budgets:
        try:
            make_embedding(
                config.method, num_entities, config.dim, budget, **config.embedding_options
            )
        except ValueError as error:
            reasons[budget] = str(error)
    return reasons


def infeasible_record(config: ExperimentConfig, data: Interactions, budget: float, reason: str
                      ) -> dict[str, Any]:  # fmt: skip
    """The record of a budget the method cannot meet: no metrics, the reason in ``infeasible``."""
    return {**_identity(config, data, budget), "infeasible": reason, **provenance()}


def _identity(config: ExperimentConfig, data: Interactions, budget: float) -> dict[str, Any]:
    """The fields that say which run and budget a record belongs to."""
    return {
        "dataset": data.name,
        "backbone": config.backbone,
        "method": config.method,
        "budget": budget,
        "seed": config.seed,
        "dim": config.dim,
        "protocol": config.protocol,
    }


def run_experiment(
    config: ExperimentConfig,
    data: Interactions | None = None,
    checkpoint_dir: str | Path | None = None,
    record_infeasible: bool = False,
) -> ExperimentResult:
    """Train (both stages for pruning methods), select on validation, evaluate test once.

    ``checkpoint_dir`` keeps one checkpoint per stage, so an interrupted run resumes there; it
    is tied to the data's files (:func:`claim_checkpoints`), so changed data never resumes
    from, or returns, a stale checkpoint. With ``record_infeasible`` (sweeps), budgets the
    method cannot meet give a record that says why (:func:`infeasible_record`) and the others
    run; without it they raise. Every record carries ``data_fingerprint``
    (:func:`~cerp_core.data.source_fingerprint` of ``config.dataset``).
    """
    fingerprint = source_fingerprint(config.dataset, config.data_root)
    if data is None:
        data = load_dataset(
            config.dataset,
            root=config.data_root,
            valid_fraction=config.valid_fraction,
            seed=config.seed,
            **config.data_options,
        )
    git_commit()  # the code of this process, before anything can change it
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        claim_checkpoints(folder, fingerprint)
    reasons = infeasible_budgets(config, data.num_entities) if record_infeasible else {}
    skipped = [infeasible_record(config, data, b, r) for b, r in reasons.items()]
    feasible = tuple(b for b in config.budgets if b not in reasons)
    if feasible:
        result = _train_and_test(dataclasses.replace(config, budgets=feasible), data, folder)
    else:
        result = ExperimentResult([], None, data, [])
    result.records = sorted([*result.records, *skipped], key=lambda record: -record["budget"])
    for record in result.records:
        record["data_fingerprint"] = fingerprint
    return result


DATA_MARKER = "data_fingerprint.txt"
"""The file of a checkpoint folder that names the data its checkpoints were written for."""


def claim_checkpoints(folder: Path, fingerprint: str | None) -> None:
    """Tie ``folder``'s checkpoints to the data of ``fingerprint``; raise
    :class:`~cerp_core.data.DataIntegrityError` if they were written for other data."""
    if fingerprint is None:  # generated data: the configuration fixes it
        return
    marker = folder / DATA_MARKER
    if marker.is_file():
        found = marker.read_text().strip()
        if found != fingerprint:
            raise DataIntegrityError(
                f"{folder} holds checkpoints of this configuration written for other data "
                f"({found}; the data's files now give {fingerprint}): the data changed since. "
                f"Delete {folder} to train afresh on the current data"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, fingerprint + "\n")


def _train_and_test(
    config: ExperimentConfig, data: Interactions, folder: Path | None
) -> ExperimentResult:
    """The training of :func:`run_experiment`, every budget of ``config`` feasible."""
    method = METHODS[config.method]
    if not method.stores_table:  # a ranking that learns nothing: evaluated once, as it is
        ranker = Popularity(data.train).to(resolve_device(config.device))
        selection = selection_split(config, data)
        metrics = _validator(config, data)(ranker) if selection.nnz else {}
        result = TrainResult(pd.DataFrame(), 0, metrics, 0.0)
        record = _record(config, ranker, data, method.fixed_budget, result)
        return ExperimentResult([record], ranker, data, [result])
    model = build_model(config, data)
    if method.prunable:
        checkpoint = folder / "prune.pt" if folder is not None else None
        pruning = prune(model, data, config.train, checkpoint=checkpoint)
        return retrain_snapshots(config, model, data, pruning, folder)
    checkpoint = folder / "train.pt" if folder is not None else None
    result = train(model, data, config.train, _validator(config, data), checkpoint=checkpoint)
    budget = config.budgets[0] if method.fixed_budget is None else method.fixed_budget
    record = _record(config, model, data, budget, result)
    return ExperimentResult([record], model, data, [result])


def retrain_snapshots(
    config: ExperimentConfig,
    model: Recommender,
    data: Interactions,
    pruning: PruneResult,
    checkpoint_dir: str | Path | None = None,
) -> ExperimentResult:
    """Stage 2 of a pruning method: every snapshot of ``pruning`` (one per budget, largest
    first) rewound, retrained with its mask fixed, selected on validation, tested once."""
    validate = _validator(config, data)
    records, trainings = [], []
    for budget, snapshot in zip(sorted(config.budgets, reverse=True), pruning.snapshots,
                                strict=True):  # fmt: skip
        checkpoint = (
            Path(checkpoint_dir) / f"retrain-{snapshot.target}.pt" if checkpoint_dir else None
        )
        result = retrain(
            model, pruning, snapshot, data, config.train, validate, checkpoint=checkpoint
        )
        trainings.append(result)
        records.append(_record(config, model, data, budget, result, pruning, snapshot))
    return ExperimentResult(records, model, data, trainings, pruning)


def selection_split(config: ExperimentConfig, data: Interactions) -> sp.csr_matrix:
    """The split that selects epochs: validation, or test under the paper protocol."""
    return data.test if config.protocol == "paper" else data.valid


def _validator(config: ExperimentConfig, data: Interactions) -> Callable[..., dict[str, float]]:
    """Metrics of a model on :func:`selection_split`, as the training loops call it."""
    if not selection_split(config, data).nnz:
        raise ValueError(
            f"the {config.protocol} protocol selects epochs on the "
            f"{'test' if config.protocol == 'paper' else 'validation'} split, which is empty "
            f"(valid_fraction {config.valid_fraction}); give --valid-fraction in (0, 1), or "
            "--protocol paper to select on test as the authors' code does"
        )
    return functools.partial(
        evaluate,
        train=data.train,
        test=selection_split(config, data),
        ks=config.ks,
        batch_size=config.eval_batch_size,
    )


def _record(
    config: ExperimentConfig,
    model: Recommender | Popularity,
    data: Interactions,
    budget: float,
    result: TrainResult,
    pruning: PruneResult | None = None,
    snapshot: Snapshot | None = None,
) -> dict[str, Any]:
    """Evaluate test once and assemble the result record (see ARCHITECTURE.md); a pruning
    method's records say how each ``snapshot`` of its stage 1 (``pruning``) was taken."""
    began = time.perf_counter()
    test = evaluate(
        model,
        data.train,
        data.test,
        ks=config.ks,
        batch_size=config.eval_batch_size,
        exclude=data.valid if data.valid.nnz else None,
    )
    eval_seconds = time.perf_counter() - began
    composition: dict[str, float] = {}
    if isinstance(model, Popularity):  # no embedding: the stored ranking is one score per item
        num_params, full_params = 0, data.num_entities * config.dim
        memory = MemoryReport.unpruned(data.num_items)
    else:
        num_params, full_params = model.embedding.num_parameters(), model.embedding.full_parameters
        memory = model.embedding.memory()
        if isinstance(model.embedding, CERPEmbedding):
            composition = {f"pq_{k}": v for k, v in complementarity(model.embedding).items()}
    return {
        **_identity(config, data, budget),
        "num_params": num_params,
        "full_params": full_params,
        "param_fraction": num_params / full_params,
        "memory_bytes": memory.inference_bytes,
        "memory_format": memory.inference_format,
        "dense_bytes": memory.dense_bytes,
        "training_only_bytes": memory.training_only_bytes,
        **test,
        **{f"valid_{name}": value for name, value in result.best_metrics.items()},
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "stopped_by_bound": bool(len(result.history)) and not result.stopped_early,
        "snapshot_source": snapshot.source if snapshot else "none",
        "snapshot_bpr_loss": pruning.loss_before(snapshot) if pruning and snapshot else math.nan,
        "snapshot_epoch": pruning.epoch_of(snapshot) if pruning and snapshot else math.nan,
        **composition,
        "prune_seconds": pruning.seconds if pruning else 0.0,
        "train_seconds": result.seconds,
        "eval_seconds": eval_seconds,
        "device": str(module_device(model)),
        **provenance(),
    }
