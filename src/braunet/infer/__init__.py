"""Inference: preprocessing recipes, CT windows, devices, slice views, the slice runner and the engine.

:func:`predict` segments a volume or a 2-D image with a model and its card; under it,
:class:`SliceRunner` runs any 2-D network over a stack of slices (``braunet.infer.slices``).
The example uses a synthetic CT so that it runs anywhere (a bundled model, CPU, about a second);
with a file, ``volume = read_image("ct.nii.gz")``.

Examples::

    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from braunet.infer import predict
    >>> from braunet.io import Volume, read_image, write_labels
    >>> from braunet.zoo import load_model
    >>> model, card = load_model("ct-abdomen-8", device="cpu")
    >>> hu = np.full((64, 64, 3), -1000, np.int16)  # (I, J, K) air around a block of soft tissue
    >>> hu[16:48, 16:48] = 40
    >>> volume = Volume(hu, np.diag([2.0, 2.0, 2.0, 1.0]), None, "CT", False)  # 2 mm voxels, RAS+
    >>> prediction = predict(model, card, volume)  # labels on the exact input grid
    >>> prediction.labels.shape, prediction.labels.dtype
    ((64, 64, 3), dtype('uint8'))
    >>> path = Path(tempfile.mkdtemp()) / "ct_labels.nii.gz"
    >>> write_labels(prediction.labels, volume, path, class_names=dict(enumerate(card.class_names))) == path
    True
"""

from braunet.infer.device import PRECISION_CHOICES, amp_dtype, resolve_device, resolve_precision
from braunet.infer.engine import MIN_SIZE, Prediction, predict, predict_image, predict_volume
from braunet.infer.preprocess import (
    ISIC_RGB,
    SYNAPSE_CT,
    Recipe,
    official_preprocessing,
    parse_preprocessing,
    preprocess_slices,
    resize_labels,
    restore_logits,
)
from braunet.infer.slices import SliceRunner, decode_labels
from braunet.infer.views import convert_view, convert_view_points, from_view, to_view, view_spacing
from braunet.infer.windows import WINDOWS, Window, apply_window, get_window, list_windows

__all__ = [
    "ISIC_RGB",
    "MIN_SIZE",
    "PRECISION_CHOICES",
    "SYNAPSE_CT",
    "WINDOWS",
    "Prediction",
    "Recipe",
    "SliceRunner",
    "Window",
    "amp_dtype",
    "apply_window",
    "convert_view",
    "convert_view_points",
    "decode_labels",
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
    "resolve_precision",
    "restore_logits",
    "to_view",
    "view_spacing",
]
