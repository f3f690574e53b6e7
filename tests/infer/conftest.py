"""Fixtures for the engine and CLI tests: the shared real data (read-only) and small checkpoints.

The checkpoints are ``tiny``-preset networks with seeded random weights: enough to test geometry,
shapes, dtypes and error handling exactly (their labels are not meant to be anatomy). They are
built once per session in a temporary folder, never in the repository's models/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from braunet.classes import LESION_CLASSES, SYNAPSE8_CLASSES
from braunet.infer import official_preprocessing
from braunet.model import BRAUNet, ModelCard, get_preset, save_checkpoint


@pytest.fixture(scope="session")
def data_dir(shared_data: Path) -> Path:
    """The engine and CLI tests' name for ``shared_data`` (tests/conftest.py): skipped when it is missing."""
    return shared_data


def make_checkpoint(folder: Path, kind: str, seed: int = 0) -> Path:
    """A seeded tiny model with the official recipe for ``kind`` ("ct": 9 classes, "rgb": binary)."""
    torch.manual_seed(seed)
    num_classes = 9 if kind == "ct" else 1
    config = get_preset("tiny", num_classes=num_classes)
    model = BRAUNet(config).eval()
    card = ModelCard(
        name=folder.name, config=config,
        class_names=list(SYNAPSE8_CLASSES if kind == "ct" else LESION_CLASSES),
        preprocessing=official_preprocessing(kind),
        description="test model with random weights", extra={"preset": "tiny"},
    )  # fmt: skip
    return save_checkpoint(model, card, folder)


@pytest.fixture(scope="session")
def ct_model_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny-ct", "ct")


@pytest.fixture(scope="session")
def rgb_model_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny-rgb", "rgb", seed=1)


@pytest.fixture(scope="session")
def ct_model(ct_model_dir):
    from braunet.zoo import load_model

    return load_model(ct_model_dir)


@pytest.fixture(scope="session")
def rgb_model(rgb_model_dir):
    from braunet.zoo import load_model

    return load_model(rgb_model_dir)
