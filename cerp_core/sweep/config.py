"""Sweep configuration: the grid, its tuning grids, run keys, the choice of tuned values."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cerp_core.config import (
    ExperimentConfig,
    ProtocolWarning,
    protocol_replacements,
    with_protocol,
)
from cerp_core.embeddings import FULL_MODEL, METHODS, check_budgets, get_method
from cerp_core.schema import STRICT, ConfigError, YamlLoader, field_names, parse, results_part
from cerp_core.train import TrainConfig

FULL_BUDGET = 1.0
TUNING_FOLDER = "tuning"

Record = dict[str, Any]
Choice = dict[str, Any]
TUNE_SECTIONS = ("train", "embedding", "model")


class SweepConfigError(ConfigError):
    """A sweep configuration that cannot run; the message names the field (and the file)."""


AXES = {"datasets": "dataset", "backbones": "backbone", "methods": "method", "seeds": "seed"}
"""The sweep's axes and the :class:`ExperimentConfig` field each one sets (budgets aside: a
pruning method takes all of them in one run)."""
PER_AXIS_OPTIONS = {
    "data_options": "datasets",
    "embedding_options": "methods",
    "model_options": "backbones",
}
"""Options given per value of an axis: per data set, per method, per backbone."""
SET_PER_RUN = {*AXES.values(), "budgets", *PER_AXIS_OPTIONS}
"""Fields of :class:`ExperimentConfig` that each run sets; the others come from ``base``."""


def _check_unique(values: tuple[Any, ...], name: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise SweepConfigError(f"{name}: {repeated} listed more than once")


def _check_methods(methods: tuple[str, ...]) -> None:
    for method in methods:
        get_method(method)


def _sweep_base() -> ExperimentConfig:
    """The default base: the library's defaults, without per-run progress bars (the sweep
    shows its own)."""
    return ExperimentConfig(train=TrainConfig(progress=False))


@dataclass
class SweepConfig:
    """A grid of experiments: a base :class:`ExperimentConfig`, axes, per-axis options.

    Each run is ``base`` with the run's data set, backbone, method, budgets and seed (also
    ``base.train.seed``), the options of its data set, method and backbone, and its tuned
    values, applied with :func:`dataclasses.replace`; those fields of ``base`` are not read.
    Every run's configuration is built, and so checked, on construction; a bad field raises
    :class:`SweepConfigError` naming it. In YAML (:meth:`from_dict`) the fields of ``base``
    sit at the top level beside the axes.

    Args:
        datasets: Names of :func:`cerp_core.data.load_dataset` or folders.
        backbones: Keys of :data:`cerp_core.models.MODELS` (``mf``, ``mlp``, ``lightgcn``).
        methods: Keys of :data:`cerp_core.embeddings.METHODS`.
        budgets: Fractions of the full table, in ``(0, 1]``. ``1.0`` is the full model: method
            ``full`` runs once at 1.0 whatever the budgets, and no other method runs at 1.0
            (listing 1.0 therefore needs ``full`` among the methods).
        seeds: One run per seed; the seed drives data splits, initialization and sampling.
        base: Every other setting of a run (dimension, protocol, device, training, ...).
        data_options: Per data set, extra arguments of ``load_dataset``
            (``{"synthetic": {"num_users": 500}}``).
        embedding_options: Per method, extra arguments of ``make_embedding``
            (``{"cerp": {"threshold_init": -15.0}}``).
        model_options: Per backbone, extra arguments of the model (``{"lightgcn":
            {"num_layers": 3}}``).
        tune: Per method, grid axes searched before the sweep (``{"cerp":
            {"embedding.regularizer_weight": [1, 10]}, "full": {"train.lr": [5e-3, 2e-2]}}``;
            paths ``train.<field>``, ``embedding.<option>``, ``model.<option>``). Every
            trained method needs a grid with the same number of points. Each point runs at
            ``tune_budget`` with the first seed; the best by validation
            (``valid_<selection_metric>``) is then fixed for all budgets and seeds.
        tune_budget: The budget of the grid search, one of ``budgets``.
        tune_with: Trained methods that take another method's tuned values instead of a grid of
            their own (``{"cerp-noreg": "cerp"}``): an ablation that differs from its method in
            one thing only, and costs no tuning runs.
        prune_each_budget: Give every budget of a pruning method its own run (its table sized
            for that budget alone) instead of one pruning run that snapshots all budgets.
    """

    datasets: tuple[str, ...] = ("synthetic",)
    backbones: tuple[str, ...] = ("mf",)
    methods: tuple[str, ...] = ("full",)
    budgets: tuple[float, ...] = (0.1,)
    seeds: tuple[int, ...] = (0,)
    base: ExperimentConfig = field(default_factory=_sweep_base)
    data_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    embedding_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)
    tune_budget: float | None = None
    tune_with: dict[str, str] = field(default_factory=dict)
    prune_each_budget: bool = False

    __pydantic_config__ = STRICT

    def __post_init__(self) -> None:
        for name in (*AXES, "budgets"):
            setattr(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise SweepConfigError(f"{name}: needs at least one value")
            _check_unique(getattr(self, name), name)
        for name, check in (("budgets", check_budgets), ("methods", _check_methods)):
            try:
                check(getattr(self, name))
            except ValueError as error:
                raise SweepConfigError(f"{name}: {error}") from None
        if FULL_BUDGET in self.budgets and FULL_MODEL not in self.methods:
            raise SweepConfigError(
                f"budgets: 1.0 is the full model's budget; add '{FULL_MODEL}' to methods or "
                "remove 1.0"
            )
        for name, axis in PER_AXIS_OPTIONS.items():
            unused = sorted(set(getattr(self, name)) - set(getattr(self, axis)))
            if unused:
                raise SweepConfigError(f"{name}: {unused} not in the sweep's {axis}")
        self._check_tuning()
        self.tuning_runs()  # checks every run's configuration now, not when the run starts
        self.runs({})

    def _check_tuning(self) -> None:
        """Every trained method gets a grid of the same size, searched at one budget."""
        if not self.tune:
            for name in ("tune_budget", "tune_with"):
                if getattr(self, name):
                    raise SweepConfigError(f"{name}: given without a tune grid")
            return
        trained = [m for m in self.methods if METHODS[m].stores_table]
        for method, source in self.tune_with.items():
            if method not in trained or method in self.tune or source not in self.tune:
                raise SweepConfigError(
                    f"tune_with.{method}: expected a trained method of the sweep without a grid "
                    f"of its own, taking the values of a method with one ({sorted(self.tune)}), "
                    f"got {method}: {source}"
                )
        missing = sorted(set(trained) - set(self.tune) - set(self.tune_with))
        extra = sorted(set(self.tune) - set(trained))
        if missing or extra:
            raise SweepConfigError(
                f"tune: every trained method of the sweep needs a grid, and only those "
                f"(missing {missing}, not trained or not in methods {extra})"
            )
        sizes = {m: math.prod(len(values) for values in grid.values()) for m, grid in
                 self.tune.items()}  # fmt: skip
        if len(set(sizes.values())) > 1:
            raise SweepConfigError(
                f"tune: every method must get the same number of grid points (fair tuning), got "
                f"{sizes}"
            )
        tunable = set(field_names(TrainConfig)) - {"seed", "progress"}
        for method, grid in self.tune.items():
            for path, values in grid.items():
                _check_unique(tuple(values), f"tune.{method}.{path}")
                section, _, name = path.partition(".")
                if section not in TUNE_SECTIONS or not name:
                    raise SweepConfigError(
                        f"tune.{method}.{path}: expected train.<field>, embedding.<option> or "
                        "model.<option>"
                    )
                if section == "train" and name not in tunable:
                    raise SweepConfigError(
                        f"tune.{method}.{path}: unknown field; known: {sorted(tunable)}"
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
        """A checked configuration from the flat YAML layout: the sweep's own fields and, beside
        them, the fields of ``base`` (``dim``, ``protocol``, ``train``, ...); unknown keys are
        refused. ``train.progress`` defaults to off and ``train.seed`` comes from ``seeds``."""
        if not isinstance(values, Mapping):
            raise SweepConfigError(f"expected a mapping of fields, got {type(values).__name__}")
        own = set(field_names(cls)) - {"base"}
        shared = [name for name in field_names(ExperimentConfig) if name not in SET_PER_RUN]
        unknown = [name for name in values if name not in own | set(shared)]
        if unknown:
            raise SweepConfigError(f"{unknown[0]}: unknown field; known: {[*sorted(own), *shared]}")
        base = {name: values[name] for name in shared if name in values}
        train = base.get("train", {})
        if isinstance(train, Mapping) and "seed" in train:
            raise SweepConfigError("train.seed: set by the sweep's seeds, not here")
        base["train"] = {"progress": False, **train} if isinstance(train, Mapping) else train
        protocol = base.pop("protocol", "validation")
        try:
            given = parse(ExperimentConfig, base)
            for path, applied, value in protocol_replacements(given, protocol):
                warnings.warn(
                    f"protocol: {protocol} sets {path} to {applied}, not the {value} given",
                    ProtocolWarning,
                    stacklevel=2,
                )
            shared_config = with_protocol(given, protocol)
            sweep = {name: values[name] for name in own if name in values}
            sweep["base"] = dataclasses.asdict(shared_config)
            return parse(cls, sweep, hide="base")
        except ValueError as error:  # a ConfigError, or a protocol that check_protocol refused
            raise SweepConfigError(str(error)) from None

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
        train: dict[str, Any] = {"seed": seed}
        options: dict[str, dict[str, Any]] = {
            "embedding": dict(self.embedding_options.get(method, {})),
            "model": dict(self.model_options.get(backbone, {})),
        }
        for path, value in choice.items():
            section, _, name = path.partition(".")
            (train if section == "train" else options[section])[name] = value
        try:
            return dataclasses.replace(
                self.base,
                dataset=dataset,
                backbone=backbone,
                method=method,
                budgets=budgets,
                seed=seed,
                train=dataclasses.replace(self.base.train, **train),
                embedding_options=options["embedding"],
                model_options=options["model"],
                data_options=dict(self.data_options.get(dataset, {})),
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
            tuned_as = self.tune_with.get(method, method)
            choice = (chosen or {}).get((dataset, backbone, tuned_as), {})
            for budgets in self.budget_groups(method):
                runs.append(self._run(dataset, backbone, method, budgets, seed, choice))
        return runs


def choose(config: SweepConfig, tuning: pd.DataFrame) -> dict[tuple[str, str, str], Choice]:
    """The best grid point of each (data set, backbone, method) by its validation metric.

    ``tuning`` is the table of the tuning runs (:meth:`ResultStore.table`); the metric is
    ``valid_<train.selection_metric>``; ties go to the first grid point. Test metrics are never
    read.
    """
    metric = "valid_" + config.base.train.selection_metric
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
    values = results_part(dataclasses.asdict(config), ExperimentConfig)
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def row_key(key: str, budget: float) -> str:
    """Key of one row: the run's key and the budget (pruning runs have one row per budget)."""
    return f"{key}-{float(budget)}"
