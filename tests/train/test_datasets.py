"""Tensors at the network's size (the card's recipe) and deterministic paired augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from braunet.infer.preprocess import official_preprocessing
from braunet.train.datasets import AugmentedSlices, prepare
from braunet.train.slices import load_image_pair, load_volume_pair
from tests.train._shared import one_torch_thread  # noqa: F401


def test_prepare_uses_the_recipe_and_keeps_label_values(shared_data):
    ct = shared_data / "totalseg_ct"
    slices = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9,
                              slices=[10, 20], known_classes=(5,))
    data = prepare(slices, official_preprocessing("ct"), 128, 9)
    assert data.x.shape == (2, 1, 128, 128) and data.y.shape == (2, 128, 128)
    # (clip01 - 0.5) / 0.5 after a cubic spline zoom, which overshoots a little at sharp edges
    assert float(data.x[0, 0, 0, 0]) == pytest.approx(-1.0) and -1.5 < float(data.x.min()) < float(data.x.max()) < 1.5
    assert set(np.unique(data.y.numpy())) <= set(np.unique(np.stack(slices.labels)))
    assert data.known[0].tolist() == [True, False, False, False, False, True, False, False, False]
    assert data.partial


def test_augmentation_is_deterministic_and_label_safe(shared_data):
    cvc = shared_data / "cvc_clinicdb"
    slices = load_image_pair(cvc / "images" / "1.tif", cvc / "masks" / "1.tif", num_classes=1)
    data = prepare(slices, official_preprocessing("rgb"), 128, 1)
    dataset = AugmentedSlices(data, "rgb", seed=3)
    changed = 0
    for epoch in range(6):
        dataset.set_epoch(epoch)
        x1, y1, _ = dataset[0]
        x2, y2, _ = dataset[0]
        assert np.array_equal(x1.numpy(), x2.numpy()) and np.array_equal(y1.numpy(), y2.numpy())
        assert set(np.unique(y1.numpy())) <= {0, 1}
        changed += not np.array_equal(y1.numpy(), data.y[0].numpy())
    assert changed >= 2
