"""The schema of one run, :class:`ExperimentConfig`, and the protocols it runs under.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cerp_core.data import DATASET_NAMES, make_synthetic
from cerp_core.embeddings import METHODS, STUDIED, check_budgets, get_method
from cerp_core.metrics import DEFAULT_KS
from cerp_core.models import MODELS
from cerp_core.schema import STRICT, check_arguments, parse, setting
from cerp_core.train import TrainConfig

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
    method: str = setting(STUDIED, choices=METHODS, help="the compact table")
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
        check_protocol(self.protocol)
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
    check_protocol(protocol)
    return paper_protocol(config) if protocol == "paper" else config


def check_protocol(protocol: str) -> None:
    """Raise ``ValueError`` naming the protocols unless ``protocol`` is one of them."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


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
