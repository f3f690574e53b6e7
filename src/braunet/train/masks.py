"""Masks and label maps as read from files -> class ids: the one decoding rule, per kind of source.

Two kinds of source need two binary rules, because their values mean different things:

* ``"image"`` - a 2-D mask image (PNG, JPEG, BMP, TIFF), grey or RGB(A), 8-bit. Such masks are
  drawn or exported as pictures: CVC-ClinicDB frames have anti-aliased edges (frame 1 has 7209
  pixels between 1 and 254, and "non-zero" would grow its polyp by 42 %), JPEG masks (Kvasir-SEG,
  ISIC 2016) carry compression noise around 0 and 255. So RGB(A) is averaged over R, G, B, and a
  binary mask whose maximum is above 1 is thresholded at the middle of the 8-bit range,
  ``value > 127``, as the datasets' own binarised masks are; a 0/1 mask uses ``value > 0``. A
  0/1 or 0/255 mask gives the same result under either rule, and on every raw and binarised mask
  of CVC-ClinicDB, Kvasir-SEG, ISIC 2016 and PH2 in the shared data this rule equals the datasets'
  ``> 127`` binarisation (tested).
* ``"label_map"`` - a label volume (NIfTI, DICOM) or a label map in memory. Its values are class
  ids, never anti-aliased, so for a binary model any non-zero value is foreground (``value > 0``):
  a 0/1 or 0/255 spleen label and a multi-organ map read as "organ or not" both work.

For models with two or more classes both kinds must hold integer class ids below ``num_classes``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from braunet.errors import InputError

__all__ = ["MASK_KINDS", "MaskKind", "mask_to_labels"]

MaskKind = Literal["image", "label_map"]
MASK_KINDS: tuple[str, ...] = ("image", "label_map")


def mask_to_labels(mask: np.ndarray, num_classes: int, source: str, *, kind: MaskKind) -> np.ndarray:
    """A mask or label map as read from a file -> int64 class ids of a ``num_classes`` model.

    Args:
        mask: ``kind="image"``: (H, W) or (H, W, 3|4) in 0..255; ``kind="label_map"``: any shape,
            e.g. a label volume (I, J, K).
        num_classes: 1 for a binary model (result 0/1), else the number of classes.
        source: named in error messages (a file path).
        kind: ``"image"`` or ``"label_map"``, which rule applies (see the module docstring).

    Returns:
        int64 class ids, shape (H, W) for an image, ``mask.shape`` for a label map.

    Raises:
        InputError: naming ``source``, for values that are not class ids of the model, a
            non-integer label map, or an image mask that is not 2-D or not 8-bit.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    mask = np.asarray(mask)
    if kind == "image":
        if mask.ndim == 3:
            mask = mask[..., :3].mean(axis=-1)  # reason: RGB(A) JPEG/PNG masks; alpha is not mask content
        if mask.ndim != 2:
            raise InputError(f"{source}: a mask must be 2-D (H, W), got shape {mask.shape}")
        if num_classes == 1:
            if mask.size and (mask.min() < 0 or mask.max() > 255):
                raise InputError(f"{source}: binary mask values must be in 0..255, got {mask.min()}..{mask.max()}")
            threshold = 0 if mask.max() <= 1 else 127
            return (mask > threshold).astype(np.int64)
    if not np.all(np.mod(mask, 1) == 0):
        raise InputError(f"{source}: label values must be integers")
    if num_classes == 1:  # a label map (an image mask returned above)
        return (mask > 0).astype(np.int64)
    labels = mask.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"{source}: label values {labels.min()}..{labels.max()} are not class ids of a model with "
            f"{num_classes} classes (0..{num_classes - 1})"
        )
    return labels
