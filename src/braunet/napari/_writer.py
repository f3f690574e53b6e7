"""npe2 writer: a Labels layer -> NIfTI on the source image's exact voxel grid and affine, or PNG/TIFF for 2-D.

The layer's :class:`~braunet.napari._geometry.LayerGeometry` (``metadata["braunet"]``, set by our
reader, sample data and widgets) maps the displayed array back to the file's voxel order;
:func:`braunet.io.write_labels` keeps the source affine and qform/sform codes and writes atomically.
Class names go into the file when the layer has them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_labels_layer"]


def write_labels_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer. Returns the written path.

    Raises:
        braunet.errors.OutputError / InputError: wrong suffix for the image kind, unwritable folder,
            the source image as target, non-integer labels.
    """
    import numpy as np

    from braunet.io import write_labels
    from braunet.napari._geometry import geometry_from_layer_state, layer_to_source
    from braunet.napari._layers import class_names_of

    data = np.asarray(data)
    scale = meta.get("scale") or (1.0,) * data.ndim
    translate = meta.get("translate") or (0.0,) * data.ndim
    geometry = geometry_from_layer_state(data, tuple(scale), tuple(translate), meta.get("metadata"))
    names = class_names_of(meta.get("metadata"), meta.get("features"))
    class_names = dict(enumerate(names)) if names else None
    written = write_labels(layer_to_source(data, geometry), geometry.like, path, class_names=class_names)
    return [str(written)]
