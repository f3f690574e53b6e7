"""Datasets: volume/label pairs as slices, image/mask folders, mask rules, splits, augmentation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from braunet.errors import InputError
from braunet.infer.preprocess import official_preprocessing
from braunet.train.data import (
    AugmentedSlices,
    SliceSet,
    collect_pairs,
    load_image_pair,
    load_pairs,
    load_volume_pair,
    mask_to_labels,
    prepare,
    split_validation,
)
from tests.train._shared import data_root, one_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def root():
    path = data_root()
    if not path.is_dir():
        pytest.skip(f"shared data not found: {path}")
    return path


def test_cvc_anti_aliased_mask_uses_the_8_bit_midpoint(root):
    """Frame 1 has 7209 edge pixels between 1 and 254; "non-zero" would grow the polyp by 42 %."""
    raw = tifffile.imread(root / "cvc_clinicdb" / "masks" / "1.tif")
    labels = mask_to_labels(raw, 1, "1.tif")
    reference = np.asarray(Image.open(root / "cvc_clinicdb" / "masks_binary" / "1.png")) > 0
    assert np.array_equal(labels == 1, reference)
    assert (raw > 0).sum() > 1.4 * labels.sum()


def test_binary_masks_01_and_0255_agree_and_class_ids_are_checked():
    mask = np.zeros((6, 7), np.uint8)
    mask[2:4, 1:5] = 1
    assert np.array_equal(mask_to_labels(mask, 1, "m"), mask)
    assert np.array_equal(mask_to_labels(mask * 255, 1, "m"), mask)
    assert np.array_equal(mask_to_labels(np.stack([mask * 255] * 3, -1), 1, "m"), mask)  # RGB JPEG mask
    assert np.array_equal(mask_to_labels(mask * 3, 4, "m"), mask * 3)
    with pytest.raises(InputError, match="m: label values 0..3 are not class ids"):
        mask_to_labels(mask * 3, 3, "m")


def test_volume_pair_slices_in_the_radiological_view(root):
    ct = root / "totalseg_ct"
    slices = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9)
    assert len(slices) == 30 and slices.images[0].shape == (101, 122)  # (J, I): rows anterior -> posterior
    assert slices.spacing[0] == (3.0, 3.0) and slices.depth_mm[0] == 3.0
    label = slices.labels[20]
    liver_cols = np.nonzero(label == 5)[1].mean()
    spleen_cols = np.nonzero(label == 7)[1].mean()
    assert liver_cols < 61 < spleen_cols  # liver on the picture's left, as in the official Synapse slices
    assert slices.images[20].min() < -500 and slices.images[20].max() > 300  # raw HU, not windowed


def test_volume_pair_refuses_a_label_on_another_grid(root):
    ct = root / "totalseg_ct"
    with pytest.raises(InputError, match="case01_label_synapse8.nii.gz: label volume shape"):
        load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01_label_synapse8.nii.gz", num_classes=9)


def test_folder_pairs_match_by_stem_and_name_missing_labels(root, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for frame in (1, 13, 25):
        shutil.copy(root / "cvc_clinicdb" / "images" / f"{frame}.tif", images / f"{frame}.tif")
    for frame in (1, 13, 25, 26):  # PNG masks for TIFF images; an extra mask is ignored
        shutil.copy(root / "cvc_clinicdb" / "masks_binary" / f"{frame}.png", masks / f"{frame}.png")
    pairs = collect_pairs([images], [masks])
    assert [(a.name, b.name) for a, b in pairs] == [("1.tif", "1.png"), ("13.tif", "13.png"), ("25.tif", "25.png")]
    slices = load_pairs(pairs, num_classes=1)
    assert len(slices) == 3 and slices.images[0].shape == (288, 384, 3) and slices.labels[0].max() == 1
    (masks / "13.png").unlink()
    with pytest.raises(InputError, match=r"no label for 1 image\(s\) of .*images: 13.tif"):
        collect_pairs([images], [masks])
    with pytest.raises(InputError, match="2 image paths but 1 label paths"):
        collect_pairs([images / "1.tif", images / "25.tif"], [masks / "1.png"])


def test_prepare_uses_the_recipe_and_keeps_label_values(root):
    ct = root / "totalseg_ct"
    slices = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9,
                              slices=[10, 20], known_classes=(5,))
    data = prepare(slices, official_preprocessing("ct"), 128, 9)
    assert data.x.shape == (2, 1, 128, 128) and data.y.shape == (2, 128, 128)
    # (clip01 - 0.5) / 0.5 after a cubic spline zoom, which overshoots a little at sharp edges
    assert float(data.x[0, 0, 0, 0]) == pytest.approx(-1.0) and -1.5 < float(data.x.min()) < float(data.x.max()) < 1.5
    assert set(np.unique(data.y.numpy())) <= set(np.unique(np.stack(slices.labels)))
    assert data.known[0].tolist() == [True, False, False, False, False, True, False, False, False]
    assert data.partial


def test_split_validation_by_slab_with_gap_and_by_group():
    volume = SliceSet.from_arrays([np.zeros((4, 4))] * 20, [np.zeros((4, 4), np.int64)] * 20, group="case")
    train, val, text = split_validation(volume, 0.2, gap=2)
    assert val == [16, 17, 18, 19] and train == list(range(14)) and "slab" in text
    images = SliceSet.from_arrays([np.zeros((4, 4, 3), np.uint8)] * 10, [np.zeros((4, 4), np.int64)] * 10)
    images.groups = [f"seq{i // 2}" for i in range(10)]  # 5 sequences of 2 frames
    train, val, text = split_validation(images, 0.2)
    assert val == [0, 1] and len(train) == 8 and "by group" in text


def test_augmentation_is_deterministic_and_label_safe(root):
    slices = load_image_pair(root / "cvc_clinicdb" / "images" / "1.tif", root / "cvc_clinicdb" / "masks" / "1.tif",
                             num_classes=1)
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
