"""One experiment: a data set, a compact table, a backbone, training, and honest evaluation.

Two protocols:

- ``"validation"`` (default): a validation split is carved from train; early stopping and the
  choice of epoch use it; test is evaluated once per final model.
- ``"paper"`` (:func:`paper_protocol`): what the authors' public code does, offered for
  reproduction only: no validation split, model selection on the *test* set (NDCG@5),
  batches of 10 positives with 5 negatives each (60 rows), negatives drawn once and reused
  every epoch, Adam with learning rate 1e-3, weight decay 1e-5 and gradient-norm clipping at
  100. Its test numbers are optimistic by construction.

The protocol leaves the pruning schedule alone: thresholds keep ``train.threshold_lr`` and
``train.threshold_schedule`` and the initial value that
:func:`~cerp_core.embeddings.make_embedding` gives them, CERP its suite regularizer weight and
stage-1 decay, and ``train.l2`` still applies (the official MLP code has no such term; its
LightGCN retraining uses 1e-4). The official schedule, which prunes nothing for ~9e4 steps, is
``embedding_options={"threshold_init": -100.0, "regularizer_weight": 70.0,
"regularizer_decay": 0.5, "pruning_l2": 0.0}`` (the paper's gamma 1 summed over 70 rows is 70 as
the suite's per-row mean) with ``TrainConfig(threshold_lr=None, threshold_schedule="step",
l2=0.0)``; ``configs/paper-official.yaml`` encodes it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import scipy.sparse as sp
import torch

import cerp_core
from cerp_core.analysis import complementarity
from cerp_core.data import (
    DATASET_NAMES,
    DataIntegrityError,
    Interactions,
    load_dataset,
    make_synthetic,
    source_fingerprint,
)
from cerp_core.embeddings import (
    METHODS,
    CERPEmbedding,
    PrunableEmbedding,
    check_budgets,
    get_method,
    make_embedding,
)
from cerp_core.embeddings.base import MemoryReport, module_device
from cerp_core.io import write_text_atomic
from cerp_core.metrics import DEFAULT_KS, evaluate
from cerp_core.models import MODELS, Popularity, Recommender, make_model
from cerp_core.schema import STRICT, check_arguments, parse, setting
from cerp_core.train import (
    PruneResult,
    Snapshot,
    TrainConfig,
    TrainResult,
    prune,
    retrain,
    train,
)

PROTOCOLS = ("validation", "paper")
PAPER_TRAINING = {
    "batch_size": 10,
    "num_negatives": 5,
    "resample_negatives": False,
    "weight_decay": 1e-5,
    "lr": 1e-3,
    "grad_clip": 100.0,
    "selection_metric": "ndcg@5",
}


@dataclass
class ExperimentConfig:
    """Everything that defines one run; pruning methods take several budgets at once.

    Args:
        dataset: A name of :func:`cerp_core.data.load_dataset` or a folder.
        backbone: ``"mf"``, ``"mlp"`` or ``"lightgcn"``.
        method: A name of :func:`cerp_core.embeddings.make_embedding`.
        budgets: Fractions of the full table's parameters; one pruning run serves them all.
        dim: Width ``d`` of the full table.
        protocol: ``"validation"`` or ``"paper"`` (see the module docstring); a paper
            configuration comes from :func:`paper_protocol`.
        seed: Seeds data splits, initialization and sampling.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        data_root: Root of the real data sets (default ``$CERP_DATA_DIR``).
        valid_fraction: Share of each user's training items used for validation.
        train: Optimization settings; ``epochs`` bounds each stage.
        embedding_options: Extra arguments of ``make_embedding`` (e.g. ``threshold_init``).
        model_options: Extra arguments of the backbone (e.g. ``num_layers``).
        data_options: Extra arguments of ``load_dataset`` (e.g. synthetic sizes).
        ks: Cut-offs of Recall@k and NDCG@k.
        eval_batch_size: Users scored at once by the evaluator.
    """

    dataset: str = setting("synthetic", help="name or folder")
    backbone: str = setting("mf", choices=MODELS, help="the model on top of the table")
    method: str = setting("cerp", choices=METHODS, help="the compact table")
    budgets: tuple[float, ...] = setting(
        (0.1,), flag="--budget",
        help="stored share(s) of the full table; a pruning method serves several in one run",
    )  # fmt: skip
    dim: int = setting(64, help="full table width")
    protocol: str = setting(
        "validation", choices=PROTOCOLS,
        help="paper: the authors' batching, optimizer and test-based selection (overrides "
        "--batch-size, --num-negatives and --lr; see cerp_core.experiment)",
    )  # fmt: skip
    seed: int = setting(0, help="seeds everything")
    device: str = setting("cpu", help="cpu, cuda, cuda:1, ...")
    data_root: str | None = setting(
        None, changes_results=False, help="root of real data sets (default $CERP_DATA_DIR)"
    )
    valid_fraction: float = setting(0.1, help="share of each user's training items held out")
    train: TrainConfig = setting(factory=TrainConfig, flag="", help="optimization settings")
    embedding_options: dict[str, Any] = setting(
        factory=dict, flag="--embedding-option",
        help="option of the method's table, e.g. bucket_factor=4, regularizer_weight=1, "
        "regularizer_decay=0.5, threshold_init=-8 (repeatable)",
    )  # fmt: skip
    model_options: dict[str, Any] = setting(
        factory=dict, flag="--model-option", help="backbone option, e.g. num_layers=2 (repeatable)"
    )
    data_options: dict[str, Any] = setting(
        factory=dict, flag="--data-option",
        help="option of the data set, e.g. num_users=500 for synthetic (repeatable)",
    )  # fmt: skip
    ks: tuple[int, ...] = setting(DEFAULT_KS, help="cut-offs of Recall@k and NDCG@k")
    eval_batch_size: int = setting(
        1024, changes_results=False, help="users scored at once by the evaluator"
    )

    __pydantic_config__ = STRICT

    def __post_init__(self) -> None:
        self.budgets = check_budgets(self.budgets)
        self.ks = tuple(self.ks)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "paper" and self.valid_fraction != 0.0:
            raise ValueError(
                "protocol 'paper' selects on the test set and keeps no validation split; build "
                "the configuration with paper_protocol(config)"
            )
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        for name in ("dim", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks: every cut-off must be >= 1, got {list(self.ks)}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        resolve_device(self.device)  # a missing GPU fails here, before any run starts
        self._check_names_and_options()
        name, _, cutoff = self.train.selection_metric.partition("@")
        if name not in ("recall", "ndcg") or cutoff not in {str(k) for k in self.ks}:
            raise ValueError(
                f"train.selection_metric {self.train.selection_metric!r} must be recall@k or "
                f"ndcg@k with k in ks {self.ks}"
            )

    def _check_names_and_options(self) -> None:
        """Unknown names and option names fail here, before any run starts."""
        if self.dataset not in DATASET_NAMES and not Path(self.dataset).is_dir():
            raise ValueError(
                f"dataset {self.dataset!r} is neither a known data set {list(DATASET_NAMES)} "
                "nor a folder"
            )
        method = get_method(self.method)
        if self.backbone not in MODELS:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose from {list(MODELS)}")
        method.check_options(self.embedding_options)
        check_arguments(
            MODELS[self.backbone],
            self.model_options,
            f"backbone {self.backbone!r}",
            skip=("embedding", "num_users", "num_items", "train"),
        )
        if self.data_options and self.dataset != "synthetic":
            raise ValueError(
                f"data_options {sorted(self.data_options)}: only the synthetic data set "
                f"takes options, not {self.dataset!r}"
            )
        check_arguments(make_synthetic, self.data_options, "the synthetic data set", ("seed",))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExperimentConfig:
        """A checked configuration from a mapping (YAML, JSON); errors name the key's path."""
        return parse(cls, values)


