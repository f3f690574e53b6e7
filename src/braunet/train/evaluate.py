"""Evaluation at the images' own resolution: per-class Dice and HD95 in mm, per case, then averaged.

A prediction is made slice by slice as at inference, by the same
:class:`~braunet.infer.slices.SliceRunner` (the card's preprocessing recipe, the network, the
class map resized back to the slice grid with nearest neighbour), in float32 on any device.
Slices of one volume are stacked back into a 3-D case and scored in 3-D with the voxel spacing
(slice distance included); every 2-D image is one case with its pixel spacing (1 mm per pixel
when the file gives none, so ``hd95_mm`` of photographs is in pixels). Metrics and their
empty-mask conventions are those of :mod:`braunet.train.metrics`; means are over cases first,
then over classes (the Synapse order).

The JSON of ``braunet evaluate --json`` is :meth:`Evaluation.to_json_dict`::

    {"mean_dice": ..., "mean_hd95_mm": ..., "per_class": {name: {"dice": ..., "hd95_mm": ...}}, "n": ...}

``n`` is the number of cases; ``null`` stands for an undefined HD95 (a class missed or invented in
every case, see the metrics module).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from braunet.errors import Cancelled, InputError
from braunet.infer.slices import SliceRunner
from braunet.model import BRAUNet, ModelCard
from braunet.train.metrics import per_class_metrics
from braunet.train.slices import SliceSet

__all__ = ["Evaluation", "evaluate_files", "evaluate_slices"]


def _nan_to_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@dataclass
class Evaluation:
    """Per-case and averaged metrics. ``per_class[name] = {"dice", "iou", "hd95_mm"}`` (means over cases)."""

    mean_dice: float
    mean_hd95_mm: float
    per_class: dict[str, dict[str, float]]
    n: int
    cases: list[dict] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        return {
            "mean_dice": _nan_to_none(self.mean_dice),
            "mean_hd95_mm": _nan_to_none(self.mean_hd95_mm),
            "per_class": {
                name: {"dice": _nan_to_none(v["dice"]), "hd95_mm": _nan_to_none(v["hd95_mm"])}
                for name, v in self.per_class.items()
            },
            "n": self.n,
        }


def _cases(slices: SliceSet) -> list[list[int]]:
    """Slice indices per case: consecutive slices of one volume group form one case; 2-D images are
    one case each."""
    cases: list[list[int]] = []
    for i in range(len(slices)):
        same = (
            cases
            and slices.depth_mm[i] is not None
            and slices.groups[cases[-1][-1]] == slices.groups[i]
            and np.asarray(slices.images[cases[-1][-1]]).shape == np.asarray(slices.images[i]).shape
        )
        if same:
            cases[-1].append(i)
        else:
            cases.append([i])
    return cases


def evaluate_slices(
    model: BRAUNet,
    card: ModelCard,
    slices: SliceSet,
    *,
    class_ids: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Evaluation:
    """Score ``model`` on labelled slices; see the module docstring.

    Args:
        class_ids: classes to score (default: every foreground class of the model, 1..K-1, or 1 for
            a binary model). Partially annotated slices are scored only on their annotated classes.
        progress: ``progress(done_cases, total_cases)``.
    """
    binary = model.config.num_classes == 1
    ids = list(class_ids) if class_ids is not None else ([1] if binary else list(range(1, model.config.num_classes)))
    runner = SliceRunner(model, card.recipe, model.config.img_size, model.config.num_classes, amp=False)
    cases = _cases(slices)
    per_case: list[dict[int, dict[str, float]]] = []
    case_records = []
    predicted: dict[int, np.ndarray] = {}  # slice index -> class map (H, W), for the cases predicted ahead
    for done, indices in enumerate(cases):
        if should_stop and should_stop():
            raise Cancelled("evaluation cancelled")
        if indices[0] not in predicted:
            predicted = _predict_ahead(runner, slices, cases[done:])
        pred = np.stack([predicted.pop(i) for i in indices]).astype(np.int64)
        truth = np.stack([slices.labels[i] for i in indices])
        rows, cols = slices.spacing[indices[0]]
        depth = slices.depth_mm[indices[0]]
        if depth is None:
            pred, truth, spacing = pred[0], truth[0], (rows, cols)
        else:
            spacing = (depth, rows, cols)  # (K, H, W) stacks: slice axis first
        known = slices.known[indices[0]]
        scored = [c for c in ids if known is None or c in known]
        metrics = per_class_metrics(pred, truth, scored, spacing)
        per_case.append(metrics)
        case_records.append({"case": slices.groups[indices[0]], "n_slices": len(indices), "metrics": metrics})
        if progress:
            progress(done + 1, len(cases))
    return _aggregate(card, ids, per_case, case_records)


def _predict_ahead(runner: SliceRunner, slices: SliceSet, cases: list[list[int]]) -> dict[int, np.ndarray]:
    """Class maps of ``cases[0]`` and of the next cases on the same grid that fit in its batch.

    reason: a set of 2-D images is one case per image; predicting them one by one would run the
    network on batches of one.
    """
    first = cases[0][0]
    shape, spacing = np.asarray(slices.images[first]).shape, slices.spacing[first]
    chosen = list(cases[0])
    for case in cases[1:]:
        same_grid = np.asarray(slices.images[case[0]]).shape == shape and slices.spacing[case[0]] == spacing
        if len(chosen) + len(case) > runner.batch_size or not same_grid:
            break
        chosen += case
    labels, _ = runner(np.stack([slices.images[i] for i in chosen]), spacing=spacing)
    return dict(zip(chosen, labels, strict=True))


def _aggregate(card: ModelCard, ids: Sequence[int], per_case: list[dict], records: list[dict]) -> Evaluation:
    """Means over cases per class (skipping undefined HD95), then over classes."""
    names = card.class_names
    per_class: dict[str, dict[str, float]] = {}
    for c in ids:
        values = [case[c] for case in per_case if c in case]
        if not values:
            continue
        hd = [v["hd95_mm"] for v in values if not math.isnan(v["hd95_mm"])]
        per_class[names[c] if c < len(names) else str(c)] = {
            "dice": float(np.mean([v["dice"] for v in values])),
            "iou": float(np.mean([v["iou"] for v in values])),
            "hd95_mm": float(np.mean(hd)) if hd else float("nan"),
        }
    dices = [v["dice"] for v in per_class.values()]
    hds = [v["hd95_mm"] for v in per_class.values() if not math.isnan(v["hd95_mm"])]
    return Evaluation(
        mean_dice=float(np.mean(dices)) if dices else float("nan"),
        mean_hd95_mm=float(np.mean(hds)) if hds else float("nan"),
        per_class=per_class,
        n=len(per_case),
        cases=records,
    )


def evaluate_files(
    model: BRAUNet,
    card: ModelCard,
    pairs: Sequence[tuple],
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Evaluation:
    """Score ``model`` on (image, label) file pairs with the inference engine (what ``braunet predict``
    writes), each case on its own grid: volumes in 3-D with their voxel spacing, 2-D images per image.
    """
    from braunet.infer import predict
    from braunet.io import read_image
    from braunet.train.masks import mask_to_labels

    binary = model.config.num_classes == 1
    ids = [1] if binary else list(range(1, model.config.num_classes))
    per_case, records = [], []
    for done, (image_path, label_path) in enumerate(pairs):
        if should_stop and should_stop():
            raise Cancelled("evaluation cancelled")
        volume, label = read_image(image_path), read_image(label_path)
        classes = model.config.num_classes
        truth = mask_to_labels(label.array, classes, str(label_path), kind="image" if volume.is_2d else "label_map")
        if truth.shape != tuple(volume.spatial_shape):
            raise InputError(f"{label_path}: label shape {truth.shape} differs from the image's {volume.spatial_shape}")
        pred = predict(model, card, volume).labels.astype(np.int64)
        metrics = per_class_metrics(pred, truth, ids, volume.spacing)
        per_case.append(metrics)
        records.append({"case": str(image_path), "n_slices": 1 if volume.is_2d else truth.shape[2], "metrics": metrics})
        if progress:
            progress(done + 1, len(pairs))
    return _aggregate(card, ids, per_case, records)
