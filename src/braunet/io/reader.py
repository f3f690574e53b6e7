"""``read_image``: pick the reader from the path (suffix, or a folder for DICOM)."""

from __future__ import annotations

import dataclasses
from os import PathLike
from pathlib import Path

from braunet.errors import InputError
from braunet.io.dicom import read_dicom_series
from braunet.io.image2d import IMAGE_SUFFIXES, read_2d_class_names, read_image_2d
from braunet.io.nifti import NIFTI_SUFFIXES, is_nifti_path, read_nifti, read_nifti_class_names
from braunet.io.volume import Volume

__all__ = ["SUPPORTED_SUFFIXES", "read_class_names", "read_image"]

SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + IMAGE_SUFFIXES
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def read_image(path: str | PathLike, *, modality: str | None = None) -> Volume:
    """Read a NIfTI volume, a DICOM series folder or a 2-D image.

    Dispatch: ``.nii``/``.nii.gz`` -> :func:`read_nifti`; a folder -> :func:`read_dicom_series`;
    ``.png .jpg .jpeg .bmp .tif .tiff`` -> :func:`read_image_2d`. A single ``.dcm`` file is
    refused: one slice has no slice spacing, and the series is what the user means.

    Args:
        path: file or folder.
        modality: overrides the Volume's modality (NIfTI says ``"unknown"`` otherwise).

    Raises:
        InputError: ``"PATH: problem"``, for every unreadable or unsupported input.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        volume = read_dicom_series(path)
    elif is_nifti_path(path):
        volume = read_nifti(path)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        volume = read_image_2d(path)
    elif path.suffix.lower() in _DICOM_SUFFIXES:
        raise InputError(f"{path}: a single DICOM file; give the series folder ({path.parent}) instead")
    else:
        raise InputError(
            f"{path}: unsupported file type; expected a DICOM folder or one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if modality is not None:
        volume = dataclasses.replace(volume, modality=modality)
    return volume


def read_class_names(path: str | PathLike) -> dict[int, str] | None:
    """Class names stored by :func:`braunet.io.write_labels` in a NIfTI, PNG or TIFF file, else None."""
    path = Path(path).expanduser()
    if is_nifti_path(path):
        return read_nifti_class_names(path)
    return read_2d_class_names(path)
