"""Helpers shared by the readers: one-line InputErrors and InputWarnings, quiet libraries, size budgets, rescaling.

Third-party readers talk on their own channels: nibabel logs header fixes to stderr through its own
handler, tifffile and pydicom log through :mod:`logging`, Pillow and pydicom issue
:mod:`warnings`. Inside :func:`quiet_libraries` all of that goes to the ``braunet.io`` logger at
DEBUG level instead; what matters to the user is said once, by the reader, as an
:class:`~braunet.errors.InputError` or :class:`~braunet.errors.InputWarning` naming the file.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from braunet.errors import InputError, InputWarning

__all__ = [
    "MAX_VOXELS_ENV",
    "PARSE_ERRORS",
    "check_budget",
    "existing_file",
    "first_line",
    "max_voxels",
    "quiet_libraries",
    "require_affine",
    "require_finite",
    "rescale",
    "to_float32",
    "warn",
]

# reason: nibabel, pydicom, Pillow and tifffile report corrupt or truncated input with many
# unrelated exception types (EOFError from gzip, zlib.error, struct.error from header parsing,
# KeyError/IndexError from malformed tags, RuntimeError from missing pixel decoders, ZeroDivisionError
# from a TIFF tag of 0 rows per strip). Readers
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
    ArithmeticError,  # OverflowError, ZeroDivisionError
    struct.error,
    zlib.error,
)


MAX_VOXELS_ENV = "BRAUNET_MAX_VOXELS"
_BYTES_PER_VOXEL_BUDGET = 16  # the stored values, their float32/HU copy and the engine's canonical copy
_FALLBACK_RAM = 8 << 30  # where the OS does not say how much memory it has
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_LOG = logging.getLogger("braunet.io")
_LIBRARY_LOGGERS = ("nibabel.global", "tifffile", "pydicom")  # the loggers those libraries write to directly
_quiet = threading.local()


class _Divert(logging.Filter):
    """Drops a library's log record while this thread is inside :func:`quiet_libraries`, keeping it at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_quiet, "depth", 0):
            _LOG.debug("%s: %s", record.name, record.getMessage())
            return False
        return True


