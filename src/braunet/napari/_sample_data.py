"""npe2 sample data: each sample opens as an image layer plus its reference labels on the same grid.

The files come from :mod:`braunet.samples` (pinned public sources, cached; ``BRAUNET_DATA_DIR`` for
offline use). The colonoscopy frame is CVC-ClinicDB, for non-commercial research/education only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["colonoscopy", "ct_abdomen", "dermoscopy", "sample_layers"]


def sample_layers(key: str) -> list[tuple[Any, dict, str]]:
    """[image, labels] layer-data tuples of the sample ``key`` (see :func:`braunet.samples.list_samples`)."""
    from braunet.napari._layers import image_layer, labels_layer_from_source
    from braunet.samples import load_sample

    loaded = load_sample(key)
    sample = loaded.sample
    name = {"ct_abdomen": "CT abdomen", "dermoscopy": "ISIC_0000198", "colonoscopy": "CVC-ClinicDB 139"}[key]
    image = image_layer(loaded.image, name)
    geometry = image[1]["metadata"]["braunet"]
    labels = labels_layer_from_source(loaded.labels, geometry, sample.class_names, f"{name} reference labels",
                                      sample.class_colors)  # fmt: skip
    image[1]["metadata"]["braunet_sample"] = {"key": key, "licence": sample.licence, "citation": sample.citation}
    return [image, labels]


def ct_abdomen() -> list[tuple[Any, dict, str]]:
    return sample_layers("ct_abdomen")


def dermoscopy() -> list[tuple[Any, dict, str]]:
    return sample_layers("dermoscopy")


def colonoscopy() -> list[tuple[Any, dict, str]]:
    return sample_layers("colonoscopy")
