"""The one image type every reader returns and every writer takes.

A :class:`Volume` carries the pixel array together with its geometry from the first line of IO
(MONAI's "geometry travels with the array"), so a label map written later lands exactly on the
grid it was predicted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["Volume"]


@dataclass(frozen=True, eq=False)
class Volume:
    """An image with its voxel-to-world geometry.

    Attributes:
        array: 3-D volume ``(I, J, K)`` in the file's voxel order (nibabel convention; CT in HU,
            float32 or the file's integer dtype), or a 2-D image ``(H, W)`` grey /
            ``(H, W, 3)`` RGB, uint8 or uint16, row-major as displayed. Treat it as read-only:
            readers return fresh arrays, but nothing stops in-place edits.
        affine: ``(4, 4)`` float64, voxel index ``(i, j, k)`` -> RAS+ world millimetres. For 2-D
            images the identity (pixel spacing 1; axis 0 = rows, axis 1 = columns). Stored as a
            read-only copy.
        source: the file or DICOM folder it was read from, ``None`` for arrays made in memory.
        modality: ``"CT"``, ``"MR"``, ``"OT"``... (DICOM Modality), ``"unknown"`` for NIfTI
            unless the caller says otherwise, ``"RGB"`` or ``"grey"`` for 2-D images.
        is_2d: ``True`` for photographs/endoscopy frames, which have no patient geometry.
        header: the nibabel header for NIfTI input, so writers can keep its qform/sform codes;
            ``None`` otherwise.

    ``eq=False``: comparing arrays with ``==`` has no single truth value, so volumes compare (and
    hash) by identity.
    """

    array: np.ndarray
    affine: np.ndarray
    source: Path | None
    modality: str
    is_2d: bool
    header: Any = None

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        affine = np.array(self.affine, dtype=np.float64)  # reason: a copy, so the caller's matrix cannot move us
        if affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got shape {affine.shape}")
        affine.flags.writeable = False
        if self.is_2d:
            if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
                raise ValueError(f"a 2-D Volume needs an (H, W) or (H, W, 3) array, got shape {array.shape}")
        elif array.ndim != 3:
            raise ValueError(f"a 3-D Volume needs an (I, J, K) array, got shape {array.shape}")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)
        if self.source is not None:
            object.__setattr__(self, "source", Path(self.source))

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape, channels included: ``(I, J, K)``, ``(H, W)`` or ``(H, W, 3)``."""
        return tuple(self.array.shape)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The grid a label map must have: ``(I, J, K)`` for volumes, ``(H, W)`` for 2-D images."""
        return tuple(self.array.shape[:2] if self.is_2d else self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel sizes in mm along each spatial axis: the lengths of the affine's columns.

        ``(1.0, 1.0)`` for 2-D images. Correct for oblique affines too, unlike the diagonal.
        """
        ndim = 2 if self.is_2d else 3
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :ndim], axis=0))

    @property
    def orientation(self) -> str:
        """Closest anatomical axis codes of the voxel axes, e.g. ``"RAS"`` or ``"LPS"``.

        Empty for 2-D images, which have no patient orientation.
        """
        if self.is_2d:
            return ""
        return "".join(nib.aff2axcodes(self.affine))
