"""2-D images: PNG/JPEG/BMP through Pillow, TIFF through tifffile.

Accepted: grey (H, W) and RGB (H, W, 3), 8- or 16-bit. Documented conversions:

* alpha (RGBA, LA, RGB+alpha TIFF) is dropped, not composited: the stored colour is the image;
  compositing over an arbitrary background would invent pixel values;
* palette (P) images become RGB (colour lookup), 1-bit images become 0/255 uint8; except label
  maps written by :func:`braunet.io.write_labels` (a palette PNG with its class-name chunk), which
  keep their class indices;
* 16-bit grey PNG/TIFF stays uint16; 8-bit stays uint8;
* JPEG EXIF orientation is applied, so arrays are "as displayed".

TIFF goes through tifffile because Pillow cannot open the CVC-ClinicDB frames (3 samples tagged
BlackIsZero). Everything else odd (more than 3 colour channels, float or signed pixels, 16-bit
RGB PNG, which Pillow silently reduces to 8 bits) is refused, and so are files of several frames:
animated GIF/PNG and multi-page TIFF ("N frames; ..."), since segmenting the first frame alone
would be a silent choice (a multi-picture JPEG, MPO, is the exception: its first frame is the
photograph, the others previews or depth maps). The width x height from the header is checked
before decoding against the pixel limit: :func:`~braunet.io._common.max_voxels` or Pillow's
``Image.MAX_IMAGE_PIXELS``, whichever is smaller (Pillow's decompression-bomb guard), so a small
compressed file cannot decode into gigabytes.
"""

from __future__ import annotations

import itertools
import json
import math
from os import PathLike
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from braunet.errors import InputError
from braunet.io._common import PARSE_ERRORS, check_budget, existing_file, first_line, max_voxels, quiet_libraries
from braunet.io.formats import IMAGE_SUFFIXES, TIFF
from braunet.io.volume import Volume

__all__ = ["read_image_2d", "read_2d_class_names", "save_image_2d"]

_IDENTITY = np.eye(4)
_CLASS_NAMES_KEY = "braunet_class_names"
_PIL_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError, SyntaxError, Image.DecompressionBombError, *PARSE_ERRORS
)
# reason: tifffile asserts on some forged series headers (a page without a dtype) instead of raising TiffFileError
_TIFF_ERRORS: tuple[type[BaseException], ...] = (tifffile.TiffFileError, AssertionError, *PARSE_ERRORS)
_HEADER_ERRORS: tuple[type[BaseException], ...] = (*_TIFF_ERRORS, UnidentifiedImageError)


def read_image_2d(path: str | PathLike) -> Volume:
    """Read a PNG, JPEG, BMP or TIFF image.

    Returns:
        A Volume with ``array`` ``(H, W)`` (``modality="grey"``) or ``(H, W, 3)``
        (``modality="RGB"``), uint8 or uint16, ``affine`` the identity (pixel spacing 1).

    Raises:
        InputError: for missing, empty, truncated or corrupt files and the refused kinds listed
            in the module docstring.
    """
    path = existing_file(Path(path).expanduser(), "image")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: unsupported image type {suffix!r}; expected one of {', '.join(IMAGE_SUFFIXES)}")
    array = _read_tiff(path) if TIFF.matches(path) else _read_pillow(path)
    array = _checked_pixels(path, array)
    return Volume(array=array, affine=_IDENTITY, source=path, modality="RGB" if array.ndim == 3 else "grey", is_2d=True)


def max_pixels() -> int:
    """The most pixels (width x height) a 2-D image may have: the smaller of the voxel budget and Pillow's."""
    pillow = Image.MAX_IMAGE_PIXELS
    return min(max_voxels(), int(pillow)) if pillow else max_voxels()


def _refuse_frames(path: Path, frames: int, kind: str) -> None:
    if frames > 1:
        raise InputError(
            f"{path}: {frames} frames ({kind}); expected one still image (a single page): save the frame you want on its own"
        )


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with quiet_libraries(), Image.open(path) as image:
            width, height = image.size
            check_budget(path, (height, width), np.dtype(np.uint8), max_pixels(), what="pixels")
            if image.format != "MPO":  # reason: an MPO's first frame is the photograph, the rest previews
                _refuse_frames(path, int(getattr(image, "n_frames", 1)), f"an animated {image.format}")
            image.load()  # reason: Pillow decodes lazily; truncation only shows here
            if image.format == "PNG":
                _refuse_16_bit_colour_png(path)
            is_label_map = image.mode == "P" and _CLASS_NAMES_KEY in image.info
            image = ImageOps.exif_transpose(image)
            if is_label_map:
                return np.asarray(image)  # reason: the palette only colours the class indices
            return _pillow_to_array(path, image)
    except InputError:
        raise
    except _PIL_ERRORS as error:
        raise InputError(f"{path}: unreadable or truncated image ({first_line(error)})") from error


def _refuse_16_bit_colour_png(path: Path) -> None:
    with path.open("rb") as stream:
        ihdr = stream.read(26)  # signature (8), chunk length (4), b"IHDR" (4), width, height, bit depth, colour type
    bit_depth, colour_type = ihdr[24], ihdr[25]
    if bit_depth == 16 and colour_type in (2, 6):
        raise InputError(f"{path}: 16-bit colour PNG is not supported (Pillow reduces it to 8 bits); save it as TIFF")


