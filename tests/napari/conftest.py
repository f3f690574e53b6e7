"""napari plugin tests: real shared data through BRAUNET_DATA_DIR (no network), Xvfb via pytest-xvfb.

Tests that use a viewer or Qt fixture are marked ``gui`` by tests/conftest.py and skipped, with the reason, when
napari, Qt or a display is missing; the pure-NumPy ones (geometry, sample pins) run anywhere the data is.

Models: random-weight checkpoints written to tmp_path (wiring, geometry, cancel, responsiveness)
and the bundled ``ct-abdomen-8`` where a test needs real organ predictions.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest
import torch

from braunet.infer import official_preprocessing
from braunet.model import BRAUNet, ModelCard, get_preset, save_checkpoint

SYNAPSE8 = ["background", "aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen",
            "stomach"]  # fmt: skip


@pytest.fixture(autouse=True)
def _offline_sample_data(monkeypatch, shared_data):
    """Sample data come from the shared folder, never from the network (and never from a user's cache)."""
    monkeypatch.setenv("BRAUNET_DATA_DIR", str(shared_data))


def make_checkpoint(folder, preset: str, kind: str, name: str, seed: int = 0, **overrides):
    """A random-weight checkpoint folder (CT: 9 Synapse classes; RGB: binary polyp)."""
    torch.manual_seed(seed)
    classes = {"num_classes": 9} if kind == "ct" else {"num_classes": 1}
    config = get_preset(preset, **classes, **overrides)
    model = BRAUNet(config).eval()
    names = SYNAPSE8 if kind == "ct" else ["background", "polyp"]
    card = ModelCard(name=name, config=config, class_names=names, preprocessing=official_preprocessing(kind),
                     description="random weights, for tests")  # fmt: skip
    return save_checkpoint(model, card, folder / name)


@pytest.fixture(scope="session")
def tiny_ct_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("models"), "tiny", "ct", "tiny-ct")


@pytest.fixture(scope="session")
def tiny_rgb_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("models"), "tiny", "rgb", "tiny-rgb")


@pytest.fixture(scope="session")
def cpu_ct_checkpoint(tmp_path_factory):
    """The bundled CT model's architecture (cpu-ct) with random weights: a realistic per-slice cost."""
    return make_checkpoint(tmp_path_factory.mktemp("models"), "cpu-ct", "ct", "cpu-ct-random")


@pytest.fixture()
def bundled_ct_model():
    from braunet import zoo

    if "ct-abdomen-8" not in zoo.list_models():
        pytest.skip("bundled model ct-abdomen-8 is not installed (models/ct-abdomen-8)")
    return "ct-abdomen-8"


class Heartbeat:
    """A QTimer ticking on the GUI thread; ``max_gap`` is the longest time between two ticks (s)."""

    def __init__(self, interval_ms: int = 20) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self) -> Heartbeat:
        self.ticks.append(time.perf_counter())
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()
        self.ticks.append(time.perf_counter())

    @property
    def max_gap(self) -> float:
        return max(b - a for a, b in pairwise(self.ticks))


@pytest.fixture()
def heartbeat():
    return Heartbeat
