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
