"""Where a result comes from: the code's version and commit, and the kind of CPU."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import cerp_core


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


def provenance() -> dict[str, Any]:
    """The code a record was computed with, and the kind of CPU."""
    return {"version": cerp_core.__version__, "git_commit": git_commit(), "cpu": cpu_description()}
