"""The official evaluation protocols of the BRAU-Net++ paper, next to our geometry-correct metrics.

**Synapse** (``synapse_train_test/utils.py: test_single_volume``, the TransUNet protocol):

* each axial slice of a test volume (CT already in [0, 1]) is zoomed to the network size with a
  cubic spline (``scipy.ndimage.zoom(order=3)``), normalised ``(x - 0.5) / 0.5``, segmented
  (arg-max), and the class map zoomed back with ``order=0``;
* per case and per organ 1..8, on the whole 3-D volume, :func:`braunet.train.metrics.official_metric_percase`:
  MedPy ``dc`` and ``hd95`` **without voxel spacing** (HD95 in voxels), with the official shortcuts

  ==========================  ==============  =====================================
  prediction / ground truth   official        ours (:mod:`braunet.train.metrics`)
  ==========================  ==============  =====================================
  both non-empty              (dice, hd95)    (dice, hd95 in mm)
  pred non-empty, gt empty    (1, 0)          (0, undefined)
  pred empty, gt non-empty    (0, 0)          (0, undefined)
  both empty                  (0, 0)          (1, 0)
  ==========================  ==============  =====================================

  (a false positive on an absent organ scores a perfect Dice and HD95 0; a missed organ scores
  HD95 0, which *lowers* the mean HD95);
* the reported numbers: per organ the mean over cases, then the mean over the 8 organs.

**ISIC-2018 / CVC-ClinicDB** (``isic_cvc_train_test/test.py``): image and mask resized to the
network size (256 x 256) and scored there, not at the image's resolution; ``pred = sigmoid >= 0.5``;
per image ``Dice = (2I + 1) / (|P| + |G| + 1)`` and ``IoU = (I + 1) / (U + 1)`` (smooth 1, so an
empty prediction on an empty mask scores 1); the means over images are the paper's DSC and mIoU.

Our default metrics (Dice, IoU, HD95 in mm, undefined HD95 skipped) come from the same predictions,
so :class:`OfficialReport` shows how far the two readings of one model disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from braunet.errors import InputError
from braunet.train.metrics import official_metric_percase, per_class_metrics, summarize

__all__ = [
    "BinaryReport",
    "CaseResult",
    "OfficialReport",
    "evaluate_binary_official",
    "evaluate_transunet",
    "evaluate_volumes_official",
    "official_binary_scores",
    "official_predict_volume",
    "score_case",
]


def official_predict_volume(
    model: nn.Module,
    image: np.ndarray,
    *,
    mean: float = 0.5,
    std: float = 0.5,
    batch_size: int = 8,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """``test_single_volume``'s prediction: image (D, H, W) in [0, 1] -> class ids (D, H, W) uint8.

    Slices are zoomed with ``scipy.ndimage.zoom`` exactly as the official test does (order 3 in,
    order 0 out; the protocol being reproduced, so not our matrix form of it), and go through the
    network in float32 batches with the :class:`~braunet.infer.slices.SliceRunner` (a 1-channel
    output is binary, logit >= 0).
    """
    from scipy.ndimage import zoom

    from braunet.infer.slices import SliceRunner

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise InputError(f"expected a test volume (D, H, W), got shape {image.shape}")
    size = model.config.img_size
    depth, height, width = image.shape
    resize = (height, width) != (size, size)

    def read(batch: list[int]) -> torch.Tensor:  # (B, H, W) in [0, 1] -> (B, 1, S, S), the official input
        chunk = image[batch]
        if resize:
            chunk = np.stack([zoom(s, (size / height, size / width), order=3) for s in chunk])
        return (torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))[:, None] - mean) / std

    runner = SliceRunner(model, None, size, model.config.num_classes, amp=False, batch_size=batch_size)
    prediction = np.zeros(image.shape, dtype=np.uint8)
    for batch, labels, _ in runner.run(read, range(depth), prepared=True, should_stop=should_stop, what="evaluation"):
        if resize:
            labels = np.stack([zoom(s, (height / size, width / size), order=0) for s in labels])
        prediction[batch] = labels
    return prediction


@dataclass
class CaseResult:
    """One case: ``official[c] = (dice, hd95 in voxels)``; ``ours[c] = {"dice", "iou", "hd95_mm"}``
    (None when the case has no voxel spacing)."""

    name: str
    official: dict[int, tuple[float, float]]
    ours: dict[int, dict[str, float]] | None
    spacing: tuple[float, ...] | None


def score_case(
    name: str,
    prediction: np.ndarray,
    label: np.ndarray,
    class_ids: Iterable[int],
    spacing: Sequence[float] | None = None,
) -> CaseResult:
    """Official and (with ``spacing``) default metrics of one predicted label volume."""
    prediction, label = np.asarray(prediction), np.asarray(label)
    if prediction.shape != label.shape:
        raise InputError(f"{name}: prediction {prediction.shape} and label {label.shape} differ in shape")
    ids = [int(c) for c in class_ids]
    official = {c: official_metric_percase(prediction == c, label == c) for c in ids}
    ours = None
    if spacing is not None:
        ours = per_class_metrics(prediction.astype(np.int64), label.astype(np.int64), ids, tuple(spacing))
    return CaseResult(name, official, ours, tuple(float(s) for s in spacing) if spacing is not None else None)


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass
class OfficialReport:
    """Synapse-protocol results of several cases.

    ``official_per_class[name] = {"dice", "hd95"}`` (means over cases), ``official_mean_dice`` /
    ``official_mean_hd95`` (then over classes: the paper's DSC and HD). ``ours`` is
    :func:`braunet.train.metrics.summarize` of the default metrics (None if a case had no spacing).
    """

    class_names: dict[int, str]
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def class_ids(self) -> list[int]:
        return list(self.class_names)

    def official_per_class(self) -> dict[str, dict[str, float]]:
        if not self.cases:
            raise ValueError("no cases were evaluated")
        table = np.array([[case.official[c] for c in self.class_ids] for case in self.cases], dtype=np.float64)
        means = table.mean(axis=0)  # (classes, 2): mean over cases
        return {self.class_names[c]: {"dice": float(means[i, 0]), "hd95": float(means[i, 1])}
                for i, c in enumerate(self.class_ids)}

    @property
    def official_mean_dice(self) -> float:
        return float(np.mean([v["dice"] for v in self.official_per_class().values()]))

    @property
    def official_mean_hd95(self) -> float:
        return float(np.mean([v["hd95"] for v in self.official_per_class().values()]))

    def ours(self) -> dict[str, Any] | None:
        """Default metrics: means over cases, then classes; per-class means with undefined HD95 skipped."""
        if not self.cases or any(case.ours is None for case in self.cases):
            return None
        overall = summarize([case.ours for case in self.cases])
        per_class = {}
        for c in self.class_ids:
            values = [case.ours[c] for case in self.cases]
            hd = [v["hd95_mm"] for v in values if not math.isnan(v["hd95_mm"])]
            per_class[self.class_names[c]] = {
                "dice": float(np.mean([v["dice"] for v in values])),
                "iou": float(np.mean([v["iou"] for v in values])),
                "hd95_mm": float(np.mean(hd)) if hd else float("nan"),
            }
        return {**overall, "per_class": per_class}

    def to_json_dict(self) -> dict[str, Any]:
        ours = self.ours()
        return {
            "protocol": "official-synapse",
            "n": len(self.cases),
            "official": {
                "mean_dice": self.official_mean_dice,
                "mean_hd95_voxels": self.official_mean_hd95,
                "per_class": {k: {"dice": v["dice"], "hd95_voxels": v["hd95"]}
                              for k, v in self.official_per_class().items()},
            },
            "ours": None if ours is None else {
                "mean_dice": ours["mean_dice"],
                "mean_hd95_mm": _none_if_nan(ours["mean_hd95_mm"]),
                "n_hd95_undefined": ours["n_hd95_undefined"],
                "per_class": {k: {"dice": v["dice"], "hd95_mm": _none_if_nan(v["hd95_mm"])}
                              for k, v in ours["per_class"].items()},
            },
            "cases": [
                {"case": case.name, "spacing_mm": case.spacing,
                 "official": {self.class_names[c]: list(case.official[c]) for c in self.class_ids},
                 "ours": None if case.ours is None else {
                     self.class_names[c]: {"dice": case.ours[c]["dice"], "hd95_mm": _none_if_nan(case.ours[c]["hd95_mm"])}
                     for c in self.class_ids}}
                for case in self.cases
            ],
        }

    def format_table(self) -> str:
        """A plain-text table: official Dice / HD95 (voxels) beside ours (Dice / HD95 mm)."""
        official, ours = self.official_per_class(), self.ours()
        width = max(len(n) for n in [*official, "mean"])
        head = f"{'class':<{width}}  {'Dice':>6}  {'HD95 vox':>8}"
        if ours:
            head += f"  | {'Dice':>6}  {'HD95 mm':>8}"
        lines = [f"official protocol on {len(self.cases)} case(s)" + (" | ours" if ours else ""), head]

        def fmt(x: float, d: int) -> str:
            return "n/a" if x is None or math.isnan(x) else f"{x:.{d}f}"

        for name, v in official.items():
            row = f"{name:<{width}}  {v['dice']:>6.4f}  {v['hd95']:>8.2f}"
            if ours:
                o = ours["per_class"][name]
                row += f"  | {o['dice']:>6.4f}  {fmt(o['hd95_mm'], 2):>8}"
            lines.append(row)
        row = f"{'mean':<{width}}  {self.official_mean_dice:>6.4f}  {self.official_mean_hd95:>8.2f}"
        if ours:
            row += f"  | {ours['mean_dice']:>6.4f}  {fmt(ours['mean_hd95_mm'], 2):>8}"
        lines.append(row)
        return "\n".join(lines)


def _class_names(names: Sequence[str], num_classes: int) -> dict[int, str]:
    ids = [1] if num_classes == 1 else list(range(1, num_classes))
    return {c: names[c] if c < len(names) else str(c) for c in ids}


def evaluate_transunet(
    model: nn.Module,
    folder,  # braunet.repro.transunet.TransUNetFolder
    class_names: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> OfficialReport:
    """The official Synapse test on the ``test_vol.txt`` volumes of a TransUNet folder.

    Our mm metrics are added for volumes that carry ``spacing_mm`` (written by
    :func:`braunet.repro.transunet.write_transunet_case`).
    """
    names = list(folder.test_names if names is None else names)
    if not names:
        raise InputError(f"{folder.list_dir}: test_vol.txt lists no volumes")
    report = OfficialReport(_class_names(class_names, model.config.num_classes))
    for done, name in enumerate(names):
        volume = folder.read_volume(name)
        prediction = official_predict_volume(model, volume.image, batch_size=batch_size, should_stop=should_stop)
        report.cases.append(score_case(name, prediction, volume.label, report.class_ids, volume.spacing))
        if progress:
            progress(done + 1, len(names))
    return report


def evaluate_volumes_official(
    model: nn.Module,
    card,
    pairs: Sequence[tuple[Any, Any]],
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> OfficialReport:
    """The official per-case metrics on (CT, label) file pairs, predicted by the inference engine.

    The prediction is what ``braunet predict`` writes (the card's recipe on HU input, resized back
    to the input grid); the official metrics are computed on it in voxels, ours in mm with the
    file's voxel spacing.
    """
    from braunet.infer import predict_volume
    from braunet.io import read_image
    from braunet.train.masks import mask_to_labels

    report = OfficialReport(_class_names(card.class_names, model.config.num_classes))
    for done, (image_path, label_path) in enumerate(pairs):
        volume, label = read_image(image_path), read_image(label_path)
        if volume.is_2d:
            raise InputError(f"{image_path}: the Synapse protocol needs 3-D volumes")
        truth = mask_to_labels(label.array, model.config.num_classes, str(label_path), kind="label_map")
        if truth.shape != tuple(volume.array.shape):
            raise InputError(f"{label_path}: label shape {truth.shape} differs from the image's {volume.array.shape}")
        prediction = predict_volume(model, card, volume, should_stop=should_stop).labels
        report.cases.append(score_case(str(image_path), prediction, truth, report.class_ids, volume.spacing))
        if progress:
            progress(done + 1, len(pairs))
    return report


def official_binary_scores(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The official ISIC / CVC per-image (Dice, IoU) with smooth 1 on binary masks of one image."""
    p, t = np.asarray(prediction) != 0, np.asarray(truth) != 0
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    inter = float(np.count_nonzero(p & t))
    total = float(np.count_nonzero(p) + np.count_nonzero(t))
    return (2 * inter + 1) / (total + 1), (inter + 1) / (total - inter + 1)


@dataclass
class BinaryReport:
    """ISIC / CVC protocol: per-image official Dice/IoU at the network size, and our metrics at the
    images' own resolution (``ours``: :class:`braunet.train.evaluate.Evaluation` JSON, or None)."""

    names: list[str]
    dice: list[float]
    iou: list[float]
    ours: dict[str, Any] | None = None

    @property
    def mean_dice(self) -> float:
        return float(np.mean(self.dice))

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.iou))

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "protocol": "official-binary",
            "n": len(self.names),
            "official": {"mean_dice": self.mean_dice, "mean_iou": self.mean_iou},
            "ours": self.ours,
            "cases": [{"case": n, "dice": d, "iou": i} for n, d, i in zip(self.names, self.dice, self.iou, strict=True)],
        }

    def format_table(self) -> str:
        header = (
            f"official protocol on {len(self.names)} image(s) at the network size: "
            f"DSC {self.mean_dice:.4f}, mIoU {self.mean_iou:.4f}"
        )
        lines = [header]
        if self.ours:
            lines.append(f"ours at the images' resolution: Dice {self.ours['mean_dice']:.4f}")
        return "\n".join(lines)


def evaluate_binary_official(model: nn.Module, card, slices, *, with_ours: bool = True) -> BinaryReport:
    """The official ISIC / CVC test on labelled images (a :class:`braunet.train.slices.SliceSet`).

    Images go through the card's recipe at the network size (bilinear resize + ImageNet
    normalisation), masks are resized with nearest neighbour, as the official test's
    ``A.Resize(256, 256)``; scores are computed there.
    """
    from braunet.train.datasets import prepare
    from braunet.train.validation import predict_prepared

    size, classes = model.config.img_size, model.config.num_classes
    prepared = prepare(slices, card.preprocessing, size, classes)
    prediction = predict_prepared(model, prepared.x).numpy()
    truth = prepared.y.numpy()
    scores = [official_binary_scores(p == 1, t == 1) for p, t in zip(prediction, truth, strict=True)]
    ours = None
    if with_ours:
        from braunet.train.evaluate import evaluate_slices

        ours = evaluate_slices(model, card, slices).to_json_dict()
    return BinaryReport(list(prepared.names), [s[0] for s in scores], [s[1] for s in scores], ours)
