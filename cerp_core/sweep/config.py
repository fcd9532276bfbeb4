"""Sweep configuration: the grid, its tuning grids, run keys, the choice of tuned values."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pandas as pd
import yaml

from cerp_core.data import DATASET_NAMES
from cerp_core.embeddings import METHODS
from cerp_core.experiment import DEFAULT_KS, PROTOCOLS, ExperimentConfig
from cerp_core.models import MODELS
from cerp_core.train import TrainConfig

FULL_BUDGET = 1.0
TUNING_FOLDER = "tuning"
KEY_IGNORED = ("data_root", "eval_batch_size")
"""Fields of :class:`ExperimentConfig` that do not change a result (nor does ``train.progress``),
so they stay out of the run key: moving the data or the batch of the evaluator reuses results."""

Record = dict[str, Any]
Choice = dict[str, Any]
TUNE_SECTIONS = ("train", "embedding", "model")


class SweepConfigError(ValueError):
    """A sweep configuration that cannot run; the message names the field (and the file)."""


class YamlLoader(yaml.SafeLoader):
    """Safe loader that also reads ``1e-3`` as a float (YAML 1.1 only accepts ``1.0e-3``) and
    refuses a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _describe(kind: Any) -> str:
    """A type annotation in words, for error messages."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        return f"a non-empty list of {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    return {type(None): "null", Any: "anything"}.get(kind, getattr(kind, "__name__", str(kind)))


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """``value`` checked against the annotation ``kind``; lists become tuples, ints floats.

    Supports what sweep and training settings use: ``int``, ``float``, ``bool``, ``str``,
    ``X | None``, ``tuple[X, ...]`` (non-empty), ``dict[K, V]`` and ``Any``.
    """
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner, name)
    if origin is tuple and isinstance(value, (list, tuple)) and value:
        return tuple(_coerce(item, args[0], f"{name}[{i}]") for i, item in enumerate(value))
    if origin is dict and isinstance(value, Mapping):
        return {
            _coerce(key, args[0], name): _coerce(item, args[1], f"{name}.{key}")
            for key, item in value.items()
        }
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (
        isinstance(kind, type)
        and isinstance(value, kind)
        and (kind is bool or not isinstance(value, bool))
    ):
        return value
    raise SweepConfigError(
        f"{name}: expected {_describe(kind)}, got {type(value).__name__} {value!r}"
    )


def _check_unique(values: tuple[Any, ...], name: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise SweepConfigError(f"{name}: {repeated} listed more than once")


@dataclass
class SweepConfig:
    """A grid of experiments and the settings all of them share.

    Every field is checked on construction (types, names, ranges); a bad one raises
    :class:`SweepConfigError` naming it. Lists may be given for tuples.

    Args:
        datasets: Names of :func:`cerp_core.data.load_dataset` or folders.
        backbones: Keys of :data:`cerp_core.models.MODELS` (``mf``, ``mlp``, ``lightgcn``).
        methods: Keys of :data:`cerp_core.embeddings.METHODS`.
        budgets: Fractions of the full table, in ``(0, 1]``. ``1.0`` is the full model: method
            ``full`` runs once at 1.0 whatever the budgets, and no other method runs at 1.0
            (listing 1.0 therefore needs ``full`` among the methods).
        seeds: One run per seed; the seed drives data splits, initialisation and sampling.
        dim: Width ``d`` of the full table.
        protocol: ``"validation"`` or ``"paper"`` (see :mod:`cerp_core.experiment`).
        device: ``"cpu"``, ``"cuda"``, ... for every run.
        data_root: Root of the real data sets (``None``: ``$CERP_DATA_DIR``).
        valid_fraction: Share of each user's training items held out for validation.
        train: Fields of :class:`~cerp_core.train.TrainConfig` (not ``seed``, which comes from
            ``seeds``); ``progress`` defaults to off, the sweep has its own progress bar.
        data_options: Per data set, extra arguments of ``load_dataset``
            (``{"synthetic": {"num_users": 500}}``).
        embedding_options: Per method, extra arguments of ``make_embedding``
            (``{"cerp": {"threshold_init": -15.0}}``).
        model_options: Per backbone, extra arguments of the model (``{"lightgcn":
            {"num_layers": 3}}``).
        ks: Cut-offs of Recall@k and NDCG@k.
        eval_batch_size: Users scored at once by the evaluator.
        tune: Per method, grid axes searched before the sweep (``{"cerp":
            {"embedding.regularizer_weight": [1, 10]}, "full": {"train.lr": [5e-3, 2e-2]}}``;
            paths ``train.<field>``, ``embedding.<option>``, ``model.<option>``). Every
            trained method needs a grid with the same number of points. Each point runs at
            ``tune_budget`` with the first seed; the best by validation
            (``valid_<selection_metric>``) is then fixed for all budgets and seeds.
        tune_budget: The budget of the grid search, one of ``budgets``.
        prune_each_budget: Give every budget of a pruning method its own run (its table sized
            for that budget alone) instead of one pruning run that snapshots all budgets.
    """

    datasets: tuple[str, ...] = ("synthetic",)
    backbones: tuple[str, ...] = ("mf",)
    methods: tuple[str, ...] = ("full",)
    budgets: tuple[float, ...] = (0.1,)
    seeds: tuple[int, ...] = (0,)
    dim: int = 64
    protocol: str = "validation"
    device: str = "cpu"
    data_root: str | None = None
    valid_fraction: float = 0.1
    train: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    embedding_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    ks: tuple[int, ...] = DEFAULT_KS
    eval_batch_size: int = 1024
    tune: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)
    tune_budget: float | None = None
    prune_each_budget: bool = False

    def __post_init__(self) -> None:
        for name, kind in get_type_hints(SweepConfig).items():
            setattr(self, name, _coerce(getattr(self, name), kind, name))
        for name in ("datasets", "backbones", "methods", "budgets", "seeds", "ks"):
            _check_unique(getattr(self, name), name)
        self._check_names()
        self._check_ranges()
        self.train = self._checked_train()
        for name, grid in (
            ("data_options", self.datasets),
            ("embedding_options", self.methods),
            ("model_options", self.backbones),
        ):
            unused = sorted(set(getattr(self, name)) - set(grid))
            if unused:
                raise SweepConfigError(f"{name}: {unused} not in the sweep's {list(grid)}")
        real = sorted(set(self.data_options) - {"synthetic"})
        if real:
            raise SweepConfigError(f"data_options: only 'synthetic' takes options, not {real}")
        self._check_tuning()
        self.tuning_runs()  # checks every run's configuration now, not when the run starts
        self.runs({})

    def _check_names(self) -> None:
        for name, known in (("backbones", MODELS), ("methods", METHODS)):
            unknown = [v for v in getattr(self, name) if v not in known]
            if unknown:
                raise SweepConfigError(f"{name}: unknown {unknown}; choose from {sorted(known)}")
        for dataset in self.datasets:
            if dataset not in DATASET_NAMES and not Path(dataset).is_dir():
                raise SweepConfigError(
                    f"datasets: {dataset!r} is neither a known data set {list(DATASET_NAMES)} "
                    "nor a folder"
                )
        if self.protocol not in PROTOCOLS:
            raise SweepConfigError(f"protocol: must be one of {PROTOCOLS}, got {self.protocol!r}")

    def _check_ranges(self) -> None:
        outside = [b for b in self.budgets if not 0.0 < b <= FULL_BUDGET]
        if outside:
            raise SweepConfigError(f"budgets: {outside} outside (0, 1]")
        if FULL_BUDGET in self.budgets and "full" not in self.methods:
            raise SweepConfigError(
                "budgets: 1.0 is the full model's budget; add 'full' to methods or remove 1.0"
            )
        for name in ("dim", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise SweepConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if any(k < 1 for k in self.ks):
            raise SweepConfigError(f"ks: every cut-off must be >= 1, got {list(self.ks)}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise SweepConfigError(f"valid_fraction: must be in [0, 1), got {self.valid_fraction}")

    def _checked_train(self) -> dict[str, Any]:
        """``train`` with checked types; a :class:`TrainConfig` is built once to check values."""
        hints = get_type_hints(TrainConfig)
        checked: dict[str, Any] = {"progress": False}
        for name, value in self.train.items():
            if name == "seed":
                raise SweepConfigError("train.seed: set by the sweep's seeds, not here")
            if name not in hints:
                raise SweepConfigError(
                    f"train.{name}: unknown field; known: {sorted(set(hints) - {'seed'})}"
                )
            checked[name] = _coerce(value, hints[name], f"train.{name}")
        try:
            TrainConfig(**checked)
        except ValueError as error:
            raise SweepConfigError(f"train: {error}") from None
        return checked

    def _check_tuning(self) -> None:
        """Every trained method gets a grid of the same size, searched at one budget."""
        if not self.tune:
            if self.tune_budget is not None:
                raise SweepConfigError("tune_budget: given without a tune grid")
            return
        trained = [m for m in self.methods if METHODS[m].build is not None]
        missing = sorted(set(trained) - set(self.tune))
        extra = sorted(set(self.tune) - set(trained))
        if missing or extra:
            raise SweepConfigError(
                f"tune: every trained method of the sweep needs a grid, and only those "
                f"(missing {missing}, not trained or not in methods {extra})"
            )
        sizes = {method: math.prod(len(v) for v in grid.values()) for method, grid in
                 self.tune.items()}  # fmt: skip
        if len(set(sizes.values())) > 1:
            raise SweepConfigError(
                f"tune: every method must get the same number of grid points (fair tuning), got "
                f"{sizes}"
            )
        for method, grid in self.tune.items():
            for path, values in grid.items():
                _check_unique(values, f"tune.{method}.{path}")
                section, _, name = path.partition(".")
                if section not in TUNE_SECTIONS or not name:
                    raise SweepConfigError(
                        f"tune.{method}.{path}: expected train.<field>, embedding.<option> or "
                        "model.<option>"
                    )
        if self.tune_budget is None or self.tune_budget not in self.budgets:
            raise SweepConfigError(
                f"tune_budget: must be one of the sweep's budgets {list(self.budgets)}, got "
                f"{self.tune_budget}"
            )

    def grid_points(self, method: str) -> list[Choice]:
        """Every combination of ``method``'s tuning grid (``[{}]`` without one)."""
        grid = self.tune.get(method, {})
        return [
            dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())
        ]

    def tuning_runs(self) -> list[SweepRun]:
        """The grid search: every grid point of every method at ``tune_budget`` and the first
        seed, on the validation split (methods with a fixed budget at theirs)."""
        runs = []
        for dataset, backbone, method in itertools.product(
            self.datasets, self.backbones, self.tune
        ):
            budgets = (self.tune_budget,) if METHODS[method].fixed_budget is None else None
            for point in self.grid_points(method):
                runs.append(self._run(dataset, backbone, method, budgets, self.seeds[0], point))
        return runs

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SweepConfig:
        """A checked configuration from a mapping of field names (unknown names rejected)."""
        if not isinstance(values, Mapping):
            raise SweepConfigError(f"expected a mapping of fields, got {type(values).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for name in values:
            if name not in known:
                raise SweepConfigError(f"{name}: unknown field; known: {known}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        """Read and check a YAML file; errors name the file and the field."""
        path = Path(path)
        if not path.is_file():
            what = "is a directory, not a YAML file" if path.is_dir() else "not found"
            raise SweepConfigError(f"{path}: {what}")
        try:
            values = yaml.load(path.read_text(), Loader=YamlLoader)
            return cls.from_dict(values)
        except yaml.YAMLError as error:
            raise SweepConfigError(f"{path}: not valid YAML: {error}") from None
        except SweepConfigError as error:
            raise SweepConfigError(f"{path}: {error}") from None

    def budget_groups(self, method: str) -> list[tuple[float, ...]]:
        """Budgets of each run of ``method``: a method with a fixed budget (full, popularity)
        once, a pruning method all its budgets in one run, the others one run per budget (1.0
        excluded)."""
        if METHODS[method].fixed_budget is not None:  # full, popularity: one run, budget-free
            return [(FULL_BUDGET,)]
        budgets = tuple(sorted((b for b in self.budgets if b < FULL_BUDGET), reverse=True))
        if not budgets:
            raise SweepConfigError(
                f"budgets: method {method!r} needs a budget below 1.0, got {list(self.budgets)}"
            )
        if METHODS[method].prunable and not self.prune_each_budget:
            return [budgets]
        return [(b,) for b in budgets]

    def experiment(
        self,
        dataset: str,
        backbone: str,
        method: str,
        budgets: tuple[float, ...],
        seed: int,
        choice: Choice | None = None,
    ) -> ExperimentConfig:
        """The configuration of one run of the grid, with the tuned values of ``choice``
        (``{"train.lr": 0.01, "embedding.bucket_factor": 4}``) applied."""
        choice = choice or {}
        train = {**self.train, "seed": seed}
        options = {
            "embedding": dict(self.embedding_options.get(method, {})),
            "model": dict(self.model_options.get(backbone, {})),
        }
        for path, value in choice.items():
            section, _, name = path.partition(".")
            if section == "train":
                train[name] = value
            else:
                options[section][name] = value
        try:
            return ExperimentConfig(
                dataset=dataset,
                backbone=backbone,
                method=method,
                budgets=budgets,
                dim=self.dim,
                protocol=self.protocol,
                seed=seed,
                device=self.device,
                data_root=self.data_root,
                valid_fraction=self.valid_fraction,
                train=TrainConfig(**train),
                embedding_options=options["embedding"],
                model_options=options["model"],
                data_options=dict(self.data_options.get(dataset, {})),
                ks=self.ks,
                eval_batch_size=self.eval_batch_size,
            )
        except (ValueError, TypeError) as error:
            where = f" with {choice}" if choice else ""
            raise SweepConfigError(f"{method} on {dataset}{where}: {error}") from None

    def _run(
        self,
        dataset: str,
        backbone: str,
        method: str,
        budgets: tuple[float, ...] | None,
        seed: int,
        choice: Choice,
    ) -> SweepRun:
        budgets = budgets or (FULL_BUDGET,)
        config = self.experiment(dataset, backbone, method, budgets, seed, choice)
        return SweepRun(run_key(config), config, dict(choice))

    def runs(self, chosen: Mapping[tuple[str, str, str], Choice] | None = None) -> list[SweepRun]:
        """Every run of the grid, seed by seed (so a partial sweep compares all methods), with
        the tuned values ``chosen[(dataset, backbone, method)]`` (from :func:`choose`).

        A sweep with a ``tune`` grid needs ``chosen``; ``{}`` builds the runs with the base
        values (to check them).
        """
        if self.tune and chosen is None:
            raise SweepConfigError("this sweep tunes its methods first: pass the chosen values")
        runs = []
        for dataset, backbone, seed, method in itertools.product(
            self.datasets, self.backbones, self.seeds, self.methods
        ):
            choice = (chosen or {}).get((dataset, backbone, method), {})
            for budgets in self.budget_groups(method):
                runs.append(self._run(dataset, backbone, method, budgets, seed, choice))
        return runs


def choose(config: SweepConfig, tuning: pd.DataFrame) -> dict[tuple[str, str, str], Choice]:
    """The best grid point of each (data set, backbone, method) by its validation metric.

    ``tuning`` is the table of the tuning runs (:meth:`ResultStore.table`); the metric is
    ``valid_<train.selection_metric>``; ties go to the first grid point. Test metrics are never
    read.
    """
    metric = "valid_" + TrainConfig(**config.train).selection_metric
    by_key = {run.key: run for run in config.tuning_runs()}
    chosen: dict[tuple[str, str, str], Choice] = {}
    best: dict[tuple[str, str, str], float] = {}
    for run in by_key.values():
        rows = tuning[tuning["run_key"] == run.key]
        if rows.empty:
            raise SweepConfigError(f"tuning run {run.describe()} with {run.choice} has no result")
        group = (run.config.dataset, run.config.backbone, run.config.method)
        score = float(rows[metric].mean())
        if group not in best or score > best[group]:
            best[group], chosen[group] = score, run.choice
    return chosen


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its stable key and its configuration."""

    key: str
    config: ExperimentConfig
    choice: Choice = field(default_factory=dict)

    def describe(self) -> str:
        """``dataset/backbone/method seed s budgets b1,b2`` for messages."""
        c = self.config
        budgets = ",".join(f"{b:g}" for b in c.budgets)
        return f"{c.dataset}/{c.backbone}/{c.method} seed {c.seed} budgets {budgets}"


def run_key(config: ExperimentConfig) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of everything that changes results."""
    values = dataclasses.asdict(config)
    for name in KEY_IGNORED:
        del values[name]
    del values["train"]["progress"]
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def row_key(key: str, budget: float) -> str:
    """Key of one row: the run's key and the budget (pruning runs have one row per budget)."""
    return f"{key}-{float(budget)}"
