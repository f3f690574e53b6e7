"""Pairing image and label files: folders matched by stem, lists in order; the suffixes come from braunet.io."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff

from braunet.errors import InputError
from braunet.io import Volume
from braunet.train.pairs import collect_pairs, label_on_image_grid
from braunet.train.slices import load_pairs


def test_folder_pairs_match_by_stem_and_name_missing_labels(shared_data, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for frame in (1, 13, 25):
        shutil.copy(shared_data / "cvc_clinicdb" / "images" / f"{frame}.tif", images / f"{frame}.tif")
    for frame in (1, 13, 25, 26):  # PNG masks for TIFF images; an extra mask is ignored
        shutil.copy(shared_data / "cvc_clinicdb" / "masks_binary" / f"{frame}.png", masks / f"{frame}.png")
    pairs = collect_pairs([images], [masks])
    assert [(a.name, b.name) for a, b in pairs] == [("1.tif", "1.png"), ("13.tif", "13.png"), ("25.tif", "25.png")]
    slices = load_pairs(pairs, num_classes=1)
    assert len(slices) == 3 and slices.images[0].shape == (288, 384, 3) and slices.labels[0].max() == 1
    (masks / "13.png").unlink()
    with pytest.raises(InputError, match=r"no label for 1 image\(s\) of .*images: 13.tif"):
        collect_pairs([images], [masks])
    with pytest.raises(InputError, match="2 image paths but 1 label paths"):
        collect_pairs([images / "1.tif", images / "25.tif"], [masks / "1.png"])


def test_folders_list_only_what_the_reader_reads(shared_data, tmp_path):
    """The file kinds come from braunet.io's table: an NRRD label beside the images is not an image."""
    from braunet.io import SUPPORTED_SUFFIXES

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    shutil.copy(shared_data / "cvc_clinicdb" / "images" / "1.tif", images / "1.tif")
    shutil.copy(shared_data / "dcmqi_ct" / "liver_spine_seg.nrrd", images / "2.nrrd")
    shutil.copy(shared_data / "cvc_clinicdb" / "masks_binary" / "1.png", masks / "1.png")
    assert [(a.name, b.name) for a, b in collect_pairs([images], [masks])] == [("1.tif", "1.png")]
    (masks / "1.png").rename(masks / "1.nrrd")
    with pytest.raises(InputError, match=f"masks: no image files \\(expected {', '.join(SUPPORTED_SUFFIXES)}\\)"):
        collect_pairs([images], [masks])


# --- label volumes on the image's grid (braunet.train.pairs.label_on_image_grid) -------------------


def _volume(array, affine):
    return Volume(array, affine, None, "CT", False)


@pytest.mark.parametrize("seed", range(6))
def test_labels_in_any_axis_order_and_direction_land_exactly_on_the_image_grid(seed):
    rng = np.random.default_rng(seed)
    shape = (5, 6, 7)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = rng.uniform(-200, 200, 3)
    labels = rng.integers(0, 9, shape).astype(np.uint8)
    image = _volume(np.zeros(shape, np.int16), affine)
    perm = list(itertools.permutations(range(3)))[seed]
    ornt = np.array([[perm[a], rng.choice([-1.0, 1.0])] for a in range(3)])
    stored = apply_orientation(labels, ornt)  # the same voxels in another layout ...
    stored_affine = affine @ inv_ornt_aff(ornt, shape)  # ... at the same world points
    on_grid = label_on_image_grid(image, _volume(stored, stored_affine), "img", "lab")
    assert on_grid.shape == shape and np.array_equal(on_grid, labels)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.__setitem__((0, 3), a[0, 3] + 0.5), "up to 0.5 mm apart"),  # 0.62 of a voxel
        (lambda a: a.__setitem__((slice(0, 3), 2), a[:3, 2] * 1.01), "mm apart"),  # another slice spacing
        (lambda a: a.__setitem__(slice(None), a @ _rotation(5.0)), "mm apart"),  # rotated 5 degrees
    ],
)
def test_labels_moved_resampled_or_rotated_are_refused(change, message):
    shape = (16, 16, 8)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    moved = affine.copy()
    change(moved)
    with pytest.raises(InputError, match=f"lab: labels are not on the voxel grid of img .*{message}"):
        label_on_image_grid(_volume(np.zeros(shape), affine), _volume(np.zeros(shape), moved), "img", "lab")
    tiny = affine.copy()
    tiny[0, 3] += 0.01  # header rounding, an eightieth of a voxel: the same grid
    label_on_image_grid(_volume(np.zeros(shape), affine), _volume(np.ones(shape), tiny), "img", "lab")


def _rotation(degrees: float):
    t = np.deg2rad(degrees)
    out = np.eye(4)
    out[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return out


def test_oblique_labels_are_refused():
    shape = (16, 16, 8)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    with pytest.raises(InputError, match=r"^lab: .* img.*; resample the labels onto the image first$"):
        label_on_image_grid(_volume(np.zeros(shape), affine), _volume(np.zeros(shape), affine @ _rotation(45.0)),
                            "img", "lab")
