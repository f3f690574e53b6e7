"""Helpers for the training-loop tests: real shared data, tiny models, small crops."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from braunet.infer.preprocess import official_preprocessing
from braunet.model import BRAUNet, ModelCard, get_preset

REPO = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The shared data folder, found as the ``shared_data`` fixture finds it; skips the calling test without it."""
    env = os.environ.get("BRAUNET_DATA_DIR")
    folder = Path(env) if env else (REPO.parent / "shared" / "data").resolve()
    if not folder.is_dir():
        pytest.skip(f"shared data folder not found: {folder} (set BRAUNET_DATA_DIR)")
    return folder


CVC_FRAMES = {  # sequence: frames (first, middle, last), from cvc_clinicdb/cases.csv
    1: (1, 13, 25), 2: (26, 38, 50), 4: (68, 73, 78), 5: (79, 91, 103), 7: (127, 139, 151), 8: (152, 164, 177),
    10: (200, 202, 205), 11: (206, 216, 227), 13: (253, 265, 277), 14: (278, 287, 297),
}


def tiny_card(num_classes: int, kind: str, name: str = "tiny-test") -> ModelCard:
    config = get_preset("tiny", num_classes=num_classes)
    classes = ["background", "polyp"] if num_classes == 1 else ["background"] + [f"c{i}" for i in range(1, num_classes)]
    return ModelCard(name=name, config=config, class_names=classes, preprocessing=official_preprocessing(kind))


def tiny_model(card: ModelCard, seed: int = 0) -> BRAUNet:
    import torch

    torch.manual_seed(seed)
    return BRAUNet(card.config)


def state_equal(a: BRAUNet, b: BRAUNet, prefix: str = "") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(np.array_equal(sa[k].cpu().numpy(), sb[k].cpu().numpy()) for k in sa if k.startswith(prefix))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test with one torch thread (restored afterwards).

    reason: on a 2-core machine shared with other jobs, a 2-thread step waits for both threads to be
    scheduled and ran 3x slower than a 1-thread step; the tests' tensors are small anyway.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
