"""npe2 sample data: each sample opens as an image layer plus its reference labels on the same grid.

The files come from :mod:`braunet.samples` (pinned public sources, cached; ``BRAUNET_DATA_DIR`` for
offline use). The colonoscopy frame is CVC-ClinicDB, for non-commercial research/education only.
The CT opens on its slice with the most labelled voxels (not the middle slice, which is pelvis),
and a failure says what to do in its first line: napari's notification shows one line until expanded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from braunet.errors import InputError

__all__ = ["FOCUS_KEY", "colonoscopy", "ct_abdomen", "dermoscopy", "sample_layers"]

FOCUS_KEY = "braunet_focus_slice"  # labels metadata of a 3-D sample: the slice to show first (layer axis 0)


def sample_layers(key: str) -> list[tuple[Any, dict, str]]:
    """[image, labels] layer-data tuples of the sample ``key`` (see :func:`braunet.samples.list_samples`)."""
    from braunet.napari._layers import image_layer, labels_layer_from_source
    from braunet.samples import load_sample

    try:
        loaded = load_sample(key)
    except InputError as error:  # reason: the hint first, the details (URL, reason) after the line break
        raise InputError(f"Offline? Set BRAUNET_DATA_DIR.\n{key} sample: {error}") from None
    sample = loaded.sample
    name = {"ct_abdomen": "CT abdomen", "dermoscopy": "ISIC_0000198", "colonoscopy": "CVC-ClinicDB 139"}[key]
    image = image_layer(loaded.image, name)
    geometry = image[1]["metadata"]["braunet"]
    labels = labels_layer_from_source(loaded.labels, geometry, sample.class_names, f"{name} reference labels",
                                      sample.class_colors)  # fmt: skip
    image[1]["metadata"]["braunet_sample"] = {"key": key, "licence": sample.licence, "citation": sample.citation}
    if labels[0].ndim == 3:
        focus = int(np.argmax(np.count_nonzero(labels[0], axis=(1, 2))))
        labels[1]["metadata"][FOCUS_KEY] = focus
        _show_slice_when_added(focus)
    return [image, labels]


def _show_slice_when_added(index: int) -> None:
    """Move the current viewer to slice ``index`` once the sample's labels layer is added.

    reason: a sample function returns layer data, not a viewer state; napari adds the layers right
    after it returns, so a one-shot handler on the layer list sets the dims then.
    """
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        return
    layers = viewer.layers

    def on_inserted(event: Any) -> None:
        layer = event.value
        if layer.metadata.get(FOCUS_KEY) != index:
            return
        layers.events.inserted.disconnect(on_inserted)
        viewer.dims.set_point(0, layer.data_to_world((index, 0, 0))[0])

    layers.events.inserted.connect(on_inserted)


def ct_abdomen() -> list[tuple[Any, dict, str]]:
    return sample_layers("ct_abdomen")


def dermoscopy() -> list[tuple[Any, dict, str]]:
    return sample_layers("dermoscopy")


def colonoscopy() -> list[tuple[Any, dict, str]]:
    return sample_layers("colonoscopy")
