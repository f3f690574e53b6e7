"""Volume/label pairs as axial slices, SliceSet splits."""

from __future__ import annotations

import numpy as np
import pytest

from braunet.errors import InputError
from braunet.train.slices import SliceSet, load_volume_pair, split_validation


def test_volume_pair_slices_in_the_radiological_view(shared_data):
    ct = shared_data / "totalseg_ct"
    slices = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9)
    assert len(slices) == 30 and slices.images[0].shape == (101, 122)  # (J, I): rows anterior -> posterior
    assert slices.spacing[0] == (3.0, 3.0) and slices.depth_mm[0] == 3.0
    label = slices.labels[20]
    liver_cols = np.nonzero(label == 5)[1].mean()
    spleen_cols = np.nonzero(label == 7)[1].mean()
    assert liver_cols < 61 < spleen_cols  # liver on the picture's left, as in the official Synapse slices
    assert slices.images[20].min() < -500 and slices.images[20].max() > 300  # raw HU, not windowed


def test_volume_pair_refuses_a_label_on_another_grid(shared_data):
    ct = shared_data / "totalseg_ct"
    with pytest.raises(InputError, match="case01_label_synapse8.nii.gz: label volume shape"):
        load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01_label_synapse8.nii.gz", num_classes=9)


def test_split_validation_by_slab_with_gap_and_by_group():
    volume = SliceSet.from_arrays([np.zeros((4, 4))] * 20, [np.zeros((4, 4), np.int64)] * 20, group="case")
    train, val, text = split_validation(volume, 0.2, gap=2)
    assert val == [16, 17, 18, 19] and train == list(range(14)) and "slab" in text
    images = SliceSet.from_arrays([np.zeros((4, 4, 3), np.uint8)] * 10, [np.zeros((4, 4), np.int64)] * 10)
    images.groups = [f"seq{i // 2}" for i in range(10)]  # 5 sequences of 2 frames
    train, val, text = split_validation(images, 0.2)
    assert val == [0, 1] and len(train) == 8 and "by group" in text
