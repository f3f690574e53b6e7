"""npe2 reader: NIfTI files, DICOM series folders and 2-D images through :func:`braunet.io.read_image`.

A file that :func:`braunet.io.write_labels` wrote (it carries class names) opens as a Labels layer;
everything else as an Image layer. Geometry: see :mod:`braunet.napari._geometry`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["napari_get_reader", "read_layers"]


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
        if names:
            data, geometry = volume_to_layer(volume)
            class_names = [names.get(value, f"class {value}") for value in range(max(names) + 1)]
            layers.append(labels_layer(data.astype(_label_dtype(data), copy=False), geometry, class_names, name))
        else:
            layers.append(image_layer(volume, name))
    return layers


def _label_dtype(data: Any) -> Any:
    import numpy as np

    return np.uint8 if data.max(initial=0) < 256 else np.uint16
