"""Inference: preprocessing recipes, CT windows, devices and the slice-wise engine.

Examples::

    from braunet.infer import predict
    from braunet.io import read_image, write_labels
    from braunet.zoo import load_model

    model, card = load_model("ct-abdomen-8", device="auto")
    volume = read_image("ct.nii.gz")
    prediction = predict(model, card, volume)              # labels on the exact input grid
    write_labels(prediction.labels, volume, "ct_labels.nii.gz", card.class_names)
"""

from braunet.infer.device import amp_dtype, resolve_device
from braunet.infer.engine import MIN_SIZE, Prediction, predict, predict_image, predict_volume
from braunet.infer.preprocess import (
    ISIC_RGB,
    SYNAPSE_CT,
    Recipe,
    official_preprocessing,
    parse_preprocessing,
    preprocess_slices,
    resize_labels,
)
from braunet.infer.views import from_view, to_view
from braunet.infer.windows import WINDOWS, Window, apply_window, get_window, list_windows

__all__ = [
    "ISIC_RGB",
    "MIN_SIZE",
    "SYNAPSE_CT",
    "WINDOWS",
    "Prediction",
    "Recipe",
    "Window",
    "amp_dtype",
    "apply_window",
    "from_view",
    "get_window",
    "list_windows",
    "official_preprocessing",
    "parse_preprocessing",
    "predict",
    "predict_image",
    "predict_volume",
    "preprocess_slices",
    "resize_labels",
    "resolve_device",
    "to_view",
]
