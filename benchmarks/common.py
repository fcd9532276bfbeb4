"""Shared pieces of the benchmark scripts: arguments, data, timing, a ratio line."""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

from cerp_core.data import Interactions, load_dataset


def parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark takes."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--dataset", default="gowalla", help="name or folder (default gowalla)")
    args.add_argument("--data-root", help="root of real data sets (default $CERP_DATA_DIR)")
    args.add_argument("--device", default="cpu")
    args.add_argument("--dim", type=int, default=64)
    args.add_argument("--repeats", type=int, default=3, help="timed repetitions (best is kept)")
    return args


def load(args: argparse.Namespace) -> Interactions:
    """The data set without a validation split (benchmarks time the whole train set)."""
    return load_dataset(args.dataset, root=args.data_root, valid_fraction=0.0)


def best_time(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` runs after one warm-up, synchronising CUDA."""
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
    return min(times[1:])


def header(description: str, device: torch.device) -> None:
    """Print what is measured and the machine it is measured on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    where = f"{name or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# {description}; {where}, torch {torch.__version__}")


def report(name: str, seconds: float, baseline_name: str, baseline: float, target: float | None):
    """Print one result line: time, baseline time, ratio and the target it should meet."""
    ratio = seconds / baseline
    verdict = ""
    if target is not None:
        verdict = f" (target <= {target:.2f}x: {'met' if ratio <= target else 'MISSED'})"
    print(
        f"{name}: {seconds:.3f} s | {baseline_name}: {baseline:.3f} s | ratio {ratio:.2f}x{verdict}"
    )
