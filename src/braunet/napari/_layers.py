"""Layer-data tuples for images and label maps: geometry, class names, colours, CT contrast.

The reader, the sample data and the widgets build their layers here, so an image and every layer
derived from it (labels, confidence, routing overlays) share one scale/translate and one
:class:`~braunet.napari._geometry.LayerGeometry`.

Each labels layer the widgets work on carries one :class:`EditRecord` (``metadata[EDITS_KEY]``):
the labels the model last wrote, to tell the user's corrections from predictions. The Segment
widget updates it when it writes (and keeps corrected slices unless asked to overwrite them),
the Fine-tune widget reads it to list and select the corrected slices.

A labels layer also carries its class colours (``metadata[CLASS_COLOURS_KEY]``, one ``"#rrggbb"``
per class, by the one colour rule) and, once a model wrote it, the model's name and version
(``metadata[MODEL_KEY]``): what the writers put into a palette PNG and a DICOM SEG, whatever the
Legend widget currently hides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from braunet.io import Volume
from braunet.io.colour_tables import resolve_colours
from braunet.napari._geometry import METADATA_KEY, LayerGeometry, layer_from_source, volume_to_layer

__all__ = [
    "CLASS_COLOURS_KEY",
    "CLASS_NAMES_KEY",
    "EDITS_KEY",
    "MODEL_KEY",
    "EditRecord",
    "edited_slices",
    "class_colours_of",
    "class_names_of",
    "image_layer",
    "label_colormap",
    "label_features",
    "labels_layer",
    "looks_like_ct",
]

CLASS_NAMES_KEY = "braunet_class_names"
CLASS_COLOURS_KEY = "braunet_class_colours"  # labels metadata: "#rrggbb" per class value
MODEL_KEY = "braunet_model"  # labels metadata: {"name": ..., "version": ...} of the model that last wrote it
EDITS_KEY = "braunet_edits"  # labels metadata: the layer's EditRecord
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


def class_colours_of(metadata: dict | None, class_names: Sequence[str]) -> list[str]:
    """One ``"#rrggbb"`` per class of a labels layer: the colours stored with it when they cover its
    classes, else :func:`braunet.io.colour_tables.resolve_colours` of its class names."""
    return resolve_colours(class_names, (metadata or {}).get(CLASS_COLOURS_KEY))


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
        "metadata": {METADATA_KEY: geometry, CLASS_NAMES_KEY: list(class_names),
                     CLASS_COLOURS_KEY: resolve_colours(class_names, class_colors)},
        "colormap": label_colormap(class_names, class_colors),
        "features": label_features(class_names),
        "opacity": opacity,
    }
    return labels_on_layer_grid, kwargs, "labels"


def labels_layer_from_source(labels: np.ndarray, geometry: LayerGeometry, class_names: Sequence[str], name: str,
                             class_colors: Sequence[str] = ()) -> tuple[Any, dict, str]:  # fmt: skip
    """Like :func:`labels_layer` for a label map on the source file's voxel grid."""
    return labels_layer(layer_from_source(labels, geometry), geometry, class_names, name, class_colors)


class EditRecord:
    """The user's corrections in one labels layer: what differs from what the model last wrote there.

    ``baseline`` (the layer's shape) holds, per slice along axis 0 (the whole image for 2-D), the
    labels the model wrote last; a slice is *edited* where the layer's data differ from it. So a
    paint, fill, data assignment or undo is seen without listening to each of them, and undoing
    a correction un-edits its slice. ``excluded`` are edited slices the user left out of training;
    every other edited slice is selected, including those edited before the Fine-tune widget opened.
    ``model`` and ``image`` name what last wrote predictions here (None for a layer nobody predicted).
    """

    def __init__(self, baseline: np.ndarray, model: str | None = None, image: str | None = None) -> None:
        self.baseline = np.array(baseline, copy=True)
        self.excluded: set[int] = set()
        self.model, self.image = model, image

    @classmethod
    def of(cls, layer: Any) -> EditRecord:
        """The layer's record; a layer without one (or whose data changed shape) starts one now,
        with its current labels as the baseline: edits count from this moment."""
        record = layer.metadata.get(EDITS_KEY)
        if not isinstance(record, cls) or record.baseline.shape != np.shape(layer.data):
            record = layer.metadata[EDITS_KEY] = cls(np.asarray(layer.data))
        return record

    def edited_slices(self, data: Any, among: Sequence[int] | None = None) -> list[int]:
        """Slices (axis 0; ``[0]`` for a 2-D layer) where ``data`` differ from the baseline, ascending.

        ``among``: look only at these slices of a 3-D layer (a "current slice" run compares one
        slice, not the whole volume, on the GUI thread); None looks at all of them.
        """
        data = np.asarray(data)
        if data.shape != self.baseline.shape:
            return []
        if data.ndim == 2:
            return [0] if np.any(data != self.baseline) else []
        if among is not None:
            return [k for k in sorted({int(k) for k in among}) if np.any(data[k] != self.baseline[k])]
        return np.flatnonzero(np.any(data != self.baseline, axis=tuple(range(1, data.ndim)))).tolist()

    def selected_slices(self, data: Any) -> list[int]:
        """Edited slices the user did not leave out of training."""
        return [k for k in self.edited_slices(data) if k not in self.excluded]

    def model_wrote(self, data: Any, slices: Sequence[int] | None, model: str, image: str) -> None:
        """The model just wrote ``slices`` (None: all) of ``data``: they are predictions again, not edits."""
        data = np.asarray(data)
        self.model, self.image = model, image
        if slices is not None and len(slices) == 0:
            return
        if slices is None or data.ndim == 2 or data.shape != self.baseline.shape:
            self.baseline = np.array(data, copy=True)
            self.excluded.clear()
        else:
            index = np.asarray(sorted(slices), dtype=np.intp)
            self.baseline[index] = data[index]
            self.excluded.difference_update(int(k) for k in index)


def edited_slices(layer: Any) -> list[int]:
    """Slices (axis 0; ``[0]`` for a 2-D layer) the user corrected in a labels layer (see :class:`EditRecord`)."""
    return EditRecord.of(layer).edited_slices(layer.data)
