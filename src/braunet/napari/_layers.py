"""Layer-data tuples for images and label maps: geometry, class names, colours, CT contrast.

The reader, the sample data and the widgets build their layers here, so an image and every layer
derived from it (labels, confidence, routing overlays) share one scale/translate and one
:class:`~braunet.napari._geometry.LayerGeometry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from braunet.io import Volume
from braunet.io.colour_tables import resolve_colours
from braunet.napari._geometry import METADATA_KEY, LayerGeometry, layer_from_source, volume_to_layer

__all__ = [
    "CLASS_NAMES_KEY",
    "class_names_of",
    "image_layer",
    "label_colormap",
    "label_features",
    "labels_layer",
    "looks_like_ct",
]

CLASS_NAMES_KEY = "braunet_class_names"
DEFAULT_CT_WINDOW = "abdomen"


def looks_like_ct(volume: Volume) -> bool:
    """CT modality, or a 3-D volume whose values span air to soft tissue in HU."""
    if volume.is_2d:
        return False
    if volume.modality.upper() == "CT":
        return True
    array = np.asarray(volume.array)
    return bool(array.dtype.kind in "iuf" and array.min() <= -500 and array.max() >= 100)


def label_colormap(class_names: Sequence[str], class_colors: Sequence[str] = ()) -> dict:
    """napari ``colormap`` dict {label: colour}: background and unknown labels transparent; colours
    by :func:`braunet.io.colour_tables.resolve_colours`, as in the files braunet writes."""
    colors = resolve_colours(class_names, class_colors)
    mapping: dict[Any, Any] = {None: "transparent", 0: "transparent"}
    mapping.update({value: colors[value] for value in range(1, len(class_names))})
    return mapping


def label_features(class_names: Sequence[str]) -> dict[str, list]:
    """napari Labels ``features``: one row per label value, so the status bar names the class."""
    return {"index": list(range(len(class_names))), "name": list(class_names)}


def class_names_of(metadata: dict | None, features: Any = None) -> list[str] | None:
    """Class names of a labels layer: from our metadata, else from a ``name`` feature column."""
    names = (metadata or {}).get(CLASS_NAMES_KEY)
    if names:
        return list(names)
    if features is not None and "name" in features:
        column = list(features["name"])
        index = list(features["index"]) if "index" in features else list(range(len(column)))
        if index == list(range(len(column))):
            return [str(n) for n in column]
    return None


def image_layer(volume: Volume, name: str, window: str | None = None) -> tuple[Any, dict, str]:
    """(data, kwargs, "image") for a Volume; CT gets a grey colormap and a window as contrast limits."""
    from braunet.infer import get_window

    data, geometry = volume_to_layer(volume)
    kwargs: dict[str, Any] = {"name": name, **geometry.layer_kwargs()}
    if volume.is_2d:
        kwargs["rgb"] = data.ndim == 3
    else:
        kwargs["colormap"] = "gray"
        if window or looks_like_ct(volume):
            kwargs["contrast_limits"] = get_window(window or DEFAULT_CT_WINDOW).limits
    return data, kwargs, "image"


def labels_layer(
    labels_on_layer_grid: np.ndarray,
    geometry: LayerGeometry,
    class_names: Sequence[str],
    name: str,
    class_colors: Sequence[str] = (),
    *,
    opacity: float = 0.5,
) -> tuple[Any, dict, str]:
    """(data, kwargs, "labels") for labels already on the layer grid (see ``layer_from_source``)."""
    kwargs = {
        "name": name,
        "scale": geometry.scale,
        "translate": geometry.translate,
        "axis_labels": geometry.axis_labels,
        "metadata": {METADATA_KEY: geometry, CLASS_NAMES_KEY: list(class_names)},
        "colormap": label_colormap(class_names, class_colors),
        "features": label_features(class_names),
        "opacity": opacity,
    }
    return labels_on_layer_grid, kwargs, "labels"


def labels_layer_from_source(labels: np.ndarray, geometry: LayerGeometry, class_names: Sequence[str], name: str,
                             class_colors: Sequence[str] = ()) -> tuple[Any, dict, str]:  # fmt: skip
    """Like :func:`labels_layer` for a label map on the source file's voxel grid."""
    return labels_layer(layer_from_source(labels, geometry), geometry, class_names, name, class_colors)