def paper_protocol(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` under the authors' protocol: no validation split, selection on test, and
    their training settings (:data:`PAPER_TRAINING`) over ``config.train``'s."""
    return dataclasses.replace(
        config,
        protocol="paper",
        valid_fraction=0.0,
        train=dataclasses.replace(config.train, **PAPER_TRAINING),
    )


def with_protocol(config: ExperimentConfig, protocol: str) -> ExperimentConfig:
    """``config`` under ``protocol``: itself for ``"validation"``, see :func:`paper_protocol`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return paper_protocol(config) if protocol == "paper" else config


class ProtocolWarning(UserWarning):
    """A setting given in a configuration that its protocol replaces."""


def protocol_replacements(config: ExperimentConfig, protocol: str) -> list[tuple[str, Any, Any]]:
    """The settings of ``config`` that ``protocol`` replaces, as ``(dotted path, its value,
    the value given)``: those set away from their defaults only, so a caller can say which of
    a user's choices did not apply."""
    final, defaults = with_protocol(config, protocol), ExperimentConfig()
    replaced = []
    for path in ("valid_fraction", *(f"train.{name}" for name in PAPER_TRAINING)):
        given, applied = _field(config, path), _field(final, path)
        if applied != given != _field(defaults, path):
            replaced.append((path, applied, given))
    return replaced


def _field(config: ExperimentConfig, path: str) -> Any:
    """``config.valid_fraction`` or ``config.train.lr`` by its dotted path."""
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


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


@functools.cache
def git_commit() -> str | None:
    """The checkout's commit, ``-dirty`` when files differ from it; ``None`` outside git.

    Read once per process, when its first run starts, so every row of a run names the code
    that ran it even if commits land meanwhile.
    """
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, checked against the devices this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device {name!r}: {error}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: the suite runs on cpu and cuda devices")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s)")
    return device


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
    return {**_identity(config, data, budget), "infeasible": reason, **_provenance()}


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


@functools.cache
def cpu_description() -> str:
    """What decides the last bits of a CPU result besides the code: the architecture, the CPU's
    vendor and torch's vector instruction set (``"x86_64 AuthenticAMD AVX512"``); vectorized
    kernels round differently on other kinds of CPU."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    vendor = next((line.split(":")[1].strip() for line in lines if "vendor_id" in line), "")
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{platform.machine()} {vendor or platform.processor() or 'unknown'} {capability}"


def _provenance() -> dict[str, Any]:
    """The code a record was computed with, and the kind of CPU."""
    return {"version": cerp_core.__version__, "git_commit": git_commit(), "cpu": cpu_description()}


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
        **_provenance(),
    }
