"""Pairing image and label files: folders matched by stem, lists in order; the suffixes come from braunet.io."""

from __future__ import annotations

import shutil

import pytest

from braunet.errors import InputError
from braunet.train.pairs import collect_pairs
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
