"""Fixtures and collection rules shared by every test package.

What the full suite needs, and what a missing piece does (its tests skip, each with one reason):

* the shared data folder: ``$BRAUNET_DATA_DIR``, else ``../shared/data`` beside the repository;
* the official-code fixtures: ``$BRAUNET_FIXTURES_DIR`` (holding ``official/`` and ``biformer/``), else
  ``../shared/fixtures`` beside the repository;
* for the ``gui`` tests (any test that needs napari's viewer or Qt, found by the fixtures it uses): napari, a Qt
  binding and a display. pytest-xvfb starts Xvfb when it is on ``PATH``; a desktop session's display works too.

Subpackages may add their own conftest.py; keep this file's fixtures generic.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Fixtures that create a QApplication or a viewer: a test that uses one (even through another fixture) is `gui`.
QT_FIXTURES = frozenset({"make_napari_viewer", "make_napari_viewer_proxy", "qapp", "qtbot"})


def _folder(variable: str, default: Path) -> Path:
    override = os.environ.get(variable)
    return Path(override).expanduser().resolve() if override else default.resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder, read-only: ``$BRAUNET_DATA_DIR`` or ``../shared/data`` from the repository root.

    Tests read from it and write derived files only under ``tmp_path``; data is never copied into the repository.
    """
    folder = _folder("BRAUNET_DATA_DIR", REPO.parent / "shared" / "data")
    if not folder.is_dir():
        pytest.skip(f"shared data folder not found: {folder} (set BRAUNET_DATA_DIR)")
    return folder


def _fixtures(name: str) -> Path:
    folder = _folder("BRAUNET_FIXTURES_DIR", REPO.parent / "shared" / "fixtures") / name
    if not folder.is_dir():
        pytest.skip(f"{name} fixtures not found: {folder} (set BRAUNET_FIXTURES_DIR)")
    return folder


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    """Inputs, weights and outputs recorded from the official BRAU-Net++ code (``small_*.pt``, ``*_keys.json``)."""
    return _fixtures("official")


@pytest.fixture(scope="session")
def biformer_fixtures() -> Path:
    """The official BiFormer-base checkpoint's key layout and the ``load_from`` key mapping (JSON)."""
    return _fixtures("biformer")


def _gui_unavailable() -> str | None:
    """Why the `gui` tests cannot run here, or None when they can.

    reason: without a display, Qt's xcb platform aborts the whole pytest process at the first QApplication, and
    the offscreen platform crashes once napari adds a layer, so those tests are skipped before any fixture runs.
    """
    missing = [name for name in ("napari", "qtpy") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install -e '.[testing]')"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display: install Xvfb and Qt's xcb libraries (README, 'Run the tests') or use a desktop session"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a Qt or viewer fixture as `gui`; skip the `gui` tests when they cannot run.

    Runs after pytest-xvfb's configure hook, so ``DISPLAY`` already names its Xvfb when one was started.
    """
    reason = _gui_unavailable()
    for item in items:
        if QT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
        if reason and item.get_closest_marker("gui"):
            item.add_marker(pytest.mark.skip(reason=reason))


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