def _pillow_to_array(path: Path, image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "1":
        return np.asarray(image.convert("L"))  # reason: 0/255 like the other 8-bit masks
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode in ("LA", "La"):
        return np.asarray(image.getchannel(0))
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.asarray(image)[..., :3]
    if mode in ("P", "PA"):
        return np.asarray(image.convert("RGBA"))[..., :3]
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)  # reason: I;16B is big-endian; native order from here on
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > np.iinfo(np.uint16).max):
            raise InputError(f"{path}: 32-bit integer pixels outside 0..65535 are not supported")
        return values.astype(np.uint16)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB"))
    raise InputError(f"{path}: image mode {mode!r} is not supported; expected grey or RGB")


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with quiet_libraries(), tifffile.TiffFile(path) as tiff:
            if not tiff.pages or not tiff.series:
                raise InputError(f"{path}: TIFF without a readable image (truncated?)")
            series = tiff.series[0]
            # reason: reduced-resolution pages are previews of the image, not frames
            if any(not page.is_reduced for page in itertools.islice(tiff.pages, 1, None)):
                _refuse_frames(path, len(tiff.pages), "a multi-page TIFF")
            yx = tuple(int(n) for n, axis in zip(series.shape, series.axes, strict=True) if axis in "YX")
            check_budget(path, yx, series.dtype, max_pixels(), what="pixels")
            if math.prod(series.shape) > math.prod(yx) * 4:  # reason: more than RGBA in one page is not an image
                raise InputError(
                    f"{path}: TIFF with axes {series.axes!r} and shape {series.shape}; expected one 2-D image (a single page)"
                )
            file_size = tiff.filehandle.size
            for page in tiff.pages:
                ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True)]
                if ends and max(ends) > file_size:
                    raise InputError(f"{path}: truncated TIFF (image data runs past the end of the file)")
            first_page = tiff.pages[0]
            axes, array = series.axes, series.asarray()
            photometric, extra = first_page.photometric, tuple(first_page.extrasamples)
    except InputError:
        raise
    except _TIFF_ERRORS as error:
        raise InputError(f"{path}: unreadable or truncated TIFF ({first_line(error)})") from error
    if axes == "SYX":
        array, axes = np.moveaxis(array, 0, -1), "YXS"  # reason: planar configuration stores channels first
    if axes not in ("YX", "YXS"):
        raise InputError(
            f"{path}: TIFF with axes {axes!r} and shape {array.shape}; expected one 2-D image (a single page)"
        )
    if array.ndim == 3:
        channels = array.shape[2]
        has_alpha = bool(extra) and channels in (2, 4)
        if channels == 1 or has_alpha and channels == 2:
            array = array[..., 0]
        elif has_alpha and channels == 4 and photometric == tifffile.PHOTOMETRIC.RGB:
            array = array[..., :3]
        elif channels != 3:
            raise InputError(f"{path}: {channels} channels; expected grey, RGB or RGB + alpha")
    return array


def _checked_pixels(path: Path, array: np.ndarray) -> np.ndarray:
    if array.size == 0 or 0 in array.shape:
        raise InputError(f"{path}: empty image (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] != 3:
        raise InputError(f"{path}: {array.shape[2]} channels; expected grey or RGB")
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # reason: big-endian files; native from here on
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: {array.dtype} pixels are not supported; expected 8- or 16-bit unsigned grey or RGB")
    # reason: np.asarray(PIL image) is read-only; torch.as_tensor warns on read-only arrays, and the
    # other readers return writable ones
    return np.require(array, requirements=("C_CONTIGUOUS", "WRITEABLE"))


def save_image_2d(
    array: np.ndarray,
    path: Path,
    *,
    class_names: dict[int, str] | None = None,
    palette: np.ndarray | None = None,
) -> None:
    """Write ``(H, W)`` uint8/uint16 or ``(H, W, 3)`` uint8 to ``path`` (PNG), or any of those
    plus uint16 RGB to TIFF; the format comes from ``path``'s suffix. Class names go into a PNG
    text chunk (TIFF: the ImageDescription tag) as JSON. ``palette`` (``(K, 3)`` uint8, K <= 256)
    makes a ``(H, W)`` uint8 PNG a palette image: the pixel values stay as they are and viewers
    show value v in colour ``palette[v]`` (TIFF and 16-bit arrays ignore it)."""
    text = json.dumps({_CLASS_NAMES_KEY: {str(k): v for k, v in sorted(class_names.items())}}) if class_names else None
    if TIFF.matches(path):
        photometric = "rgb" if array.ndim == 3 else "minisblack"
        tifffile.imwrite(path, array, photometric=photometric, description=text, metadata=None)
        return
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text(_CLASS_NAMES_KEY, text)
    image = Image.fromarray(array)
    if palette is not None and array.ndim == 2 and array.dtype == np.uint8:
        colours = np.zeros((256, 3), np.uint8)
        colours[: len(palette)] = palette[:256]
        image.putpalette(colours.ravel().tolist())  # reason: on an "L" image this makes it "P", values kept
    image.save(path, format="PNG", pnginfo=info)


def read_2d_class_names(path: str | PathLike) -> dict[int, str] | None:
    """The class names :func:`~braunet.io.write_labels` stored in a PNG or TIFF, if any."""
    path = Path(path)
    try:
        with quiet_libraries():
            if TIFF.matches(path):
                with tifffile.TiffFile(path) as tiff:
                    text = tiff.pages[0].description
            else:
                with Image.open(path) as image:
                    text = image.info.get(_CLASS_NAMES_KEY)
    except _HEADER_ERRORS as error:
        raise InputError(f"{path}: unreadable image ({first_line(error)})") from error
    try:
        content = json.loads(text) if text else None
    except ValueError:  # reason: descriptions written by other tools are free text
        return None
    if isinstance(content, dict) and _CLASS_NAMES_KEY in content:
        return {int(k): str(v) for k, v in content[_CLASS_NAMES_KEY].items()}
    return None
