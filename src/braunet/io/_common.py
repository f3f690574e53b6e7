"""Helpers shared by the readers: turning parser failures into one-line InputErrors, HU rescaling."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from braunet.errors import InputError

__all__ = ["PARSE_ERRORS", "existing_file", "first_line", "require_finite", "rescale"]

# reason: nibabel, pydicom, Pillow and tifffile report corrupt or truncated input with many
# unrelated exception types (EOFError from gzip, zlib.error, struct.error from header parsing,
# KeyError/IndexError from malformed tags, RuntimeError from missing pixel decoders). Readers
# catch exactly these around third-party parsing and re-raise one InputError naming the file.
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    struct.error,
    zlib.error,
)


def first_line(error: BaseException) -> str:
    """The first line of an exception message (library messages can span several lines)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def existing_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a non-empty file, else raise an InputError naming the problem."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: is a folder, expected a {what} file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), not a {what} file")
    return path


def require_finite(array: np.ndarray, path: Path) -> None:
    """Refuse NaN/Inf voxels: they poison intensity normalisation and every metric downstream."""
    if array.dtype.kind != "f":
        return
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(f"{path}: {bad} of {array.size} voxels are NaN or infinite; fix or replace them first")


def rescale(raw: np.ndarray, slope: np.ndarray | float, intercept: np.ndarray | float) -> np.ndarray:
    """Apply ``raw * slope + intercept`` (DICOM RescaleSlope/Intercept, NIfTI scl_slope/scl_inter).

    ``slope``/``intercept`` are scalars or arrays broadcastable against ``raw`` (per-slice DICOM
    rescaling). Integers stay integers when that is exact: with slope 1 and zero intercept the raw
    dtype is kept; with slope 1 and an integer intercept the result is int16 if the values fit,
    else int32 (CT HU usually fit int16, half the memory of float32). Anything else is float32,
    computed in float64 first so large intercepts do not lose precision.
    """
    slope_arr = np.asarray(slope, dtype=np.float64)
    inter_arr = np.asarray(intercept, dtype=np.float64)
    integral = raw.dtype.kind in "iub" and np.all(slope_arr == 1) and np.all(inter_arr == np.round(inter_arr))
    if not integral:
        return (raw.astype(np.float64) * slope_arr + inter_arr).astype(np.float32)
    if raw.dtype == np.bool_:
        raw = raw.astype(np.uint8)
    if np.all(inter_arr == 0):
        return raw
    shifted = raw.astype(np.int64) + inter_arr.astype(np.int64)
    if shifted.size == 0:
        return shifted.astype(np.int16)
    low, high = int(shifted.min()), int(shifted.max())
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return shifted.astype(dtype)
    return shifted
