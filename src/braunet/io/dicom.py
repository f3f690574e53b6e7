"""DICOM series folders (pydicom) -> one Volume in NIfTI voxel order.

Axis convention, matching NIfTI converters (dcm2niix, dcmqi): ``i`` runs along a DICOM row
(the ImageOrientationPatient row cosine, i.e. across columns), ``j`` down the rows (column
cosine) and ``k`` through the slices in increasing position along the slice normal
``row_cosine x column_cosine``. So ``array[:, :, k] == pixel_array_of_slice_k.T``.
DICOM positions are LPS; the affine is converted to RAS+ by negating its x and y rows.

Slice-gap rule: slices must form a regular grid. With three or more slices a step longer than
1.5x the smallest step is a missing slice. With two slices there is no second step to compare,
so the nominal spacing (SpacingBetweenSlices, else SliceThickness) is the reference; with no such
tag a two-slice series is accepted. Steps that differ by more than 1% (and 1 µm) without being a
gap make the positions irregular, which no affine can represent, and are refused too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, MediaStorageDirectoryStorage

from braunet.errors import InputError
from braunet.io._common import PARSE_ERRORS, first_line, rescale
from braunet.io.volume import Volume

__all__ = ["read_dicom_series", "read_series_datasets"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GAP_FACTOR = 1.5  # a step this many times the reference step means a missing slice
_SAME_POSITION_MM = 1e-3


@dataclass(frozen=True)
class _Slice:
    path: Path
    dataset: FileDataset


def read_dicom_series(folder: str | PathLike) -> Volume:
    """Read one DICOM series from a folder (files directly in it; subfolders are ignored).

    Files that are not DICOM (no Part-10 ``DICM`` preamble) and DICOM objects that are positively
    not images (DICOMDIR, structured reports, presentation states...) are skipped; every other
    file must be a readable single-frame greyscale slice of the same series.

    Returns:
        A Volume with ``array`` ``(I, J, K)`` (see module docstring): HU as int16 (int32 if the
        range needs it) when every slice has RescaleSlope 1 and an integer intercept, else
        float32; ``affine`` RAS+; ``modality`` from the Modality tag (``"OT"`` if absent).

    Raises:
        InputError: for a missing or empty folder, unreadable or truncated slices, several
            series (named), multi-frame or colour images, missing geometry tags, inconsistent
            slice sizes or orientations, duplicate positions, missing slices or irregular spacing.
    """
    folder = Path(folder).expanduser()
    slices, positions, step = _ordered_slices(folder)

    pixels, slopes, intercepts = [], [], []
    for item in slices:
        try:
            pixels.append(item.dataset.pixel_array.T)  # reason: (rows, cols) -> (i along a row, j down the rows)
        except PARSE_ERRORS as error:
            problem = f"cannot decode pixel data, truncated or unsupported ({first_line(error)})"
            raise InputError(f"{item.path}: {problem}") from error
        slopes.append(float(item.dataset.get("RescaleSlope", 1.0) or 1.0))
        intercepts.append(float(item.dataset.get("RescaleIntercept", 0.0) or 0.0))
    raw = np.stack(pixels, axis=-1)
    array = rescale(raw, np.array(slopes), np.array(intercepts))

    row_cos, col_cos = _orientation(slices[0])
    pixel_spacing = _float_list(slices[0], "PixelSpacing", 2)  # reason: DICOM order is (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * pixel_spacing[1]
    lps[:3, 1] = col_cos * pixel_spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    modality = str(slices[0].dataset.get("Modality", "") or "OT")
    return Volume(array=np.ascontiguousarray(array), affine=_LPS_TO_RAS @ lps, source=folder,
                  modality=modality, is_2d=False)  # fmt: skip


def read_series_datasets(folder: str | PathLike) -> list[FileDataset]:
    """The slices of a DICOM series folder as pydicom datasets, in the volume's ``k`` order.

    Same checks and order as :func:`read_dicom_series`, so ``datasets[k]`` is the slice stored in
    ``read_dicom_series(folder).array[:, :, k]``. Writers that must reference the source
    instances (DICOM Segmentation export) use it to map each slice to its SOPInstanceUID.

    Raises:
        InputError: as :func:`read_dicom_series`.
    """
    slices, _, _ = _ordered_slices(folder)
    return [item.dataset for item in slices]


def _ordered_slices(folder: str | PathLike) -> tuple[list[_Slice], np.ndarray, np.ndarray]:
    """Load and check a series; return its slices sorted along the normal, their LPS positions
    ``(K, 3)`` and the LPS step vector ``(3,)`` between neighbours."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise InputError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the folder that holds the DICOM series")
    slices = _load_slices(folder)
    _require_one_series(folder, slices)
    for item in slices:
        _require_supported_slice(item)
    _require_same_grid(folder, slices)

    row_cos, col_cos = _orientation(slices[0])
    normal = np.cross(row_cos, col_cos)
    positions = np.array([_float_list(s, "ImagePositionPatient", 3) for s in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    step = _slice_step(folder, slices, positions, normal)
    return slices, positions, step


def _load_slices(folder: Path) -> list[_Slice]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    slices = []
    for path in files:
        try:
            dataset = pydicom.dcmread(path)
        except InvalidDicomError:
            continue  # reason: not DICOM at all (notes, thumbnails); DICOM files carry a 'DICM' preamble
        except PARSE_ERRORS as error:
            raise InputError(f"{path}: unreadable DICOM file ({first_line(error)})") from error
        if _is_known_non_image(dataset):
            continue
        if "PixelData" not in dataset:
            # reason: pydicom stops quietly at the end of a truncated file, so a slice cut short
            # before its pixels looks like a dataset without them
            raise InputError(f"{path}: DICOM file without pixel data (truncated?)")
        slices.append(_Slice(path, dataset))
    if not slices:
        nested = any(p.is_dir() for p in folder.iterdir())
        hint = "; subfolders are not searched, give the folder of one series" if nested else ""
        raise InputError(
            f"{folder}: empty DICOM folder (no DICOM image files among {len(files)} files; "
            f"files need the DICOM Part-10 'DICM' header{hint})"
        )
    return slices


def _is_known_non_image(dataset: FileDataset) -> bool:
    """True only for objects we can name as non-images, so a truncated slice is never skipped."""
    if "PixelData" in dataset:
        return False
    uid = UID(str(dataset.file_meta.get("MediaStorageSOPClassUID", "") or dataset.get("SOPClassUID", "")))
    if uid == MediaStorageDirectoryStorage:
        return True
    name = uid.name  # reason: pydicom returns the UID itself when it does not know the class
    return bool(uid) and name != str(uid) and "Image" not in name


def _require_one_series(folder: Path, slices: Sequence[_Slice]) -> None:
    counts: dict[str, int] = {}
    for item in slices:
        uid = str(item.dataset.get("SeriesInstanceUID", "") or "<no SeriesInstanceUID>")
        counts[uid] = counts.get(uid, 0) + 1
    if len(counts) > 1:
        listing = ", ".join(f"{uid} ({n} files)" for uid, n in counts.items())
        raise InputError(f"{folder}: holds {len(counts)} DICOM series: {listing}; put each series in its own folder")


def _require_supported_slice(item: _Slice) -> None:
    dataset = item.dataset
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(
            f"{item.path}: multi-frame DICOM ({frames} frames) is not supported; export one file per slice"
        )
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise InputError(f"{item.path}: colour DICOM ({samples} samples per pixel); expected a greyscale CT/MR slice")
    for keyword in ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if dataset.get(keyword) is None:
            raise InputError(f"{item.path}: no {keyword} tag, so the slice cannot be placed on a volume grid")


def _require_same_grid(folder: Path, slices: Sequence[_Slice]) -> None:
    first = slices[0]
    size = (int(first.dataset.Rows), int(first.dataset.Columns))
    iop = np.array(_float_list(first, "ImageOrientationPatient", 6))
    row_cos, col_cos = iop[:3], iop[3:]
    if not (
        abs(np.linalg.norm(row_cos) - 1) < 1e-3
        and abs(np.linalg.norm(col_cos) - 1) < 1e-3
        and abs(row_cos @ col_cos) < 1e-3
    ):
        raise InputError(f"{first.path}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors")
    spacing = np.array(_float_list(first, "PixelSpacing", 2))
    if np.any(spacing <= 0):
        raise InputError(f"{first.path}: PixelSpacing {spacing.tolist()} must be positive")
    for item in slices[1:]:
        if (int(item.dataset.Rows), int(item.dataset.Columns)) != size:
            raise InputError(f"{folder}: slices differ in size ({first.path.name} vs {item.path.name})")
        if not np.allclose(_float_list(item, "ImageOrientationPatient", 6), iop, atol=1e-4):
            raise InputError(f"{folder}: slices differ in orientation ({first.path.name} vs {item.path.name})")
        if not np.allclose(_float_list(item, "PixelSpacing", 2), spacing, rtol=1e-4, atol=1e-6):
            raise InputError(f"{folder}: slices differ in pixel spacing ({first.path.name} vs {item.path.name})")


def _slice_step(folder: Path, slices: Sequence[_Slice], positions: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """The LPS vector from one slice to the next, after checking the slices form a regular grid."""
    if len(slices) == 1:
        return normal * (_nominal_spacing(slices[0]) or 1.0)
    along = positions @ normal
    steps = np.diff(along)
    duplicate = int(np.argmin(steps))
    if steps[duplicate] < _SAME_POSITION_MM:
        raise InputError(
            f"{folder}: {slices[duplicate].path.name} and {slices[duplicate + 1].path.name} are at the same position "
            f"({along[duplicate]:.3f} mm); the folder holds more than one volume (repeat scans or time points?)"
        )
    if len(steps) >= 2:
        reference, why = float(steps.min()), "the other slices are"
    else:
        reference, why = _nominal_spacing(slices[0]) or float(steps[0]), "the nominal spacing is"
    widest = int(np.argmax(steps))
    if steps[widest] > _GAP_FACTOR * reference:
        raise InputError(
            f"{folder}: missing slices: {steps[widest]:.3f} mm between {slices[widest].path.name} and "
            f"{slices[widest + 1].path.name} where {why} {reference:.3f} mm apart"
        )
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    expected = positions[0] + np.arange(len(slices))[:, None] * step
    off_grid = float(np.linalg.norm(positions - expected, axis=1).max())
    if off_grid > max(0.01 * float(np.linalg.norm(step)), 1e-3):
        raise InputError(
            f"{folder}: irregular slice positions (steps from {steps.min():.3f} to {steps.max():.3f} mm, "
            f"up to {off_grid:.3f} mm off a regular grid); a volume needs evenly spaced slices"
        )
    return step


def _nominal_spacing(item: _Slice) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = item.dataset.get(keyword)
        if value is not None and value != "" and float(value) > 0:
            return float(value)
    return None


def _orientation(item: _Slice) -> tuple[np.ndarray, np.ndarray]:
    iop = np.array(_float_list(item, "ImageOrientationPatient", 6))
    return iop[:3], iop[3:]


def _float_list(item: _Slice, keyword: str, length: int) -> list[float]:
    value = item.dataset.get(keyword)
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError) as error:
        raise InputError(f"{item.path}: {keyword} is not a list of numbers ({value!r})") from error
    if len(numbers) != length:
        raise InputError(f"{item.path}: {keyword} has {len(numbers)} values, expected {length}")
    return numbers
