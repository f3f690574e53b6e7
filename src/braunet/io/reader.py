"""``read_image``: pick the reader from the path (a folder for DICOM, else the suffix in :data:`FORMATS`)."""

from __future__ import annotations

import dataclasses
from os import PathLike
from pathlib import Path

from braunet.errors import InputError
from braunet.io.dicom import read_dicom_series
from braunet.io.formats import DICOM_FILE_SUFFIXES, SUPPORTED_SUFFIXES, format_of
from braunet.io.image2d import read_2d_class_names, read_image_2d
from braunet.io.nifti import is_nifti_path, read_nifti, read_nifti_class_names
from braunet.io.volume import Volume

__all__ = ["read_class_names", "read_image"]


def read_image(path: str | PathLike, *, modality: str | None = None) -> Volume:
    """Read a NIfTI volume, a DICOM series folder or a 2-D image.

    Dispatch: a folder -> :func:`read_dicom_series`; by :data:`~braunet.io.formats.FORMATS`,
    ``.nii``/``.nii.gz`` -> :func:`read_nifti` and the 2-D formats (``.png .jpg .jpeg .bmp .tif
    .tiff``) -> :func:`read_image_2d`. A single ``.dcm`` file is refused: one slice has no slice
    spacing, and the series is what the user means.

    Args:
        path: file or folder.
        modality: overrides the Volume's modality (NIfTI says ``"unknown"`` otherwise).

    Raises:
        InputError: ``"PATH: problem"``, for every unreadable or unsupported input.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = format_of(path)
    if path.is_dir():
        volume = read_dicom_series(path)
    elif fmt is not None:
        volume = read_image_2d(path) if fmt.is_2d else read_nifti(path)
    elif path.suffix.lower() in DICOM_FILE_SUFFIXES:
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