for _name in _LIBRARY_LOGGERS:
    logging.getLogger(_name).addFilter(_Divert())


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Around third-party parsing: library log lines and warnings go to the ``braunet.io`` DEBUG log.

    Only this thread's log records are diverted; warnings filters are process-wide (Python's
    :class:`warnings.catch_warnings`), so keep the block to the library calls. Readers issue their
    own :func:`warn` outside it, or it would be swallowed too.
    """
    _quiet.depth = getattr(_quiet, "depth", 0) + 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for item in caught:
            _LOG.debug("%s: %s", item.category.__name__, item.message)
    finally:
        _quiet.depth -= 1


def warn(path: Path, message: str) -> None:
    """Issue one :class:`~braunet.errors.InputWarning` ``"PATH: message"`` (the caller of the reader is blamed)."""
    warnings.warn(f"{path}: {message}", InputWarning, stacklevel=4)


def max_voxels() -> int:
    """The most voxels (or pixels) one image may have: ``$BRAUNET_MAX_VOXELS``, else RAM / 16 bytes.

    16 bytes a voxel holds the stored values (up to float64), the float32 or HU copy and the
    engine's reoriented copy, so an accepted image fits in memory with room to spare.
    """
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if text:
        try:
            value = int(float(text))
        except ValueError:
            raise InputError(f"{MAX_VOXELS_ENV}={text!r}: not a number of voxels") from None
        if value <= 0:
            raise InputError(f"{MAX_VOXELS_ENV}={text!r}: must be a positive number of voxels")
        return value
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # reason: Windows has no sysconf
        ram = _FALLBACK_RAM
    return max(1, ram // _BYTES_PER_VOXEL_BUDGET)


def check_budget(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, limit: int | None = None, what: str = "voxels"
) -> None:
    """Refuse, before anything is allocated, an image whose header claims more ``what`` than ``limit``.

    ``shape`` is what the header claims (voxels: ``(I, J, K)``; pixels: ``(H, W)``); ``limit``
    defaults to :func:`max_voxels`.
    """
    count = int(np.prod(shape, dtype=object))  # reason: Python ints, a forged shape must not overflow
    limit = max_voxels() if limit is None else limit
    if count > limit:
        size = count * np.dtype(dtype).itemsize / 2**30
        raise InputError(
            f"{path}: the header claims {'x'.join(map(str, shape))} = {count:,} {what} ({size:,.1f} GiB as "
            f"{np.dtype(dtype)}), more than the limit of {limit:,}; set {MAX_VOXELS_ENV} to allow more"
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


def require_affine(affine: np.ndarray, path: Path) -> None:
    """Refuse a voxel-to-world affine that no orientation can be read from.

    Not invertible, not finite, or axes so unequal in length that nibabel cannot name an
    anatomical direction for each (``aff2axcodes`` gives None): the engine's reorientation
    and every label writer need all three.
    """
    import nibabel as nib  # reason: only the volume readers need it, and they import it anyway

    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: voxel-to-world affine is not invertible (zero or missing voxel size?)")
    if None in nib.aff2axcodes(affine):
        sizes = ", ".join(f"{v:.3g}" for v in np.linalg.norm(affine[:3, :3], axis=0))
        raise InputError(f"{path}: voxel-to-world affine is degenerate (voxel sizes {sizes} mm); no orientation")


def require_finite(array: np.ndarray, path: Path) -> None:
    """Refuse NaN/Inf voxels: they poison intensity normalisation and every metric downstream."""
    if array.dtype.kind != "f":
        return
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(f"{path}: {bad} of {array.size} voxels are NaN or infinite; fix or replace them first")


def to_float32(values: np.ndarray, path: Path) -> np.ndarray:
    """``values`` (any float or integer dtype) as float32, refusing NaN/Inf and values float32 cannot hold.

    Checked before the cast, so no "overflow" RuntimeWarning is ever printed and finite values
    beyond about 3.4e38 are named as what they are, not as infinities.
    """
    require_finite(values, path)
    if values.dtype.itemsize > 4 or values.dtype.kind in "iu":
        with np.errstate(over="ignore", invalid="ignore"):
            outside = int(np.count_nonzero(np.abs(values) > _FLOAT32_MAX))
        if outside:
            raise InputError(
                f"{path}: {outside} of {values.size} voxels are outside the float32 range (|value| > 3.4e38); "
                "rescale the image first"
            )
    return values.astype(np.float32)


def rescale(
    raw: np.ndarray, slope: np.ndarray | float, intercept: np.ndarray | float, path: Path
) -> np.ndarray:
    """Apply ``raw * slope + intercept`` (DICOM RescaleSlope/Intercept, NIfTI scl_slope/scl_inter).

    ``slope``/``intercept`` are scalars or arrays broadcastable against ``raw`` (per-slice DICOM
    rescaling). Integers stay integers when that is exact: with slope 1 and zero intercept the raw
    dtype is kept; with slope 1 and an integer intercept the result is int16 if the values fit,
    else int32 (CT HU usually fit int16, half the memory of float32). Anything else is float32,
    computed in float64 first so large intercepts do not lose precision, and refused (InputError
    naming ``path``) where the result is not finite or beyond float32. 64-bit integers and
    intercepts beyond +-2**31 take the float path too, so the integer sum cannot wrap.
    """
    slope_arr = np.asarray(slope, dtype=np.float64)
    inter_arr = np.asarray(intercept, dtype=np.float64)
    if not (np.all(np.isfinite(slope_arr)) and np.all(np.isfinite(inter_arr))):
        raise InputError(f"{path}: the intensity scaling (slope {slope}, intercept {intercept}) is not finite")
    integral = (
        raw.dtype.kind in "iub"
        and np.all(slope_arr == 1)
        and np.all(inter_arr == np.round(inter_arr))
        and (np.all(inter_arr == 0) or (raw.dtype.itemsize <= 4 and np.all(np.abs(inter_arr) < 2**31)))
    )
    if not integral:
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = raw.astype(np.float64) * slope_arr + inter_arr
        return to_float32(scaled, path)
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
