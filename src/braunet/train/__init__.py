"""Numerical training primitives: losses (PyTorch), metrics and augmentation (NumPy/SciPy).

``braunet.train.metrics`` and ``braunet.train.augment`` do not import torch; the loss names are
re-exported lazily, so ``from braunet.train import dice`` stays torch-free too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from braunet.train.augment import (
    official_synapse_augment,
    random_affine,
    random_flip,
    random_rot90_flip,
    random_rotate,
)
from braunet.train.metrics import (
    dice,
    hd95,
    iou,
    official_metric_percase,
    per_class_metrics,
    summarize,
)

if TYPE_CHECKING:
    from braunet.train.losses import (
        BinaryDiceBCELoss,
        DiceCELoss,
        DiceLoss,
        SoftDiceLoss,
        make_loss,
    )

_LOSSES = ("BinaryDiceBCELoss", "DiceCELoss", "DiceLoss", "SoftDiceLoss", "make_loss")

__all__ = [
    "BinaryDiceBCELoss",
    "DiceCELoss",
    "DiceLoss",
    "SoftDiceLoss",
    "dice",
    "hd95",
    "iou",
    "make_loss",
    "official_metric_percase",
    "official_synapse_augment",
    "per_class_metrics",
    "random_affine",
    "random_flip",
    "random_rot90_flip",
    "random_rotate",
    "summarize",
]


def __getattr__(name: str) -> Any:
    # reason: importing torch costs seconds; evaluation and augmentation do not need it
    if name in _LOSSES:
        from braunet.train import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'braunet.train' has no attribute {name!r}")
