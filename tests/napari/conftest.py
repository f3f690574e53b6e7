"""napari plugin tests: real shared data through BRAUNET_DATA_DIR (no network), Xvfb via pytest-xvfb."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline_sample_data(monkeypatch, shared_data):
    """Sample data come from the shared folder, never from the network (and never from a user's cache)."""
    monkeypatch.setenv("BRAUNET_DATA_DIR", str(shared_data))
