"""Command line: ``python -m cerp_core train|sweep|notebooks|report ...``.

Bad input (unknown names, budgets outside (0, 1], impossible sizes, malformed data) prints one
line, ``error: ...``, without a traceback, and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import traceback
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cerp_core.config import ExperimentConfig, protocol_replacements, with_protocol
from cerp_core.embeddings import FULL_MODEL, STUDIED
from cerp_core.experiment import run_experiment
from cerp_core.io import make_output_folder
from cerp_core.io import write_text_atomic as write_atomic
from cerp_core.schema import YamlLoader, setting_fields
from cerp_core.sweep import (
    BACKENDS,
    ResultStore,
    StoreBusyError,
    SweepConfig,
    SweepConfigError,
    SweepFailedError,
    run_key,
    run_sweep,
    stored_choices,
)

if TYPE_CHECKING:  # pandas is imported when a command needs it (fast --help)
    import pandas as pd


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (``4``, ``1e-3``, ``true``, ``concat``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, yaml.load(value, Loader=YamlLoader)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key}: cannot read the value {value!r}") from None


def _optional(kind: type) -> Callable[[str], Any]:
    """Argument type of an ``X | None`` field: ``none`` gives ``None``."""

    def convert(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    convert.__name__ = f"{kind.__name__} or none"  # argparse names it in "invalid ... value"
    return convert


def _flag_arguments(annotation: Any, default: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords that read a field of type ``annotation``."""
    origin, parts = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction, "default": default}
    if origin is dict:
        return {"type": _option, "action": "append", "default": [], "metavar": "KEY=VALUE"}
    if origin is tuple:
        return {"type": parts[0], "nargs": "+", "default": list(default)}
    if type(None) in parts:
        (kind,) = (part for part in parts if part is not type(None))
        return {"type": _optional(kind), "default": default}
    return {"type": annotation, "default": default}


def _config_options(parser: argparse.ArgumentParser, cls: type, defaults: Any, prefix: str) -> None:
    """One option per field of ``cls`` (nested configurations too), as its declaration says."""
    for name, item, annotation in setting_fields(cls):
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(annotation):
            _config_options(parser, annotation, default, f"{prefix}{name}.")
            continue
        flag = item.metadata.get("flag")
        if flag == "":
            continue
        flag = flag or f"--{name.replace('_', '-')}"
        arguments = {"metavar": flag[2:].replace("-", "_").upper()}
        arguments |= _flag_arguments(annotation, default)
        if annotation is bool or item.metadata.get("choices"):
            del arguments["metavar"]  # argparse shows the choices, or takes no value
        parser.add_argument(
            flag,
            dest=f"{prefix}{name}",
            choices=item.metadata.get("choices"),
            help=item.metadata["help"],
            **arguments,
        )


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train and evaluate one configuration; writes metrics.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    _config_options(parser, ExperimentConfig, ExperimentConfig(), "")


