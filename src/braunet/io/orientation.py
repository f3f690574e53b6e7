"""Reorient volumes to the closest RAS+ voxel order and back, without resampling.

``to_canonical`` only flips and transposes axes (nibabel ``io_orientation`` /
``apply_orientation``), so every voxel keeps its value and ``Reorientation.undo`` restores the
original grid exactly. In the canonical array index ``i`` grows towards the patient's Right,
``j`` towards Anterior and ``k`` towards Superior, so ``array[:, :, k]`` are axial slices from
feet to head. Oblique volumes are mapped to the nearest such axes; their ``canonical_affine``
keeps the rotation, so world coordinates stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from braunet.io.volume import Volume

__all__ = ["Reorientation", "to_canonical"]


@dataclass(frozen=True, eq=False)
class Reorientation:
    """How one volume's voxel grid maps to its closest-RAS+ grid.

    Attributes:
        ornt: ``(n, 2)`` nibabel orientation: original axis ``a`` becomes canonical axis
            ``ornt[a, 0]``, reversed when ``ornt[a, 1] == -1``. Identity for 2-D images.
        original_shape: spatial shape of the original grid.
        original_affine: ``(4, 4)`` voxel -> RAS+ mm of the original grid.
        canonical_affine: ``(4, 4)`` voxel -> RAS+ mm of the canonical grid (same world points).
    """

    ornt: np.ndarray
    original_shape: tuple[int, ...]
    original_affine: np.ndarray
    canonical_affine: np.ndarray

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        """Spatial shape of the canonical grid (``original_shape`` permuted)."""
        shape = [0] * len(self.original_shape)
        for axis, (target, _) in enumerate(self.ornt):
            shape[int(target)] = self.original_shape[axis]
        return tuple(shape)

    @property
    def is_identity(self) -> bool:
        """True when the original grid already is canonical (nothing to flip or transpose)."""
        return bool(np.array_equal(self.ornt, _identity_ornt(len(self.original_shape))))

    def apply(self, array: np.ndarray, *, contiguous: bool = True) -> np.ndarray:
        """Original grid -> canonical grid, e.g. for a label map read alongside the image.

        Args:
            array: ``(*original_shape, ...)``; trailing axes (channels) are left alone.
            contiguous: False returns a strided view of ``array`` (no copy), for callers that
                read only some slices of it.

        Returns:
            A C-contiguous ``(*canonical_shape, ...)`` array (contiguous so ``torch.from_numpy``
            accepts it; flips would otherwise leave negative strides), or the view.
        """
        _check_spatial_shape(array, self.original_shape, "original")
        reoriented = apply_orientation(array, self.ornt)
        return np.ascontiguousarray(reoriented) if contiguous else reoriented

    def undo(self, canonical_array: np.ndarray, *, contiguous: bool = True) -> np.ndarray:
        """Canonical grid -> original grid, exactly (a prediction back onto the input's voxels).

        Args:
            canonical_array: ``(*canonical_shape, ...)``; trailing axes (channels) are left alone.
            contiguous: False returns a strided view of ``canonical_array`` (no copy).

        Returns:
            A C-contiguous ``(*original_shape, ...)`` array, or the view.
        """
        _check_spatial_shape(canonical_array, self.canonical_shape, "canonical")
        inverse = np.empty_like(self.ornt)
        for axis, (target, flip) in enumerate(self.ornt):
            inverse[int(target)] = (axis, flip)
        restored = apply_orientation(canonical_array, inverse)
        return np.ascontiguousarray(restored) if contiguous else restored


def to_canonical(volume: Volume, *, contiguous: bool = True) -> tuple[np.ndarray, Reorientation]:
    """Return ``volume.array`` reoriented to the closest RAS+ axes, and how to undo it.

    2-D images have no patient axes: they come back unchanged with an identity Reorientation.
    ``contiguous=False`` returns a strided view instead of a copy (for a caller that reads a few slices).

    Returns:
        ``(array, reorientation)`` where ``array`` is C-contiguous (or the view) with spatial shape
        ``reorientation.canonical_shape`` and ``reorientation.canonical_affine`` maps its voxels
        to the same world points as ``volume.affine`` maps the original ones.
    """
    shape = volume.spatial_shape
    if volume.is_2d:
        ornt = _identity_ornt(2)
        canonical_affine = volume.affine.copy()
    else:
        ornt = io_orientation(volume.affine)
        canonical_affine = volume.affine @ inv_ornt_aff(ornt, shape)
    reorientation = Reorientation(ornt=ornt, original_shape=shape, original_affine=volume.affine.copy(),
                                  canonical_affine=canonical_affine)  # fmt: skip
    return reorientation.apply(volume.array, contiguous=contiguous), reorientation


def _identity_ornt(ndim: int) -> np.ndarray:
    return np.array([[axis, 1.0] for axis in range(ndim)])


def _check_spatial_shape(array: np.ndarray, expected: tuple[int, ...], grid: str) -> None:
    if tuple(array.shape[: len(expected)]) != expected:
        raise ValueError(f"array of shape {array.shape} does not start with the {grid} grid's shape {expected}")

