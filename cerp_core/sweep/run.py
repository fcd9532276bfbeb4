"""Running a sweep: execute what the store lacks, tune first if asked, store every outcome."""

from __future__ import annotations

import datetime
import functools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from cerp_core.data import DataIntegrityError, source_fingerprint
from cerp_core.io import write_text_atomic as write_atomic
from cerp_core.sweep.backends import BACKENDS, Runner, RunOutcome, _local, _ray, run_records
from cerp_core.sweep.config import (
    TUNING_FOLDER,
    Choice,
    SweepConfig,
    SweepRun,
    choose,
)
from cerp_core.sweep.store import ResultStore

SUMMARY_METRIC = "recall@20"


class SweepFailedError(RuntimeError):
    """Some runs of a sweep raised; the others are stored, a rerun retries the failed ones."""


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`: this sweep's rows and what happened to its runs."""

    results: pd.DataFrame
    done: list[str]
    skipped: list[str]
    failed: dict[str, str]
    seconds: float
    store: ResultStore
    chosen: dict[tuple[str, str, str], Choice] = field(default_factory=dict)

    def summary(self) -> str:
        """Counts, wall time, failures and mean Recall@20 per method and budget."""
        lines = [
            f"sweep: {len(self.done)} runs done, {len(self.skipped)} skipped (already stored), "
            f"{len(self.failed)} failed, in {datetime.timedelta(seconds=round(self.seconds))}",
            f"results: {self.store.table_path} ({len(self.results)} rows of this sweep)",
        ]
        for (dataset, backbone, method), choice in self.chosen.items():
            lines.append(f"tuned on validation: {dataset}/{backbone}/{method}: {choice}")
        if self.failed:
            lines.append(f"failed runs (details in {self.store.failures_dir}):")
            lines += [f"  {key}: {error.splitlines()[0]}" for key, error in self.failed.items()]
        if SUMMARY_METRIC in self.results and len(self.results):
            table = self.results.pivot_table(
                index=["dataset", "backbone", "method"],
                columns="budget",
                values=SUMMARY_METRIC,
                aggfunc="mean",
                sort=False,
            )
            table = table[sorted(table.columns, reverse=True)]
            lines.append(f"{SUMMARY_METRIC} (mean over seeds) by budget:")
            lines.append(table.to_string(float_format="{:.4f}".format, na_rep="-"))
        return "\n".join(lines)


def _store_outcomes(
    store: ResultStore,
    runs: Mapping[str, SweepRun],
    outcomes: Iterator[RunOutcome],
    skipped: int,
    progress: bool,
) -> tuple[list[str], dict[str, str]]:
    """Store each outcome as it arrives; the keys done and the failures by key."""
    done: list[str] = []
    failed: dict[str, str] = {}
    bar = tqdm(total=len(runs), initial=skipped, desc="sweep", unit="run", disable=not progress)
    with bar:
        for outcome in outcomes:
            run = runs[outcome.key]
            if outcome.records is None:
                store.save_failure(run, outcome.error or "unknown error")
                failed[outcome.key] = f"{run.describe()}: {outcome.error}"
            else:
                store.save(run, outcome.records, outcome.seconds)
                done.append(outcome.key)
            bar.set_postfix(last=run.describe(), failed=len(failed))
            bar.update()
    return done, failed


def _check_stored_data(store: ResultStore, stored: dict[str, SweepRun]) -> None:
    """Raise :class:`~cerp_core.data.DataIntegrityError` if a stored run was computed on other
    data than its data set's files hold now: it would be skipped and its stale result kept."""
    fingerprints: dict[tuple[str, str | None], str | None] = {}
    for key, run in stored.items():
        source = (run.config.dataset, run.config.data_root)
        if source not in fingerprints:
            fingerprints[source] = source_fingerprint(*source)
        found = store.data_fingerprint(key)
        if found is not None and found != fingerprints[source]:
            raise DataIntegrityError(
                f"{store.runs_dir / key}.json holds the result of {run.describe()} on other data "
                f"({found}; the files of {run.config.dataset} now give {fingerprints[source]}). "
                "Restore the data, or write this sweep to another --out"
            )


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    backend: str = "local",
    workers: int = 1,
    address: str | None = None,
    runner: Runner = run_records,
    progress: bool = True,
) -> SweepResult:
    """Run every run of ``config`` not yet stored in ``out``; results go to ``out``.

    Args:
        config: The grid.
        out: Folder of the :class:`ResultStore` (created if missing).
        backend: ``"local"`` or ``"ray"``.
        workers: Local processes at once (1: in this process), or CPUs of the local Ray
            instance that the ``"ray"`` backend starts without ``address``.
        address: Address of an existing Ray cluster (``"auto"``, ``"ray://host:10001"``).
        runner: Turns a configuration and a checkpoint folder into result records; must be
            picklable for process pools and Ray. (default: :func:`run_records`)
        progress: Show the overall progress bar.

    A run that raises is recorded under ``out/failures/`` and the sweep goes on. A second
    sweep on the same ``out`` while this one runs raises :class:`StoreBusyError`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if address is not None and backend != "ray":
        raise ValueError("address is only used by the ray backend")
    began = time.perf_counter()
    store = ResultStore(out)
    execute = functools.partial(
        _execute, backend=backend, workers=workers, address=address, runner=runner,
        progress=progress,
    )  # fmt: skip
    chosen: dict[tuple[str, str, str], Choice] = {}
    with store.writing():
        if config.tune:
            tuning = ResultStore(store.folder / TUNING_FOLDER)
            done, skipped, failed = execute(tuning, {r.key: r for r in config.tuning_runs()})
            if failed:
                elapsed = time.perf_counter() - began
                return SweepResult(pd.DataFrame(), done, skipped, failed, elapsed, tuning, {})
            chosen = _choose_and_adopt(config, tuning, store)
        runs = {run.key: run for run in config.runs(chosen)}
        done, skipped, failed = execute(store, runs)
    results = _rows_in_run_order(store.table(), list(runs))
    elapsed = time.perf_counter() - began
    return SweepResult(results, done, skipped, failed, elapsed, store, chosen)


def _execute(
    store: ResultStore,
    runs: dict[str, SweepRun],
    backend: str,
    workers: int,
    address: str | None,
    runner: Runner,
    progress: bool,
) -> tuple[list[str], list[str], dict[str, str]]:
    """Run the runs ``store`` does not hold yet; the keys done, skipped and failed."""
    store.recover()
    finished = store.finished()
    skipped = [key for key in runs if key in finished]
    _check_stored_data(store, {key: runs[key] for key in skipped})
    tasks = [(run, store.checkpoint_dir(key)) for key, run in runs.items() if key not in finished]
    if backend == "ray" and tasks:
        outcomes = _ray(tasks, runner, workers, address)
    else:
        outcomes = _local(tasks, runner, workers)
    done, failed = _store_outcomes(store, runs, outcomes, len(skipped), progress)
    return done, skipped, failed


def _choose_and_adopt(
    config: SweepConfig, tuning: ResultStore, store: ResultStore
) -> dict[tuple[str, str, str], Choice]:
    """The grid search's choices, written to ``chosen.csv``; the tuning runs that are also
    runs of the sweep (a chosen point at the tuning budget and first seed) join ``store``."""
    chosen = choose(config, tuning.table())
    rows = [{"dataset": d, "backbone": b, "method": m, **c} for (d, b, m), c in chosen.items()]
    write_atomic(tuning.folder / "chosen.csv", pd.DataFrame(rows).to_csv(index=False))
    store.adopt(tuning, [run.key for run in config.runs(chosen)])
    return chosen


def _rows_in_run_order(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows of the runs ``keys`` only, in their order, each run's budgets from the largest."""
    order = table["run_key"].map({key: i for i, key in enumerate(keys)})
    results = table.assign(_order=order).dropna(subset="_order")
    results = results.sort_values(["_order", "budget"], ascending=[True, False], kind="stable")
    return results.drop(columns="_order").reset_index(drop=True)


def stored_choices(config: SweepConfig, folder: str | Path) -> dict[tuple[str, str, str], Choice]:
    """The tuned values a finished grid search of ``config`` chose in ``folder`` (``{}`` for a
    sweep without ``tune``), recomputed from its stored tuning runs."""
    if not config.tune:
        return {}
    return choose(config, ResultStore(Path(folder) / TUNING_FOLDER).table())
