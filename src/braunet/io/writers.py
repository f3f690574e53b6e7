"""Write label maps and images next to their source, crash-safely.

Every write goes through ``braunet._atomic``: a temporary file in the target folder, renamed
onto the target only when complete, so an interrupted or failed write leaves nothing behind and
never damages an existing file. Volumes become NIfTI on exactly the source grid (see
:func:`braunet.io.nifti.nifti_image`); 2-D images become PNG (or TIFF).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from os import PathLike
from pathlib import Path

import numpy as np

from braunet._atomic import atomic_path, check_writable_target
from braunet.errors import InputError, OutputError
from braunet.io.colour_tables import hex_to_rgb, resolve_colours
from braunet.io.formats import NIFTI, suffixes
from braunet.io.image2d import save_image_2d
from braunet.io.nifti import is_nifti_path, nifti_image
from braunet.io.volume import Volume

__all__ = ["write_image", "write_labels"]

_IMAGE_2D_SUFFIXES = suffixes(is_2d=True, writable=True)
_NIFTI_DTYPES = frozenset("bBhHiIlLqQfd")  # reason: numpy type chars NIfTI-1 can store (ints, float32/64)


def write_labels(
    labels: np.ndarray,
    like: Volume,
    path: str | PathLike,
    *,
    class_names: dict[int, str] | None = None,
    colours: Sequence[str] | None = None,
) -> Path:
    """Write an integer label map on ``like``'s grid.

    Args:
        labels: ``like.spatial_shape`` (``(I, J, K)`` or ``(H, W)``), non-negative integers
            (bool and integral floats accepted). Stored as uint8 when the maximum is below 256,
            else uint16.
        like: the image the labels belong to; its affine (and NIfTI qform/sform codes) are kept.
        path: ``.nii``/``.nii.gz`` for volumes, ``.png``/``.tif``/``.tiff`` for 2-D images.
        class_names: optional ``{value: name}``, stored in the file (a NIfTI comment extension,
            a PNG text chunk) and read back by :func:`braunet.io.read_class_names`.
        colours: optional ``"#rrggbb"`` per class value (a model card's ``class_colors``): an
            8-bit PNG becomes a palette image in these colours, its values still the class
            indices (too few colours: :func:`braunet.io.colour_tables.resolve_colours` picks them).

    Returns:
        ``path`` as a Path.

    Raises:
        OutputError: missing or read-only folder, wrong suffix, or ``path`` is ``like.source``.
        InputError: labels of the wrong shape (message names ``path``) or not non-negative
            integers below 65536.
    """
    target = _target(path, like)
    array = _label_array(labels, like, target)
    if like.is_2d:
        palette = None
        if colours is not None:
            count = max(int(array.max(initial=0)) + 1, max(class_names or {0: ""}) + 1)
            names = {value: (class_names or {}).get(value, f"class {value}") for value in range(count)}
            palette = hex_to_rgb(resolve_colours(names, colours))
        return _write(target, partial(save_image_2d, array, class_names=class_names, palette=palette))
    return _write(target, lambda tmp: nifti_image(array, like, class_names=class_names).to_filename(tmp))


def write_image(volume: Volume, path: str | PathLike) -> Path:
    """Write ``volume.array`` as it is (dtype kept): NIfTI on ``volume``'s grid, or PNG/TIFF.

    Used to save resampled or edited volumes and to build test inputs. PNG takes uint8 grey/RGB
    and uint16 grey; TIFF also takes uint16 RGB. Same atomic and refusal rules as
    :func:`write_labels`.
    """
    target = _target(path, volume)
    array = volume.array
    if volume.is_2d:
        if array.dtype not in (np.uint8, np.uint16):
            raise InputError(f"{target}: cannot store {array.dtype} pixels in an image file; expected uint8 or uint16")
        if array.ndim == 3 and array.dtype == np.uint16 and target.suffix.lower() == ".png":
            raise OutputError(f"{target}: PNG cannot hold 16-bit RGB here; use .tif")
        return _write(target, partial(save_image_2d, array))
    if array.dtype.char not in _NIFTI_DTYPES:
        if array.dtype != np.bool_:
            raise InputError(f"{target}: cannot store {array.dtype} voxels in NIfTI")
        array = array.astype(np.uint8)
    return _write(target, lambda tmp: nifti_image(array, volume).to_filename(tmp))


def _target(path: str | PathLike, like: Volume) -> Path:
    target = Path(path).expanduser()
    name = target.name.lower()
    if like.is_2d and not name.endswith(_IMAGE_2D_SUFFIXES):
        raise OutputError(f"{target}: a 2-D image is written as {', '.join(_IMAGE_2D_SUFFIXES)}")
    if not like.is_2d and not is_nifti_path(target):
        raise OutputError(f"{target}: a volume is written as NIfTI ({' or '.join(NIFTI.suffixes)})")
    inputs = (like.source,) if like.source is not None else ()
    return check_writable_target(target, inputs=inputs)


def _label_array(labels: np.ndarray, like: Volume, target: Path) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != like.spatial_shape:
        where = f" ({like.source})" if like.source is not None else ""
        raise InputError(
            f"{target}: label map shape {array.shape} does not match the image's grid {like.spatial_shape}{where}"
        )
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError(f"{target}: label values must be whole numbers, got non-integer {array.dtype} values")
    elif array.dtype.kind not in "iu":
        raise InputError(f"{target}: label map of type {array.dtype}; expected integers")
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise InputError(f"{target}: label values must lie in 0..65535, got {low}..{high}")
    return array.astype(np.uint8 if high < 256 else np.uint16)


def _write(target: Path, encode: Callable[[Path], None]) -> Path:
    """Run ``encode(temporary_path)`` and move the result onto ``target``.

    reason: ``check_writable_target`` uses ``os.access``, which says yes to root even in a
    read-only folder (and can be wrong on network file systems), so the real test is creating
    the temporary file; any OSError from here on becomes one OutputError naming ``target``.
    """
    try:
        with atomic_path(target) as tmp:
            encode(tmp)
    except OutputError:
        raise
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise OutputError(f"{target}: cannot write ({reason})") from error
    return target
