"""Where the runs of a sweep execute: this process, a process pool, or a Ray cluster."""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

from cerp_core.experiment import ExperimentConfig, run_experiment
from cerp_core.sweep.config import Record, SweepRun

BACKENDS = ("local", "ray")
Runner = Callable[[ExperimentConfig, Path | None], list[Record]]


def run_records(config: ExperimentConfig, checkpoint_dir: Path | None) -> list[Record]:
    """The default runner: :func:`~cerp_core.experiment.run_experiment`'s records, with a
    record saying why for each budget the method cannot meet."""
    return run_experiment(config, checkpoint_dir=checkpoint_dir, record_infeasible=True).records


@dataclass
class RunOutcome:
    """What a worker sends back: the records, or the error that stopped the run."""

    key: str
    records: list[Record] | None
    error: str | None
    seconds: float


def execute(
    run: SweepRun, checkpoint_dir: Path | None, runner: Runner, threads: int | None
) -> RunOutcome:
    """Run one configuration (in any process); an exception becomes the outcome's error."""
    began = time.perf_counter()
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        records = runner(run.config, checkpoint_dir)
    except Exception as error:  # a failed run is recorded, the sweep goes on
        message = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
        return RunOutcome(run.key, None, message, time.perf_counter() - began)
    finally:
        torch.set_num_threads(previous)
    return RunOutcome(run.key, records, None, time.perf_counter() - began)


Task = tuple[SweepRun, Path]


def _local(tasks: list[Task], runner: Runner, workers: int) -> Iterator[RunOutcome]:
    """One run at a time in this process, or ``workers`` spawned processes."""
    if workers == 1:
        for run, checkpoints in tasks:
            yield execute(run, checkpoints, runner, None)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {
            pool.submit(execute, run, checkpoints, runner, threads): run
            for run, checkpoints in tasks
        }
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # e.g. a worker killed for memory
                yield RunOutcome(futures[future].key, None, f"worker died: {error!r}", 0.0)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _ray(
    tasks: list[Task], runner: Runner, workers: int, address: str | None
) -> Iterator[RunOutcome]:
    """Runs as Ray tasks (one CPU each, one GPU for CUDA runs), collected as they finish.

    Connects to the cluster at ``address``, or starts a local instance with ``workers`` CPUs
    (shut down at the end); an already initialized Ray is reused as it is. Cluster nodes need
    ``cerp-suite`` installed and the data sets under the same paths; a task keeps its
    checkpoints on the node that runs it.
    """
    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the ray backend needs Ray: pip install 'cerp-suite[ray]'"
        ) from None

    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address)
    elif started:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(execute)
        pending = {}
        for run, checkpoints in tasks:
            gpus = 1 if run.config.device.startswith("cuda") else 0
            ref = remote.options(num_cpus=1, num_gpus=gpus).remote(run, checkpoints, runner, 1)
            pending[ref] = run
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(ref)
            try:
                yield ray.get(ref)
            except ray.exceptions.RayError as error:
                yield RunOutcome(run.key, None, f"Ray task failed: {error}", 0.0)
    finally:
        if started:
            ray.shutdown()
