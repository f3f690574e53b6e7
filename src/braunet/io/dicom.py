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

Missing-intercept rule: CT (and series without a Modality tag) must carry RescaleIntercept; a
missing RescaleSlope alone means 1. Without an intercept on every slice the stored values are
judged by air, which a CT slice always shows at about -1000 HU: with the padding removed
(PixelPaddingValue, and values at or below -1500, which no tissue has), if the darkest 0.5 % sit
at -1150..-850 the values already are HU (intercept 0); if they sit at -50..150 they carry the
usual offset of 1024, the one unsigned pixels (PixelRepresentation 0) must use (intercept
-1024); either way one InputWarning says so. Anything else is refused. Other modalities have no
fixed intensity scale: a missing intercept there is 0, as the standard says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TypeVar

import numpy as np
import pydicom
from pydicom.dataset import FileDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID, MediaStorageDirectoryStorage

from braunet.errors import InputError
from braunet.io._common import PARSE_ERRORS, check_budget, first_line, quiet_libraries, require_affine, rescale, warn
from braunet.io.volume import Volume

__all__ = ["read_dicom_series", "read_series_datasets"]

_T = TypeVar("_T")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# reason: pydicom's own error for a value whose length does not fit its VR derives from Exception only
_DICOM_ERRORS: tuple[type[BaseException], ...] = (BytesLengthException, *PARSE_ERRORS)
_GAP_FACTOR = 1.5  # a step this many times the reference step means a missing slice
_SAME_POSITION_MM = 1e-3
_LARGEST_MM = 1e6  # a kilometre: positions and spacings beyond it are corrupt, and would overflow the affine
_AIR_AS_HU = (-1150.0, -850.0)  # the darkest voxels here: stored values are HU already
_AIR_OFFSET = (-50.0, 150.0)  # here: air stored with the usual +1024 offset
_AIR_PERCENTILE = 0.5
_PADDING_BELOW = -1500.0  # no tissue is below this in HU, nor with the offset: padding or outside the scan circle


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
        float32; ``affine`` RAS+; ``modality`` from the Modality tag (``"unknown"`` if absent).

    Raises:
        InputError: for a missing or empty folder, unreadable or truncated slices, several
            series (named), multi-frame or colour images, missing geometry tags, inconsistent
            slice sizes or orientations, duplicate positions, missing slices or irregular spacing,
            more voxels than :func:`~braunet.io._common.max_voxels`, and CT whose HU scale cannot
            be told (module docstring).

    Warns:
        InputWarning: when the CT intercept was inferred (module docstring).
    """
    folder = Path(folder).expanduser()
    notes: list[str] = []
    volume = _quietly(folder, lambda: _read_series(folder, notes))
    for note in notes:
        warn(folder, note)
    return volume


def read_series_datasets(folder: str | PathLike) -> list[FileDataset]:
    """The slices of a DICOM series folder as pydicom datasets, in the volume's ``k`` order.

    Same checks and order as :func:`read_dicom_series`, so ``datasets[k]`` is the slice stored in
    ``read_dicom_series(folder).array[:, :, k]``. Writers that must reference the source
    instances (DICOM Segmentation export) use it to map each slice to its SOPInstanceUID.

    Raises:
        InputError: as :func:`read_dicom_series`.
    """
    folder = Path(folder).expanduser()
    slices, _, _ = _quietly(folder, lambda: _ordered_slices(folder))
    return [item.dataset for item in slices]


def _quietly(folder: Path, read: Callable[[], _T]) -> _T:
    """Run ``read`` with library log lines silenced; a malformed tag value becomes one InputError line."""
    try:
        with quiet_libraries():  # reason: pydicom converts (and warns about) tag values only when they are read
            return read()
    except InputError:
        raise
    except _DICOM_ERRORS as error:  # reason: a malformed tag value surfaces wherever it is first read
        raise InputError(f"{folder}: unreadable DICOM tag values ({first_line(error)})") from error


def _read_series(folder: Path, notes: list[str]) -> Volume:
    """The body of :func:`read_dicom_series`; what it assumed goes to ``notes``, to be warned outside the quiet block."""
    slices, positions, step = _ordered_slices(folder)
    check_budget(folder, (int(slices[0].dataset.Columns), int(slices[0].dataset.Rows), len(slices)), np.dtype(np.int16))

    pixels = []
    for item in slices:
        try:
            pixels.append(item.dataset.pixel_array.T)  # reason: (rows, cols) -> (i along a row, j down the rows)
        except _DICOM_ERRORS as error:
            problem = f"cannot decode pixel data, truncated or unsupported ({first_line(error)})"
            raise InputError(f"{item.path}: {problem}") from error
    raw = np.stack(pixels, axis=-1)
    modality = str(slices[0].dataset.get("Modality", "") or "unknown")
    slopes = np.array([_number(item, "RescaleSlope", 1.0) for item in slices])
    intercepts = _intercepts(folder, slices, raw, slopes, modality, notes)
    array = rescale(raw, slopes, intercepts, folder)

    row_cos, col_cos = _orientation(slices[0])
    pixel_spacing = _float_list(slices[0], "PixelSpacing", 2)  # reason: DICOM order is (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * pixel_spacing[1]
    lps[:3, 1] = col_cos * pixel_spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    require_affine(_LPS_TO_RAS @ lps, folder)
    return Volume(array=np.ascontiguousarray(array), affine=_LPS_TO_RAS @ lps, source=folder,
                  modality=modality, is_2d=False)  # fmt: skip


def _ordered_slices(folder: Path) -> tuple[list[_Slice], np.ndarray, np.ndarray]:
    """Load and check a series; return its slices sorted along the normal, their LPS positions
    ``(K, 3)`` and the LPS step vector ``(3,)`` between neighbours."""
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


def _intercepts(
    folder: Path, slices: Sequence[_Slice], raw: np.ndarray, slopes: np.ndarray, modality: str, notes: list[str]
) -> np.ndarray:
    """RescaleIntercept of every slice, or the one the missing-intercept rule (module docstring) infers."""
    present = [_has_value(item, "RescaleIntercept") for item in slices]
    if all(present):
        return np.array([_number(item, "RescaleIntercept", 0.0) for item in slices])
    if any(present):
        lacking = slices[present.index(False)].path.name
        raise InputError(f"{folder}: RescaleIntercept on some slices only ({lacking} has none); the HU scale is unclear")
    if modality.upper() not in ("CT", "UNKNOWN"):
        return np.zeros(len(slices))
    padding = slices[0].dataset.get("PixelPaddingValue")
    sample = raw[::4, ::4, :].astype(np.float32)  # reason: a percentile needs no full-resolution copy
    keep = sample > _PADDING_BELOW
    if isinstance(padding, int):
        keep &= sample != padding
    values = (sample * slopes.astype(np.float32))[keep]
    signed = "signed" if int(slices[0].dataset.get("PixelRepresentation", 0) or 0) else "unsigned"
    if values.size == 0:
        raise InputError(f"{folder}: CT without RescaleIntercept and only padding values; the HU scale is unknown")
    darkest = float(np.percentile(values, _AIR_PERCENTILE))
    what = f"CT without RescaleIntercept ({signed} pixels); its darkest voxels are at {darkest:.0f}"
    if _AIR_AS_HU[0] <= darkest <= _AIR_AS_HU[1]:
        notes.append(f"{what}, air in HU already: assumed intercept 0")
        return np.zeros(len(slices))
    if _AIR_OFFSET[0] <= darkest <= _AIR_OFFSET[1]:
        notes.append(f"{what}, air with the usual offset of 1024: assumed intercept -1024")
        return np.full(len(slices), -1024.0)
    raise InputError(
        f"{folder}: {what}, which is neither air in HU (about -1000) nor air with the usual offset (about 0); "
        "the HU scale is unknown: add RescaleIntercept and RescaleSlope"
    )


def _has_value(item: _Slice, keyword: str) -> bool:
    value = item.dataset.get(keyword)
    return value is not None and str(value).strip() != ""


def _number(item: _Slice, keyword: str, default: float) -> float:
    """A numeric tag; absent or empty gives ``default`` (RescaleSlope 0 too: it would flatten the slice)."""
    if not _has_value(item, keyword):
        return default
    value = item.dataset.get(keyword)
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{item.path}: {keyword} is not a number ({value!r})") from error
    if not np.isfinite(number):
        raise InputError(f"{item.path}: {keyword} is not finite ({value!r})")
    return number if number or keyword != "RescaleSlope" else default


def _load_slices(folder: Path) -> list[_Slice]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    slices = []
    for path in files:
        try:
            dataset = pydicom.dcmread(path)
        except InvalidDicomError:
            continue  # reason: not DICOM at all (notes, thumbnails); DICOM files carry a 'DICM' preamble
        except _DICOM_ERRORS as error:
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
    if not all(np.isfinite(numbers)) or max(abs(n) for n in numbers) > _LARGEST_MM:
        raise InputError(f"{item.path}: {keyword} {numbers} is not a list of finite millimetre values")
    return numbers
