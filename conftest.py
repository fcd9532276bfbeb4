"""Test tiers for every test path (``tests/`` and the notebooks nbval checks): a plain ``pytest``
runs the fast tier; ``--all`` (CI) or ``-m <marker>`` runs the others."""

from __future__ import annotations

import pytest

TIERS = ("slow", "notebook", "real_data", "browser")
"""Markers of the tests that a plain ``pytest`` leaves out."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        help="run every tier: slow, notebook, real-data and browser tests too (as CI does)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark real-data tests (those that take ``real_data_root``) and notebook checks, then leave
    every marked tier out of a plain run: the default run is the fast tier."""
    for item in items:
        if "real_data_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
    if config.getoption("--all") or config.getoption("markexpr"):
        return
    tiered = [item for item in items if any(item.get_closest_marker(t) for t in TIERS)]
    if tiered:
        config.hook.pytest_deselected(items=tiered)
        items[:] = [item for item in items if item not in tiered]
