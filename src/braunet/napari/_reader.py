"""npe2 reader: NIfTI files, DICOM series folders and 2-D images through :func:`braunet.io.read_image`.

A file that :func:`braunet.io.write_labels` wrote (it carries class names) opens as a Labels layer,
and so does any other label volume: integer voxels, none negative, with at most
``MAX_LABEL_VALUES`` distinct values, or a file named like ``*_labels*`` / ``*seg*`` whose voxels
are non-negative whole numbers (a reference segmentation shown as a grey image is useless).
Everything else opens as an Image layer. Geometry: see :mod:`braunet.napari._geometry`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_LABEL_VALUES", "looks_like_labels", "napari_get_reader", "read_layers"]

MAX_LABEL_VALUES = 64  # distinct values a label volume may hold (TotalSegmentator v2 has 117: named files pass)
_LABEL_NAME = re.compile(r"(_labels?\b|_labels?_|seg)", re.IGNORECASE)


def _accepts(path: Path) -> bool:
    from braunet.io import format_of  # reason: the suffix table is the one in braunet.io (napari.yaml mirrors it)

    if path.is_dir():  # a DICOM series folder: at least one file that is not hidden
        try:
            return any(p.is_file() and not p.name.startswith(".") for p in path.iterdir())
        except OSError:
            return False
    return format_of(path) is not None


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """Return :func:`read_layers` if every path looks readable, else None (never raises)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    try:
        if paths and all(_accepts(Path(p)) for p in paths):
            return read_layers
    except (OSError, TypeError, ValueError):
        return None
    return None


def read_layers(path: str | list[str]) -> list[tuple[Any, dict, str]]:
    """Read each path into one layer-data tuple.

    Raises:
        braunet.errors.InputError: ``"PATH: problem"`` (napari shows it as a notification).
    """
    from braunet.io import file_stem, read_class_names, read_image
    from braunet.napari._geometry import volume_to_layer
    from braunet.napari._layers import image_layer, labels_layer

    layers = []
    for item in [path] if isinstance(path, (str, os.PathLike)) else path:
        item = Path(item)
        name = file_stem(item)
        volume = read_image(item)
        names = None if item.is_dir() else read_class_names(item)
        if not names and looks_like_labels(item, volume):
            top = int(np.asarray(volume.array).max(initial=0))
            names = {0: "background", **{value: f"class {value}" for value in range(1, top + 1)}}
        if names:
            data, geometry = volume_to_layer(volume)
            class_names = [names.get(value, f"class {value}") for value in range(max(names) + 1)]
            data = np.rint(data) if data.dtype.kind == "f" else data
            layers.append(labels_layer(data.astype(_label_dtype(data), copy=False), geometry, class_names, name))
        else:
            layers.append(image_layer(volume, name))
    return layers


def looks_like_labels(path: Path, volume: Any) -> bool:
    """A 3-D label map, not an image: see the module docstring for the rule."""
    from braunet.io import file_stem

    if volume.is_2d:
        return False
    array = np.asarray(volume.array)
    if array.size == 0 or array.dtype.kind not in "iuf":
        return False
    low, high = array.min(), array.max()
    if low < 0 or high > 65535:
        return False
    if array.dtype.kind in "iu":
        # reason: bincount is linear in voxels; np.unique would sort them
        if high < 4096 and np.count_nonzero(np.bincount(array.ravel().astype(np.intp))) <= MAX_LABEL_VALUES:
            return True
        return bool(_LABEL_NAME.search(file_stem(path)))
    return bool(_LABEL_NAME.search(file_stem(path))) and bool(np.all(array == np.rint(array)))


def _label_dtype(data: Any) -> Any:
    return np.uint8 if data.max(initial=0) < 256 else np.uint16