def _claim_folder(out: Path, key: str, config: ExperimentConfig) -> bool:
    """Make ``out`` the folder of the run ``key``; refuse one that holds another run's results.
    Returns whether this call claimed it (wrote ``run.json``).

    ``out/run.json`` names the configuration whose results the folder holds, so a second
    configuration can neither overwrite them nor leave its files beside them.
    """
    make_output_folder(out)
    marker = out / "run.json"
    if marker.is_file():
        try:
            owner = json.loads(marker.read_text())["run_key"]
        except (ValueError, KeyError):
            raise ValueError(
                f"{marker} is not a run file of this suite; choose another --out"
            ) from None
        if owner != key:
            raise ValueError(
                f"--out {out} holds the results of another configuration (run key {owner}, see "
                f"{marker}); choose another --out to keep both"
            )
        return False
    try:
        payload = {"run_key": key, "config": dataclasses.asdict(config)}
        write_atomic(marker, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    except OSError as error:
        raise ValueError(f"--out {out} cannot be written: {error.strerror}") from None
    return True


def _config_values(args: argparse.Namespace, cls: type, prefix: str) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that the options of :func:`_config_options` hold."""
    values: dict[str, Any] = {}
    for name, _, annotation in setting_fields(cls):
        if dataclasses.is_dataclass(annotation):
            values[name] = annotation(**_config_values(args, annotation, f"{prefix}{name}."))
        elif hasattr(args, f"{prefix}{name}"):
            value = getattr(args, f"{prefix}{name}")
            container = typing.get_origin(annotation)  # dict and tuple fields come as lists
            values[name] = container(value) if container in (dict, tuple) else value
    return values


def experiment_config(args: argparse.Namespace) -> ExperimentConfig:
    """The configuration the ``train`` arguments describe (flags left out keep the defaults
    of :class:`ExperimentConfig` and :class:`TrainConfig`); ``--seed`` also seeds training."""
    setattr(args, "train.seed", args.seed)
    values = _config_values(args, ExperimentConfig, "")
    protocol = values.pop("protocol")
    config = ExperimentConfig(**values)
    for path, applied, given in protocol_replacements(config, protocol):
        print(f"note: --protocol paper sets {path.split('.')[-1]} to {applied}, not the {given} "
              "given", file=sys.stderr)  # fmt: skip
    return with_protocol(config, protocol)


def _train(args: argparse.Namespace) -> None:
    config = experiment_config(args)
    key = run_key(config)
    claimed = _claim_folder(args.out, key, config)
    try:
        result = run_experiment(config, checkpoint_dir=args.out / "checkpoints")
    except ValueError:  # refused: a run that saved nothing leaves the folder to the next one
        checkpoints = args.out / "checkpoints"
        if claimed and not any(checkpoints.glob("*.pt")):
            (args.out / "run.json").unlink()
        raise
    records = result.records
    write_atomic(args.out / "metrics.json", json.dumps(records, indent=2, sort_keys=True) + "\n")
    history = result.trainings[-1].history
    if len(history):  # popularity trains nothing
        write_atomic(args.out / "history.csv", history.to_csv(index=False))
    if result.pruning is not None:
        write_atomic(args.out / "prune_history.csv", result.pruning.history.to_csv(index=False))
    for record in records:
        print(json.dumps({k: record[k] for k in ("method", "budget", "num_params", "recall@20",
                                                 "ndcg@20")}))  # fmt: skip


def _add_sweep_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("sweep", help="run a grid of experiments from a YAML file")
    parser.add_argument("config", type=Path, help="sweep YAML file (see configs/)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (resumable)")
    parser.add_argument("--backend", choices=BACKENDS, default="local")
    parser.add_argument("--address", help="Ray cluster address (default: start a local one)")
    parser.add_argument("--workers", type=int, default=1, help="local processes")


def _sweep(args: argparse.Namespace) -> None:
    config = SweepConfig.from_yaml(args.config)
    result = run_sweep(
        config, args.out, backend=args.backend, workers=args.workers, address=args.address
    )
    print(result.summary())
    if result.failed:
        raise SweepFailedError(
            f"{len(result.failed)} of {len(result.done) + len(result.failed)} runs failed "
            f"(listed above; details in {result.store.failures_dir}); rerun the same command "
            "to retry them"
        )


def _add_notebooks_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("notebooks", help="run the tutorial notebooks with papermill")
    parser.add_argument("--params", type=Path, help="YAML parameter file (e.g. paper scale)")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder of executed copies (default: in place without --params, "
        "runs/notebooks-<params stem> with it)",
    )
    parser.add_argument("--only", nargs="+", help="notebook name prefixes, e.g. 01 03")


def _notebooks(args: argparse.Namespace) -> None:
    from cerp_core.notebooks import load_parameters, run_notebooks

    parameters = load_parameters(args.params) if args.params else None
    out = args.out
    if out is None and args.params is not None:
        out = Path("runs") / f"notebooks-{args.params.stem}"
    for path in run_notebooks(parameters, out, only=args.only):
        print(f"executed {path}")


def _add_report_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("report", help="tables and figures from a sweep's results.csv")
    parser.add_argument("folder", type=Path, help="sweep output folder holding results.csv")
    parser.add_argument(
        "--config", type=Path, help="sweep YAML: report only its runs (a folder keeps all sweeps')"
    )


def _stored_results(folder: Path) -> pd.DataFrame:
    """The results of a sweep folder: rebuilt from its ``runs/*.json`` (the truth; a damaged
    file is named) and rewritten to ``results.csv``, or read from ``results.csv`` alone, every
    metric checked to be a number."""
    import pandas as pd

    from cerp_core.report import METRICS

    source = folder / "results.csv"
    if (folder / "runs").is_dir() and any((folder / "runs").glob("*.json")):
        return ResultStore(folder).write_table()
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found; run a sweep with --out {folder} first")
    try:
        results = pd.read_csv(source)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{source} is not a readable results table: {error}") from None
    for column in [c for c in METRICS if c in results]:
        numbers = pd.to_numeric(results[column], errors="coerce")
        bad = results.index[numbers.isna() & results[column].notna()]
        if len(bad):
            raise ValueError(
                f"{source}, line {bad[0] + 2}: {column} is {results[column][bad[0]]!r}, not a "
                "number (a damaged table; rerun the sweep to rebuild it from its runs)"
            )
    return results


def _runs_of(config: Path, folder: Path, results: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``results`` that the sweep ``config`` makes, by this version's run keys;
    none is an error that says why runs of an older version never match."""
    import pandas as pd

    sweep = SweepConfig.from_yaml(config)
    try:
        keys = {run.key for run in sweep.runs(stored_choices(sweep, folder))}
        mine, why = results[results["run_key"].isin(keys)], ""
    except SweepConfigError as error:  # its grid search is not (all) stored under these keys
        mine, why = results.iloc[:0], f" ({error})"
    if mine.empty:
        commits = sorted({str(c)[:7] for c in results.get("git_commit", pd.Series()).dropna()})
        raise ValueError(
            f"{folder} holds no run of {config} under this version's run keys{why}; a run key "
            f"covers every setting, defaults included, and the stored runs were made at commit "
            f"{', '.join(commits) or 'unknown'}: report the folder without --config"
        )
    return mine


def _report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from cerp_core import plots, report

    source = args.folder / "results.csv"
    results = _stored_results(args.folder)
    if results.empty:
        raise ValueError(
            f"{source} holds no finished run; see {args.folder / 'failures'} for the failed ones"
        )
    if args.config is not None:
        results = _runs_of(args.config, args.folder, results)
    table = report.paper_table(results)
    write_atomic(args.folder / "table.md", report.to_markdown(table) + "\n")
    write_atomic(args.folder / "table.tex", report.to_latex(table) + "\n")
    front = report.pareto_front(results)
    write_atomic(args.folder / "pareto_front.csv", front.to_csv(index=False))
    panels = results.groupby(["dataset", "backbone"])["method"].transform(
        lambda methods: (methods == FULL_MODEL).any()
    )
    if panels.any():
        relative = report.relative_accuracy(results[panels])
        write_atomic(args.folder / "relative_accuracy.csv", relative.to_csv(index=False))
    if not panels.all():
        print("panels without a 'full' model: not in relative_accuracy.csv", file=sys.stderr)
    if (results["method"] == STUDIED).any():
        versus = report.head_to_head(results, STUDIED)
        write_atomic(args.folder / "cerp_head_to_head.csv", versus.to_csv(index=False))
        ranks = report.standings(results, STUDIED)
        write_atomic(args.folder / "cerp_standings.csv", ranks.to_csv(index=False))
    if results.columns.str.startswith("pq_").any():
        composition = report.complementarity_table(results)
        write_atomic(args.folder / "complementarity.csv", composition.to_csv(index=False))
    plots.use_style()
    for (dataset, backbone), panel in results.groupby(["dataset", "backbone"]):
        name = f"budget_curves_{dataset}_{backbone}"
        plots.save_figure(plots.plot_budget_curves(panel), name, args.folder)
    print(report.to_markdown(table))


def build_parser() -> argparse.ArgumentParser:
    """The ``cerp_core`` argument parser with its sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m cerp_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(commands)
    _add_sweep_parser(commands)
    _add_notebooks_parser(commands)
    _add_report_parser(commands)
    return parser


COMMANDS = {"train": _train, "sweep": _sweep, "notebooks": _notebooks, "report": _report}


def _allocation(error: BaseException) -> str:
    """What an allocator refused, in one line: NumPy's ``Unable to allocate 32.3 GiB ...`` or
    PyTorch's ``... you tried to allocate 400000000000 bytes ...``."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    found = re.search(r"tried to allocate (\d+) bytes", text)
    return f"a tensor of {int(found.group(1)) / 2**30:.1f} GiB was refused" if found else text


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sub-command. Bad input prints one ``error:`` line (no traceback) and returns 2;
    a failure of the suite itself prints one line naming the file that holds its traceback
    and returns 1; warnings print as one ``warning:`` line each."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            COMMANDS[args.command](args)
        except (ValueError, FileNotFoundError, StoreBusyError, FloatingPointError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except SweepFailedError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted; checkpoints written so far are kept", file=sys.stderr)
            return 130
        except (MemoryError, RuntimeError) as error:
            if isinstance(error, MemoryError) or "allocate" in str(error):
                print(f"error: out of memory: {_allocation(error)}; lower --dim, "
                      "--num-negatives or --batch-size", file=sys.stderr)  # fmt: skip
                return 2
            return _internal_failure(error)
        except Exception as error:  # noqa: BLE001 - a bug: summarized here, traceback kept
            return _internal_failure(error)
    return 0


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    """A warning as one line, without the source line Python would print under it."""
    print(f"warning: {message}", file=sys.stderr)


def _internal_failure(error: BaseException) -> int:
    """Report a failure of the suite itself in one line; its traceback goes to a file."""
    handle, name = tempfile.mkstemp(prefix="cerp_core-", suffix="-traceback.txt")
    with os.fdopen(handle, "w") as file:
        file.write("".join(traceback.format_exception(error)))
    print(f"internal error: {type(error).__name__}: {error} (the traceback is in {name}; "
          "please report it)", file=sys.stderr)  # fmt: skip
    return 1
