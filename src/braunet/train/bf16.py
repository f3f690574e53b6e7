"""Is bfloat16 good enough for this model? Labels of bf16 autocast against float32, on labelled cases.

``--precision auto`` uses bf16 only for a model whose card records a passing check
(:func:`braunet.infer.device.bf16_validated`): at least 99.5 % of the voxels get the same label as in
float32, and no class's Dice against the reference labels moves by more than 0.005. This module
measures both on (image, label) file pairs through the inference engine, the same path
``braunet predict`` takes, and :func:`write_bf16_record` puts the result into a model folder's card
(``card.extra["bf16_validated"]``); ``scripts/validate_bf16.py`` runs it on the shared data.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from braunet.infer.device import BF16_MAX_DICE_CHANGE, BF16_MIN_AGREEMENT
from braunet.infer.slices import Network
from braunet.model import ModelCard

__all__ = ["measure_bf16", "write_bf16_record"]


def _dice_counts(pred: np.ndarray, truth: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """(len(ids), 2) int64: per class the overlap and the summed sizes, to pool over cases."""
    return np.array([[np.count_nonzero((pred == c) & (truth == c)),
                      np.count_nonzero(pred == c) + np.count_nonzero(truth == c)] for c in ids], np.int64)  # fmt: skip


def measure_bf16(
    model: Network, card: ModelCard, pairs: Sequence[tuple[Any, ...]], *, split: str, device: str = "cpu"
) -> dict[str, Any]:
    """Predict each (image, label) pair in fp32 and in bf16 -> the record for ``card.extra["bf16_validated"]``.

    A pair may carry a third item, the slices to score (indices along the volume's last array axis,
    which must be its axial one, as in a RAS NIfTI): a validation slab of a volume partly trained on.

    ``label_agreement``: the share of all voxels (pooled over the cases) with equal labels;
    ``max_dice_change``: the largest per-class |Dice(bf16) - Dice(fp32)|, each Dice pooled over the
    cases against the reference labels; ``dice_change`` per class name; ``passed`` applies the bounds.
    """
    from braunet.infer import predict
    from braunet.train.evaluate import read_pair

    classes = card.config.num_classes
    ids = [1] if classes == 1 else list(range(1, classes))
    same = total = 0
    counts = {"fp32": np.zeros((len(ids), 2), np.int64), "bf16": np.zeros((len(ids), 2), np.int64)}
    for image_path, label_path, *rest in pairs:
        volume, truth = read_pair(image_path, label_path, classes)
        slices = list(rest[0]) if rest else None
        labels = {p: predict(model, card, volume, device=device, precision=p, slices=slices).labels for p in counts}
        if slices is not None:
            labels = {p: got[..., slices] for p, got in labels.items()}
            truth = truth[..., slices]
        same += int(np.count_nonzero(labels["fp32"] == labels["bf16"]))
        total += labels["fp32"].size
        for p in counts:
            counts[p] += _dice_counts(labels[p], truth, ids)

    def dice(c: np.ndarray) -> np.ndarray:  # a class absent from both counts as Dice 1
        return np.where(c[:, 1] > 0, 2 * c[:, 0] / np.maximum(c[:, 1], 1), 1.0)

    change = np.abs(dice(counts["bf16"]) - dice(counts["fp32"]))
    agreement = same / max(total, 1)
    return {
        "label_agreement": round(agreement, 6),
        "max_dice_change": round(float(change.max(initial=0.0)), 6),
        "dice_change": {card.class_names[c]: round(float(d), 6) for c, d in zip(ids, change, strict=True)},
        "passed": bool(agreement >= BF16_MIN_AGREEMENT and change.max(initial=0.0) <= BF16_MAX_DICE_CHANGE),
        "split": split,
        "cases": len(pairs),
        "date": datetime.date.today().isoformat(),
    }


def write_bf16_record(folder: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Put ``record`` into ``folder/card.json`` as ``extra["bf16_validated"]`` (atomically); return the card path."""
    from braunet.model.checkpoint import read_card, write_card

    card = read_card(folder)
    card.extra["bf16_validated"] = record
    return write_card(card, folder)
