"""Organ statistics on the shared CT: counts, volumes (count x voxel volume), HU and boxes, JSON and CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from braunet.data import SYNAPSE8_CLASSES
from braunet.errors import InputError
from braunet.io import read_image
from braunet.stats import CSV_COLUMNS, label_statistics, write_statistics_csv, write_statistics_json


@pytest.fixture(scope="module")
def ct_case(shared_data: Path):
    folder = shared_data / "totalseg_ct"
    return read_image(folder / "case01sm_ct.nii.gz"), read_image(folder / "case01sm_label_synapse8.nii.gz").array


def test_counts_volumes_intensities_and_boxes(ct_case) -> None:
    ct, labels = ct_case  # 3 mm isotropic: 27 mm^3 = 0.027 mL per voxel
    records = label_statistics(labels, ct, SYNAPSE8_CLASSES, intensities=True)
    assert [r.name for r in records] == SYNAPSE8_CLASSES[1:]
    for r in records:
        mask = labels == r.index
        assert r.voxels == int(mask.sum()) > 0
        assert r.volume_ml == pytest.approx(r.voxels * 27 / 1000, rel=1e-9)
        assert r.mean == pytest.approx(float(ct.array[mask].astype(np.float64).mean()), rel=1e-9)
        assert r.std == pytest.approx(float(ct.array[mask].astype(np.float64).std()), rel=1e-9)
        where = np.nonzero(mask)
        assert r.bbox_min_index == tuple(int(w.min()) for w in where)
        assert r.bbox_max_index == tuple(int(w.max()) for w in where)
        low = ct.affine @ [*r.bbox_min_index, 1]
        high = ct.affine @ [*r.bbox_max_index, 1]  # RAS grid: the index corners are the world corners
        np.testing.assert_allclose(r.bbox_min_mm, low[:3], atol=1e-6)
        np.testing.assert_allclose(r.bbox_max_mm, high[:3], atol=1e-6)
    liver = records[4]
    assert liver.name == "liver" and 0 < liver.mean < 200  # contrast-enhanced liver parenchyma in HU


def test_flipped_axes_give_ordered_world_boxes_and_absent_classes(shared_data: Path) -> None:
    folder = shared_data / "dcmqi_ct"
    ct = read_image(folder / "case03_ct.nii.gz")  # LPS: x and y run against RAS
    labels = read_image(folder / "case03_label_synapse8.nii.gz").array  # liver only
    records = {r.name: r for r in label_statistics(labels, ct, SYNAPSE8_CLASSES)}
    assert (records["spleen"].voxels, records["spleen"].volume_ml) == (0, 0.0)
    assert records["spleen"].bbox_min_mm is None and records["spleen"].mean is None
    liver = records["liver"]
    voxel_ml = abs(np.linalg.det(ct.affine[:3, :3])) / 1000
    assert liver.volume_ml == pytest.approx(int((labels == 5).sum()) * voxel_ml)
    assert all(lo <= hi for lo, hi in zip(liver.bbox_min_mm, liver.bbox_max_mm, strict=True))
    corners = [ct.affine @ [*liver.bbox_min_index, 1], ct.affine @ [*liver.bbox_max_index, 1]]
    np.testing.assert_allclose(liver.bbox_min_mm, np.minimum(*corners)[:3], atol=1e-6)
    assert liver.mean is None  # intensities were not asked for


def test_json_and_csv_hold_the_same_numbers(ct_case, tmp_path: Path) -> None:
    ct, labels = ct_case
    records = label_statistics(labels, ct, SYNAPSE8_CLASSES, intensities=True)
    document = json.loads(write_statistics_json(records, tmp_path / "s.json", about={"model": "m"}).read_text())
    assert document["model"] == "m"
    assert [c["voxels"] for c in document["classes"]] == [r.voxels for r in records]
    with write_statistics_csv(records, tmp_path / "s.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    for row, r in zip(rows, records, strict=True):
        assert (row["name"], int(row["voxels"])) == (r.name, r.voxels)
        assert float(row["volume_ml"]) == pytest.approx(r.volume_ml)
        assert (int(row["bbox_max_i"]), float(row["bbox_max_z_mm"])) == (r.bbox_max_index[0], pytest.approx(r.bbox_max_mm[2]))


def test_2d_images_have_pixel_counts_only(shared_data: Path) -> None:
    frame = read_image(shared_data / "cvc_clinicdb" / "masks_binary" / "1.png")
    labels = (frame.array > 127).astype(np.uint8)
    (polyp,) = label_statistics(labels, frame, ["background", "polyp"], intensities=True)
    assert polyp.voxels == int(labels.sum()) and polyp.volume_ml is None and polyp.bbox_min_mm is None
    assert polyp.mean == pytest.approx(255.0)


def test_labels_off_the_grid_are_refused(ct_case) -> None:
    ct, labels = ct_case
    with pytest.raises(InputError, match="does not match the image"):
        label_statistics(labels[:, :, :-1], ct, SYNAPSE8_CLASSES)
