"""The Volume type: validation, immutability of its geometry, derived properties."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from braunet.io import Volume


def test_geometry_properties_of_an_oblique_volume() -> None:
    angle = np.deg2rad(30)
    affine = np.eye(4)
    rotation = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    affine[:3, :3] = rotation @ np.diag([0.8, 0.8, 2.5])
    volume = Volume(np.zeros((4, 5, 6), np.int16), affine, source="x.nii.gz", modality="CT", is_2d=False)
    assert volume.spacing == pytest.approx((0.8, 0.8, 2.5))  # column norms, not the diagonal
    assert volume.orientation == "RAS"
    assert volume.shape == volume.spatial_shape == (4, 5, 6)
    assert str(volume.source) == "x.nii.gz" and hasattr(volume.source, "suffix")


def test_2d_shapes() -> None:
    rgb = Volume(np.zeros((3, 4, 3), np.uint8), np.eye(4), None, "RGB", True)
    assert rgb.shape == (3, 4, 3) and rgb.spatial_shape == (3, 4)
    assert rgb.spacing == (1.0, 1.0) and rgb.orientation == ""


def test_affine_is_a_frozen_copy() -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    volume = Volume(np.zeros((2, 2, 2)), affine, None, "unknown", False)
    affine[0, 0] = 99
    assert volume.affine[0, 0] == 2.0 and volume.affine.dtype == np.float64
    with pytest.raises(ValueError, match="read-only"):
        volume.affine[0, 0] = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        volume.modality = "CT"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("shape", "is_2d"), [((4, 5), False), ((4, 5, 6, 1), False), ((4,), True), ((4, 5, 4), True), ((2, 3, 4, 3), True)]
)
def test_rejects_arrays_of_the_wrong_rank(shape: tuple[int, ...], is_2d: bool) -> None:
    with pytest.raises(ValueError, match="Volume needs"):
        Volume(np.zeros(shape), np.eye(4), None, "unknown", is_2d)


def test_rejects_a_non_4x4_affine() -> None:
    with pytest.raises(ValueError, match="4x4"):
        Volume(np.zeros((2, 2, 2)), np.eye(3), None, "unknown", False)


def test_compares_by_identity() -> None:
    volume = Volume(np.zeros((2, 2, 2)), np.eye(4), None, "unknown", False)
    assert volume == volume and volume != dataclasses.replace(volume)
    assert len({volume, volume}) == 1
