"""Evaluation at the images' own resolution: per-class Dice and HD95, per case, then averaged.

A prediction is made slice by slice as at inference, by the same
:class:`~braunet.infer.slices.SliceRunner` (the card's preprocessing recipe, the network, the
class map resized back to the slice grid with nearest neighbour), in float32 on any device.
Slices of one volume are stacked back into a 3-D case and scored in 3-D with the voxel spacing
(slice distance included), so HD95 is in mm; every 2-D image is one case scored on its pixel grid,
so HD95 is in pixels (photographs carry no spacing). One evaluation holds one kind: volumes and
2-D images are not mixed. Label volumes are taken on their image's grid
(:func:`braunet.train.pairs.label_on_image_grid`: reoriented exactly, or refused).

What the means are over:

* per class, over the cases where the class is in the reference or in the prediction; a case
  where it is absent from both is not scored (the metrics module's "both empty = 1.0" would turn
  every absent organ into a perfect score), and a class absent from both in every case is reported
  as absent (``dice: null``);
* the mean over classes, over the classes present in the reference of at least one case (listed as
  ``mean_over``). A class only predicted, never in the reference, keeps its per-class row (Dice 0:
  a false positive) but is not in the mean;
* HD95 is undefined (null) where exactly one of prediction and reference is empty; those values
  are left out of the HD95 means (see :mod:`braunet.train.metrics`).

The JSON of ``braunet evaluate --json`` is :meth:`Evaluation.to_json_dict` (``U`` is ``mm`` for
volumes, ``px`` for 2-D images)::

    {"mean_dice": ..., "mean_hd95_U": ..., "mean_over": [name, ...], "n": ...,
     "per_class": {name: {"dice": ..., "hd95_U": ..., "n_scored": ..., "n_in_reference": ...}}}

``n`` is the number of cases; ``n_scored`` the cases where the class was scored, ``n_in_reference``
those where the reference holds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from braunet.errors import Cancelled, InputError
from braunet.infer.slices import SliceRunner
from braunet.model import BRAUNet, ModelCard
from braunet.train.metrics import per_class_metrics
from braunet.train.slices import SliceSet

if TYPE_CHECKING:
    from braunet.io import Volume

__all__ = ["Evaluation", "evaluate_files", "evaluate_slices", "read_pair"]


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@dataclass
class Evaluation:
    """Per-case and averaged metrics; see the module docstring for what each mean is over.

    Attributes:
        mean_dice: over the classes of ``mean_over`` (nan when the references hold no class).
        mean_hd95: over those of them with a defined HD95, in ``hd95_unit``.
        hd95_unit: ``"mm"`` (volumes) or ``"px"`` (2-D images).
        per_class: ``{name: {"dice", "iou", "hd95", "n_scored", "n_in_reference"}}``, means over
            the scored cases (nan when the class was never scored).
        mean_over: names of the classes present in a reference, which the means are over.
        n: number of cases.
        cases: per case ``{"case", "n_slices", "unit", "metrics": {class_id: {"dice", "iou",
            "hd95_mm"}}`` (scored classes only; ``hd95_mm`` in the case's ``unit``), ``"absent"``
            (class ids absent from prediction and reference) and ``"in_reference"`` (ids it holds).
    """

    mean_dice: float
    mean_hd95: float
    hd95_unit: str
    per_class: dict[str, dict[str, float]]
    mean_over: list[str]
    n: int
    cases: list[dict] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        hd = f"hd95_{self.hd95_unit}"
        return {
            "mean_dice": _nan_to_none(self.mean_dice),
            f"mean_{hd}": _nan_to_none(self.mean_hd95),
            "mean_over": list(self.mean_over),
            "per_class": {
                name: {"dice": _nan_to_none(v["dice"]), hd: _nan_to_none(v["hd95"]),
                       "n_scored": int(v["n_scored"]), "n_in_reference": int(v["n_in_reference"])}
                for name, v in self.per_class.items()
            },  # fmt: skip
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
        annotated = [c for c in ids if known is None or c in known]
        case_records.append({"case": slices.groups[indices[0]], "n_slices": len(indices),
                             "unit": "px" if depth is None else "mm", **_score(pred, truth, annotated, spacing)})
        if progress:
            progress(done + 1, len(cases))
    return _aggregate(card, ids, case_records)


def _score(pred: np.ndarray, truth: np.ndarray, class_ids: Sequence[int], spacing: Sequence[float]) -> dict:
    """One case's record fields: metrics of the classes in its prediction or reference, and the rest.

    Args:
        pred, truth: int64 class maps of one case, (H, W) or (D, H, W).
        class_ids: the classes annotated in this case.

    Returns:
        ``{"metrics": {class_id: {"dice", "iou", "hd95_mm"}}, "absent": [ids absent from both],
        "in_reference": [ids the reference holds]}``; ``hd95_mm`` is in ``spacing`` units.
    """
    in_pred, in_truth = set(np.unique(pred).tolist()), set(np.unique(truth).tolist())
    scored = [c for c in class_ids if c in in_pred or c in in_truth]
    return {
        "metrics": per_class_metrics(pred, truth, scored, spacing),
        "absent": [c for c in class_ids if c not in scored],
        "in_reference": [c for c in class_ids if c in in_truth],
    }


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


def _aggregate(card: ModelCard, ids: Sequence[int], records: list[dict]) -> Evaluation:
    """Means over the scored cases per class (skipping undefined HD95), then over the classes present
    in a reference (module docstring)."""
    units = sorted({record["unit"] for record in records})
    if len(units) > 1:
        raise InputError("volumes and 2-D images cannot be evaluated together (HD95 would mix mm and pixels); "
                         "evaluate them separately")  # fmt: skip
    names = card.class_names
    per_class: dict[str, dict[str, float]] = {}
    mean_over: list[str] = []
    for c in ids:
        annotated = [r for r in records if c in r["metrics"] or c in r["absent"]]
        if not annotated:
            continue  # reason: a partial label set never annotated this class; nothing is known about it
        values = [r["metrics"][c] for r in annotated if c in r["metrics"]]
        hd = [v["hd95_mm"] for v in values if not math.isnan(v["hd95_mm"])]
        name = names[c] if c < len(names) else str(c)
        n_in_reference = sum(c in r["in_reference"] for r in annotated)
        per_class[name] = {
            "dice": float(np.mean([v["dice"] for v in values])) if values else float("nan"),
            "iou": float(np.mean([v["iou"] for v in values])) if values else float("nan"),
            "hd95": float(np.mean(hd)) if hd else float("nan"),
            "n_scored": len(values),
            "n_in_reference": n_in_reference,
        }
        if n_in_reference:
            mean_over.append(name)
    dices = [per_class[name]["dice"] for name in mean_over]
    hds = [per_class[name]["hd95"] for name in mean_over if not math.isnan(per_class[name]["hd95"])]
    return Evaluation(
        mean_dice=float(np.mean(dices)) if dices else float("nan"),
        mean_hd95=float(np.mean(hds)) if hds else float("nan"),
        hd95_unit=units[0] if units else "mm",
        per_class=per_class,
        mean_over=mean_over,
        n=len(records),
        cases=records,
    )


def read_pair(image_path: Any, label_path: Any, num_classes: int) -> tuple[Volume, np.ndarray]:
    """An (image, label) file pair -> the image and its class map on the image's grid (its spatial shape).

    Raises:
        InputError: unreadable files, labels off the image's grid or not the model's classes.
    """
    from braunet.io import read_image
    from braunet.train.masks import mask_to_labels
    from braunet.train.pairs import label_on_image_grid

    volume, label = read_image(image_path), read_image(label_path)
    on_grid = label_on_image_grid(volume, label, image_path, label_path)
    truth = mask_to_labels(on_grid, num_classes, str(label_path), kind="image" if volume.is_2d else "label_map")
    if truth.shape != tuple(volume.spatial_shape):
        raise InputError(f"{label_path}: label shape {truth.shape} differs from the image's {volume.spatial_shape}")
    return volume, truth


def evaluate_files(
    model: BRAUNet,
    card: ModelCard,
    pairs: Sequence[tuple],
    *,
    precision: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Evaluation:
    """Score ``model`` on (image, label) file pairs with the inference engine (what ``braunet predict``
    writes), each case on its own grid: volumes in 3-D with their voxel spacing, 2-D images per image.

    Label volumes are brought onto their image's grid exactly or refused
    (:func:`braunet.train.pairs.label_on_image_grid`). ``precision``: as for :func:`braunet.infer.predict_volume`.

    Raises:
        InputError: unreadable files, labels off the image's grid, label values that are not the
            model's classes, or volumes mixed with 2-D images.
    """
    from braunet.infer import predict

    binary = model.config.num_classes == 1
    ids = [1] if binary else list(range(1, model.config.num_classes))
    records = []
    for done, (image_path, label_path) in enumerate(pairs):
        if should_stop and should_stop():
            raise Cancelled("evaluation cancelled")
        volume, truth = read_pair(image_path, label_path, model.config.num_classes)
        pred = predict(model, card, volume, precision=precision).labels.astype(np.int64)
        records.append({"case": str(image_path), "n_slices": 1 if volume.is_2d else truth.shape[2],
                        "unit": "px" if volume.is_2d else "mm", **_score(pred, truth, ids, volume.spacing)})
        if progress:
            progress(done + 1, len(pairs))
    return _aggregate(card, ids, records)
