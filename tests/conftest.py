"""Fixtures shared by every test package.

Subpackages may add their own conftest.py; keep this file append-only and its fixtures generic.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder, read-only: ``$BRAUNET_DATA_DIR`` or ``../shared/data`` from the repository root.

    Tests read from it and write derived files only under ``tmp_path``; data is never copied into the repository.
    """
    override = os.environ.get("BRAUNET_DATA_DIR")
    folder = Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not folder.is_dir():
        pytest.skip(f"shared data folder not found: {folder}")
    return folder


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Store each phase's report on the test item (``item.rep_setup``, ``rep_call``...).

    reason: napari's ``make_napari_viewer`` fixture reads ``request.node.rep_call`` at teardown; a test
    that skips itself after creating a viewer has no call report unless this hook records it.
    """
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def model_library(tmp_path_factory, monkeypatch) -> Path:
    """The model library (``$BRAUNET_MODELS_DIR``, saved versions) of each test: a fresh empty folder, never ``~``."""
    folder = tmp_path_factory.mktemp("model-library")
    monkeypatch.setenv("BRAUNET_MODELS_DIR", str(folder))
    return folder
