"""The resumable result store of a sweep folder: a JSON file per finished run, one table."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from cerp_core.config import ExperimentConfig
from cerp_core.io import make_output_folder
from cerp_core.io import write_text_atomic as write_atomic
from cerp_core.schema import results_part
from cerp_core.sweep.config import Record, SweepRun, row_key


class DamagedRunError(ValueError):
    """A stored run file that cannot be read; names the file."""


class StoreBusyError(RuntimeError):
    """Another sweep holds the result folder; two writers would race on its table."""


def _json_value(value: Any) -> Any:
    """JSON fallback for NumPy and torch scalars."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


RECORD_FIELDS = ("dataset", "backbone", "method", "seed", "dim", "protocol")
"""Fields of a run that its records already carry as columns of their own."""


def _config_columns(config: Mapping[str, Any]) -> Record:
    """The run's fields that change results and that a record does not carry, flattened
    (``train.lr``; mappings and lists as JSON; ``budgets`` as ``run_budgets``)."""
    values = results_part(config, ExperimentConfig)
    columns = {f"train.{name}": value for name, value in values.pop("train", {}).items()}
    values["run_budgets"] = values.pop("budgets")
    for name, value in values.items():
        if name not in RECORD_FIELDS:
            is_json = isinstance(value, Mapping | list)
            columns[name] = json.dumps(value, sort_keys=True) if is_json else value
    return columns


class ResultStore:
    """Finished runs of a folder, one file per run, and the tidy table built from them.

    Layout of ``folder``:

    - ``runs/<key>.json``: the configuration, wall time and result records of a finished run.
    - ``failures/<key>.json``: the error of a failed run (removed once it succeeds).
    - ``checkpoints/<key>/``: per-stage checkpoints of a run in progress.
    - ``results.csv``: one row per record of every finished run, with the configuration
      columns, ``run_key`` and ``row_key``; regenerated from ``runs/`` after every run.

    Every file is written atomically, so the folder is consistent whenever a sweep is killed.
    Only one process (the sweep's driver) writes to a store: :meth:`writing` holds
    ``.lock``, an OS file lock that a killed process releases.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.runs_dir = self.folder / "runs"
        self.failures_dir = self.folder / "failures"
        self.table_path = self.folder / "results.csv"

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder's lock while writing; fails at once if another sweep holds it."""
        make_output_folder(self.folder)
        lock = FileLock(self.folder / ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise StoreBusyError(
                f"another sweep is writing to {self.folder} (it holds {lock.lock_file}); "
                "wait for it to end or choose another output folder"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def checkpoint_dir(self, key: str) -> Path:
        """Where the run ``key`` keeps its checkpoints while it runs."""
        return (self.folder / "checkpoints" / key).resolve()

    def finished(self) -> set[str]:
        """Keys of the runs stored so far."""
        return {path.stem for path in self.runs_dir.glob("*.json")}

    def data_fingerprint(self, key: str) -> str | None:
        """The data the stored run ``key`` was computed on (``None``: generated data, or a run
        stored before records carried it)."""
        records = json.loads((self.runs_dir / f"{key}.json").read_text())["records"]
        return records[0].get("data_fingerprint") if records else None

    def save(self, run: SweepRun, records: list[Record], seconds: float) -> None:
        """Store a finished run, forget its failure and checkpoints, regenerate the table."""
        payload = {
            "key": run.key,
            "config": dataclasses.asdict(run.config),
            "tuned": run.choice,
            "seconds": seconds,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "records": records,
        }
        text = json.dumps(payload, indent=1, default=_json_value)
        write_atomic(self.runs_dir / f"{run.key}.json", text)
        self._forget_progress(run.key)
        self.write_table()

    def _forget_progress(self, key: str) -> None:
        """Drop the failure file and checkpoints of the stored run ``key``."""
        (self.failures_dir / f"{key}.json").unlink(missing_ok=True)
        shutil.rmtree(self.checkpoint_dir(key), ignore_errors=True)

    def recover(self) -> None:
        """Finish what a kill inside :meth:`save` left undone: forget the failures and
        checkpoints of stored runs, and regenerate the table."""
        for key in self.finished():
            self._forget_progress(key)
        self.write_table()

    def adopt(self, other: ResultStore, keys: Iterable[str]) -> None:
        """Copy the finished runs ``keys`` of ``other`` that this store lacks: a grid point of
        the tuning phase that is also a run of the sweep is not trained twice."""
        mine = self.finished()
        for key in sorted(set(keys) & other.finished() - mine):
            write_atomic(
                self.runs_dir / f"{key}.json", (other.runs_dir / f"{key}.json").read_text()
            )

    def save_failure(self, run: SweepRun, error: str) -> None:
        """Record why a run failed; the sweep goes on and a later sweep retries it."""
        payload = {
            "key": run.key,
            "run": run.describe(),
            "error": error,
            "config": dataclasses.asdict(run.config),
        }
        write_atomic(self.failures_dir / f"{run.key}.json", json.dumps(payload, indent=1))

    def table(self) -> pd.DataFrame:
        """Every record of every stored run, one row each, in a stable order."""
        rows = []
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                run = json.loads(path.read_text())
                extra = {
                    **_config_columns(run["config"]),
                    "tuned": json.dumps(run.get("tuned", {}), sort_keys=True),
                    "run_seconds": run["seconds"],
                    "finished_at": run["finished_at"],
                }
                for record in run["records"]:
                    keys = {"run_key": run["key"], "row_key": row_key(run["key"], record["budget"])}
                    rows.append({**keys, **record, **extra})
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
                raise DamagedRunError(
                    f"{path} is not a readable stored run ({type(error).__name__}: {error}); "
                    "move it away, and the sweep's next run recomputes that run"
                ) from None
        order = ["dataset", "backbone", "seed", "method", "budget"]
        table = pd.DataFrame(rows, columns=None if rows else ["run_key", "row_key", *order])
        table = table.sort_values(order, ascending=[True] * 4 + [False])
        return table.reset_index(drop=True)

    def write_table(self) -> pd.DataFrame:
        """Regenerate ``results.csv`` atomically from the stored runs; returns the table."""
        table = self.table()
        write_atomic(self.table_path, table.to_csv(index=False))
        return table
