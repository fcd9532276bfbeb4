"""Shared fixtures: where the real data sets are, and the devices to test on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def shared_data_root() -> Path:
    """``$CERP_DATA_DIR`` if set, else the ``../shared/data`` beside the checkout."""
    env = os.environ.get("CERP_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """A test that takes ``device`` runs on the CPU and, where present, on CUDA."""
    return request.param


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """Root holding gowalla/ and yelp2018/; missing is a skip locally but a failure in CI."""
    root = shared_data_root()
    if not (root / "gowalla" / "train.txt").is_file():
        message = f"real data sets not found under {root} (set CERP_DATA_DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Processed-data caches go to a per-session temporary folder, never into the checkout."""
    monkeypatch.setenv("CERP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
