"""Odd orientations built from the real CT (flips, transposes, oblique rotations, no resampling):
the readers carry them exactly, to_canonical maps the same world points, undo restores the grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braunet.io import Volume, read_image, to_canonical, write_image, write_labels


def _flip(array: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Reverse one voxel axis; the affine changes so every voxel keeps its world position."""
    index_map = np.eye(4)
    index_map[axis, axis] = -1
    index_map[axis, 3] = array.shape[axis] - 1
    return np.flip(array, axis), affine @ index_map


def _transpose(array: np.ndarray, affine: np.ndarray, order: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """New axis d is old axis order[d]."""
    index_map = np.zeros((4, 4))
    index_map[3, 3] = 1
    for new, old in enumerate(order):
        index_map[old, new] = 1
    return array.transpose(order), affine @ index_map


def _rotate(affine: np.ndarray, degrees: float, axis: int) -> np.ndarray:
    """Rotate the world (not the voxels) about a world axis through the origin."""
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    a, b = [i for i in range(3) if i != axis]
    rotation = np.eye(4)
    rotation[[a, a, b, b], [a, b, a, b]] = [c, -s, s, c]
    return rotation @ affine


def _variant(ct: Volume, name: str) -> Volume:
    array, affine = ct.array, ct.affine
    if name == "LPS":
        array, affine = _flip(*_flip(array, affine, 0), 1)
    elif name == "RAI":
        array, affine = _flip(array, affine, 2)
    elif name == "SRA":
        array, affine = _transpose(array, affine, (2, 0, 1))
    elif name == "ASL":
        array, affine = _flip(*_transpose(array, affine, (1, 2, 0)), 2)
    elif name == "oblique-x20":
        affine = _rotate(affine, 20, axis=0)
    elif name == "oblique-LPS-z30":
        array, affine = _flip(*_flip(array, affine, 0), 1)
        affine = _rotate(affine, 30, axis=2)
    # reason: NIfTI-1 stores the affine in float32; rounding first makes the file round trip exact
    affine = affine.astype(np.float32).astype(np.float64)
    return Volume(array=np.ascontiguousarray(array), affine=affine, source=None, modality="CT", is_2d=False)


VARIANTS = ["RAS", "LPS", "RAI", "SRA", "ASL", "oblique-x20", "oblique-LPS-z30"]
CODES = {"oblique-x20": "RAS", "oblique-LPS-z30": "LPS"}


def _assert_same_world_points(original: Volume, canonical: np.ndarray, canonical_affine: np.ndarray) -> None:
    """Every original voxel lands on an integer canonical voxel holding the same value."""
    index = np.indices(original.shape).reshape(3, -1)
    world = original.affine[:3, :3] @ index + original.affine[:3, 3:]
    inverse = np.linalg.inv(canonical_affine)
    canonical_index = inverse[:3, :3] @ world + inverse[:3, 3:]
    rounded = np.round(canonical_index).astype(int)
    assert np.abs(canonical_index - rounded).max() < 1e-3
    np.testing.assert_array_equal(canonical[tuple(rounded)], original.array[tuple(index)])


@pytest.mark.parametrize("name", VARIANTS)
def test_readers_carry_odd_orientations_exactly(tmp_path: Path, ct: Volume, name: str) -> None:
    odd = _variant(ct, name)
    assert odd.orientation == CODES.get(name, name)
    back = read_image(write_image(odd, tmp_path / f"{name}.nii.gz"))
    np.testing.assert_array_equal(back.array, odd.array)
    np.testing.assert_array_equal(back.affine, odd.affine)
    assert back.orientation == odd.orientation
    np.testing.assert_allclose(back.spacing, (3.0, 3.0, 3.0), rtol=1e-6)


@pytest.mark.parametrize("name", VARIANTS)
def test_to_canonical_and_undo(tmp_path: Path, ct: Volume, name: str) -> None:
    odd = read_image(write_image(_variant(ct, name), tmp_path / f"{name}.nii.gz"))
    canonical, reorientation = to_canonical(odd)
    assert canonical.flags.c_contiguous
    assert nib.aff2axcodes(reorientation.canonical_affine) == ("R", "A", "S")
    assert canonical.shape == reorientation.canonical_shape == ct.shape
    # every variant is the same CT, so its canonical array is the original RAS one
    np.testing.assert_array_equal(canonical, ct.array)
    _assert_same_world_points(odd, canonical, reorientation.canonical_affine)
    if not name.startswith("oblique"):
        np.testing.assert_allclose(reorientation.canonical_affine, ct.affine, rtol=0, atol=1e-4)
    assert reorientation.is_identity == (name in ("RAS", "oblique-x20"))

    restored = reorientation.undo(canonical)
    assert restored.flags.c_contiguous
    np.testing.assert_array_equal(restored, odd.array)


@pytest.mark.parametrize("name", ["LPS", "SRA", "ASL"])
def test_views_instead_of_copies_hold_the_same_voxels(ct: Volume, name: str) -> None:
    """``contiguous=False``: the canonical array and the undo are views of their inputs (no copy)."""
    odd = _variant(ct, name)
    view, reorientation = to_canonical(odd, contiguous=False)
    assert np.shares_memory(view, odd.array)
    np.testing.assert_array_equal(view, ct.array)
    restored = reorientation.undo(view, contiguous=False)
    assert np.shares_memory(restored, odd.array)
    np.testing.assert_array_equal(restored, odd.array)
    assert np.shares_memory(reorientation.apply(odd.array, contiguous=False), odd.array)


@pytest.mark.parametrize("name", ["LPS", "ASL", "oblique-LPS-z30"])
def test_predictions_go_back_onto_the_input_grid(
    tmp_path: Path, ct: Volume, ct_labels: np.ndarray, name: str
) -> None:
    odd = read_image(write_image(_variant(ct, name), tmp_path / "odd.nii.gz"))
    _, reorientation = to_canonical(odd)
    # a "prediction" made on the canonical (RAS) grid: the reference labels themselves
    on_input_grid = reorientation.undo(ct_labels)
    written = read_image(write_labels(on_input_grid, odd, tmp_path / "labels.nii.gz"))
    np.testing.assert_array_equal(written.affine, odd.affine)
    _assert_same_world_points(written, ct_labels, reorientation.canonical_affine)
    np.testing.assert_array_equal(reorientation.apply(written.array), ct_labels)
    probabilities = np.stack([ct_labels == 0, ct_labels == 5], axis=-1)  # trailing channels ride along
    np.testing.assert_array_equal(reorientation.undo(probabilities)[..., 1], on_input_grid == 5)


def test_real_dicom_lps_to_ras(dicom_dir: Path) -> None:
    series = read_image(dicom_dir)
    canonical, reorientation = to_canonical(series)
    np.testing.assert_array_equal(canonical, series.array[::-1, ::-1, :])
    assert nib.aff2axcodes(reorientation.canonical_affine) == ("R", "A", "S")
    _assert_same_world_points(series, canonical, reorientation.canonical_affine)
    np.testing.assert_array_equal(reorientation.undo(canonical), series.array)


def test_2d_images_are_left_alone(shared_data: Path) -> None:
    frame = read_image(shared_data / "cvc_clinicdb" / "images" / "1.tif")
    canonical, reorientation = to_canonical(frame)
    np.testing.assert_array_equal(canonical, frame.array)
    assert reorientation.is_identity and reorientation.canonical_shape == (288, 384)
    np.testing.assert_array_equal(reorientation.undo(np.ones((288, 384), np.uint8)), np.ones((288, 384)))


def test_undo_checks_the_grid(ct: Volume) -> None:
    _, reorientation = to_canonical(_variant(ct, "SRA"))
    with pytest.raises(ValueError, match="canonical grid"):
        reorientation.undo(np.zeros((30, 122, 101)))
