"""Benchmark sweeps: a grid of experiments, a resumable result store, local and Ray backends.

A sweep is the grid data set x backbone x method x budget x seed, declared in a YAML file or a
dict (:class:`SweepConfig`). It expands into runs (:meth:`SweepConfig.runs`), one
:class:`~cerp_core.experiment.ExperimentConfig` each, named by a stable key: a hash of
everything that changes the result. A pruning method is *one* run for all its budgets (one
pruning stage, one retraining per snapshot), as in the paper.

Finished runs go to a :class:`ResultStore`, one JSON file per run written atomically, and the
tidy table ``results.csv`` is regenerated from those files after every run. Killing a sweep at
any moment therefore loses at most the runs in flight (and those resume from their per-epoch
checkpoints); running it again skips the finished runs, and no row is ever written twice.

Backends give the same numbers, because every run is seeded by its configuration alone:
``"local"`` runs one at a time (``workers=1``) or in a process pool; ``"ray"`` sends the runs
to a Ray cluster (``address``) or to a local Ray instance started for the sweep.
"""

from cerp_core.sweep.backends import BACKENDS, RunOutcome, run_records
from cerp_core.sweep.config import (
    FULL_BUDGET,
    SweepConfig,
    SweepConfigError,
    SweepRun,
    choose,
    row_key,
    run_key,
)
from cerp_core.sweep.run import SweepFailedError, SweepResult, run_sweep, stored_choices
from cerp_core.sweep.store import ResultStore, StoreBusyError

__all__ = [
    "BACKENDS",
    "FULL_BUDGET",
    "ResultStore",
    "RunOutcome",
    "SweepConfig",
    "SweepConfigError",
    "StoreBusyError",
    "SweepFailedError",
    "SweepResult",
    "SweepRun",
    "run_key",
    "run_records",
    "run_sweep",
    "row_key",
    "stored_choices",
    "choose",
]
