"""Anchor sets: a few training slices stored beside a model, replayed while fine-tuning.

Replaying slices of the original training data in every fine-tuning batch keeps the network from
drifting away from what it already segments well (catastrophic forgetting, cellpose#522). The set
is small (a few slices, compressed, well under 1 MB) and stored as ``anchors.npz`` in the model
folder: arrays ``image_<i>`` (CT HU (H, W) int16 or RGB (H, W, 3) uint8), ``label_<i>`` (H, W)
uint8 and ``spacing_<i>`` (2,) float64 pixel size in mm (absent in older sets: 1 mm), read without
pickle. Fine-tuning takes the set from the model's own folder
(:attr:`braunet.zoo.ModelSource.anchors`), never by looking a name up.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from braunet._atomic import atomic_path
from braunet.errors import CheckpointError
from braunet.train.slices import SliceSet
from braunet.zoo import ANCHORS_FILE

__all__ = ["ANCHORS_FILE", "load_anchors", "save_anchors"]


def save_anchors(folder: str | os.PathLike, slices: SliceSet) -> Path:
    """Write ``folder/anchors.npz`` from ``slices`` (images as int16 HU or uint8 RGB)."""
    arrays = {}
    for i, (image, label) in enumerate(zip(slices.images, slices.labels, strict=True)):
        image = np.asarray(image)
        if image.ndim == 2:
            arrays[f"image_{i}"] = np.clip(np.rint(image), -32768, 32767).astype(np.int16)
        else:
            arrays[f"image_{i}"] = np.clip(image, 0, 255).astype(np.uint8)
        arrays[f"label_{i}"] = np.asarray(label).astype(np.uint8)
        arrays[f"spacing_{i}"] = np.asarray(slices.spacing[i], dtype=np.float64)
    path = Path(folder) / ANCHORS_FILE
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_anchors(path: str | os.PathLike) -> SliceSet:
    """Read an anchor set from ``anchors.npz`` or from a model folder holding one.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt (not a zip, bad compressed
            data), holds pickled objects, lacks an ``image_<i>``/``label_<i>`` pair, or holds
            arrays that are not an image and its label map; one line naming the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ANCHORS_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            count = sum(1 for key in data.files if key.startswith("image_"))
            images = [data[f"image_{i}"] for i in range(count)]
            # reason: integer ids of any width become int64; anything else reaches from_arrays and is refused there
            labels = [_as_int64(data[f"label_{i}"]) for i in range(count)]
            spacing = [tuple(data[f"spacing_{i}"]) if f"spacing_{i}" in data.files else (1.0, 1.0) for i in range(count)]
        if not count:
            raise ValueError("no image_<i> arrays")
        return SliceSet.from_arrays(images, labels, group="anchors", spacing=spacing)
    # reason: a damaged zip fails in zipfile (BadZipFile), zlib or numpy's header parser, each with its own type
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        if isinstance(error, FileNotFoundError):
            raise CheckpointError(f"{path}: no such anchor set") from None
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: unreadable anchor set ({detail})") from None


def _as_int64(label: np.ndarray) -> np.ndarray:
    return label.astype(np.int64) if np.issubdtype(label.dtype, np.integer) else label
