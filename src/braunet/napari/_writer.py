"""npe2 writers of a Labels layer: NIfTI or palette PNG/TIFF on the source grid, or a DICOM SEG.

napari picks the writer from the file name's suffix (two writer contributions in ``napari.yaml``,
each listing its suffixes from :mod:`braunet.io.formats`):

* :func:`write_labels_layer` (``.nii``/``.nii.gz`` for volumes, ``.png``/``.tif``/``.tiff`` for 2-D
  images): :func:`braunet.io.write_labels` on the source image's exact voxel grid and affine. A 2-D
  layer with class names is saved as a palette PNG: pixel values are the class indices, the palette
  holds the class colours (as ``braunet predict`` writes it).
* :func:`write_dicom_seg_layer` (``.dcm``): :func:`braunet.io.dicom_seg.write_dicom_seg`, a DICOM
  Segmentation referencing the DICOM series the layer's image was read from; one segment per class
  present, named after it. Its segments say how they were made: the model's labels as predicted
  (AUTOMATIC), corrected in napari (SEMIAUTOMATIC), or labels no model wrote (MANUAL).

The layer's :class:`~braunet.napari._geometry.LayerGeometry` (``metadata["braunet"]``, set by our
reader, sample data and widgets) maps the displayed array back to the file's voxel order. Class
names and colours come from the layer (:mod:`braunet.napari._layers`). Every refusal is one
:class:`~braunet.errors.OutputError` naming the layer and the problem, and nothing is written: an
OutputError, whatever the cause, because napari takes a ValueError (and so an InputError) from a
writer for "this writer does not apply" and only warns that the plugin is no valid writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from braunet.errors import BraunetError, InputError, OutputError

if TYPE_CHECKING:
    from braunet.io.dicom_seg import AlgorithmType
    from braunet.napari._geometry import LayerGeometry

__all__ = ["write_dicom_seg_layer", "write_labels_layer"]


def write_labels_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: NIfTI, palette PNG or TIFF. Returns the written path.

    Raises:
        braunet.errors.OutputError: wrong suffix for the image kind, unwritable folder, the source
            image as target, non-integer labels (the message starts with the layer's name).
    """
    from braunet.io import write_labels

    with _about_layer(meta):
        labels, geometry, names = _layer_labels(data, meta)
        class_names = dict(enumerate(names)) if names else None
        colours = _colours(meta, names) if names else None
        return [str(write_labels(labels, geometry.like, path, class_names=class_names, colours=colours))]


def write_dicom_seg_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: a DICOM Segmentation of the layer's source DICOM series.

    The layer must lie on an image our reader opened from a DICOM series folder (the folder must
    still be there: the SEG copies its patient and study and references each of its instances).

    Raises:
        braunet.errors.OutputError: a 2-D layer, a layer not on a DICOM series, labels without a
            class name, no labelled voxel, an unwritable target (the message starts with the layer's name).
    """
    from braunet.io.dicom_seg import write_dicom_seg

    with _about_layer(meta):
        labels, geometry, names = _layer_labels(data, meta)
        source = geometry.like.source
        if geometry.is_2d:
            raise InputError("a DICOM SEG is made for a 3-D layer on a DICOM series; save a 2-D layer as .png")
        if source is None or not Path(source).is_dir():
            came_from = f"came from {source}" if source is not None else "has no source file"
            raise InputError(
                f"a DICOM SEG needs labels on an image opened from a DICOM series folder; this layer's image "
                f"{came_from} (save it as .nii.gz)"
            )
        algorithm_type, model_name, model_version = _provenance(meta.get("metadata") or {}, np.asarray(data))
        written = write_dicom_seg(labels, source, names or {}, _colours(meta, names) if names else None, path,
                                  model_name=model_name, model_version=model_version,
                                  algorithm_type=algorithm_type)  # fmt: skip
        return [str(written)]


@contextmanager
def _about_layer(meta: dict) -> Iterator[None]:
    """A BraunetError raised inside is raised again as an OutputError ``"layer 'NAME': message"``."""
    try:
        yield
    except BraunetError as error:
        raise OutputError(f"layer {str(meta.get('name') or 'labels')!r}: {error}") from error


def _layer_labels(data: Any, meta: dict) -> tuple[np.ndarray, LayerGeometry, list[str] | None]:
    """Layer data ``(K, J, I)`` or ``(H, W)`` -> (labels on the source grid ``(I, J, K)`` or ``(H, W)``,
    the layer's geometry, its class names or None)."""
    from braunet.napari._geometry import geometry_from_layer_state, layer_to_source
    from braunet.napari._layers import class_names_of

    data = np.asarray(data)
    scale = meta.get("scale") or (1.0,) * data.ndim
    translate = meta.get("translate") or (0.0,) * data.ndim
    geometry = geometry_from_layer_state(data, tuple(scale), tuple(translate), meta.get("metadata"))
    try:
        labels = layer_to_source(data, geometry)
    except ValueError as error:  # reason: data reshaped since the layer was made on its image's grid
        raise InputError(str(error)) from error
    return labels, geometry, class_names_of(meta.get("metadata"), meta.get("features"))


def _colours(meta: dict, names: list[str]) -> list[str]:
    from braunet.napari._layers import class_colours_of

    return class_colours_of(meta.get("metadata"), names)


def _provenance(metadata: dict, data: np.ndarray) -> tuple[AlgorithmType, str, str | int]:
    """(SEG algorithm type, model name, model version) of a layer's labels.

    A layer no model wrote (painted, or opened from a file) is MANUAL: nothing records a model. One
    a model wrote is AUTOMATIC, or SEMIAUTOMATIC once any slice differs from what the model wrote.
    """
    from braunet.napari._layers import EDITS_KEY, MODEL_KEY, EditRecord

    model = metadata.get(MODEL_KEY)
    if not model:
        return "MANUAL", "", ""
    record = metadata.get(EDITS_KEY)
    edited = isinstance(record, EditRecord) and (record.baseline.shape != data.shape or bool(record.edited_slices(data)))
    return ("SEMIAUTOMATIC" if edited else "AUTOMATIC"), str(model["name"]), model.get("version", "")
