"""Overlap and surface-distance metrics for binary masks and label maps (NumPy and SciPy only).

Two families live here, because the published BRAU-Net++ numbers and a clinically readable
evaluation disagree on units and on empty masks:

* **Default metrics** (:func:`dice`, :func:`iou`, :func:`hd95`, :func:`per_class_metrics`,
  :func:`summarize`): HD95 is in millimetres (the caller passes the voxel spacing), and empty masks
  follow these conventions:

  ======================  ======  ======  ============
  case                    dice    iou     hd95
  ======================  ======  ======  ============
  both empty              1.0     1.0     0.0
  exactly one empty       0.0     0.0     nan
  ======================  ======  ======  ============

  Both empty is a correct "absent" answer, so it scores perfectly (MedPy's ``dc`` does the same).
  Averages must not count it as a success, or every absent organ lifts the mean:
  :mod:`braunet.train.evaluate` (``braunet evaluate``) scores a class only in the cases where it is
  in the prediction or the reference, and averages over the classes present in the reference.
  With exactly one empty mask a surface distance does not exist: any finite number (0, the image
  diagonal, a challenge's 373.13 mm) would be invented. We return ``nan``; :func:`summarize` takes
  ``nanmean`` and reports how many values were undefined, so a missed organ never looks like a
  perfect boundary. The Dice of 0 already penalises that case.

* **The official Synapse protocol** (:func:`official_metric_percase`): MedPy ``dc`` and ``hd95``
  without voxel spacing (so HD95 is in voxels), with the official trainer's empty-mask shortcuts.
  Use it only to reproduce published tables.

Surfaces are computed as MedPy does: ``mask ^ binary_erosion(mask)`` with the connectivity-1
structure (face neighbours) and zero outside the array, so voxels on the array border are surface.
Distances go from each surface voxel of one mask to the nearest surface voxel of the other
(``distance_transform_edt`` with ``sampling=spacing``); HD95 is the 95th percentile (NumPy's linear
interpolation) of both directed sets stacked together. Works for 2-D and 3-D arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "dice",
    "hd95",
    "iou",
    "official_metric_percase",
    "per_class_metrics",
    "summarize",
]


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as a bool mask; accept bool or numeric arrays holding only 0 and 1."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name}: expected a binary mask, got dtype {array.dtype}")
    if np.any((array != 0) & (array != 1)):
        # reason: passing a label map where a mask is expected silently merges classes
        raise ValueError(
            f"{name}: expected a binary mask (bool or 0/1), got values up to {array.max()}; "
            "select one class first, e.g. labels == k"
        )
    return array.astype(bool)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    if pred.ndim == 0:
        raise ValueError("pred and gt must have at least one dimension")
    return pred, gt


def _spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim:
        raise ValueError(f"spacing has {len(values)} values but the masks have {ndim} dimensions")
    if not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be positive and finite, got {values}")
    return values


def _surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (a -> b, b -> a) of two non-empty masks of the same shape.

    The arrays are cropped to the bounding box of ``a | b`` and padded with one zero voxel. That
    gives the same numbers as working on the whole array (the zero pad plays the role of
    ``binary_erosion``'s ``border_value=0``, and every surface voxel lies inside the box) and is
    much faster on CT volumes where an organ fills a small part of the field of view.
    """
    box = ndimage.find_objects((a | b).astype(np.uint8))[0]
    a = np.pad(a[box], 1)
    b = np.pad(b[box], 1)
    structure = ndimage.generate_binary_structure(a.ndim, 1)
    border_a = a ^ ndimage.binary_erosion(a, structure=structure)
    border_b = b ^ ndimage.binary_erosion(b, structure=structure)
    # reason: the EDT measures distance to the nearest zero, so the border is inverted
    to_b = ndimage.distance_transform_edt(~border_b, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~border_a, sampling=spacing)
    return to_b[border_a], to_a[border_b]


def _hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> float:
    d_ab, d_ba = _surface_distances(a, b, spacing)
    return float(np.percentile(np.hstack((d_ab, d_ba)), 95))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient ``2|P∩G| / (|P| + |G|)`` of two binary masks of any equal shape.

    Returns 1.0 when both masks are empty (see the module docstring).
    """
    pred, gt = _pair(pred, gt)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & gt)) / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union (Jaccard) ``|P∩G| / |P∪G|``; 1.0 when both masks are empty."""
    pred, gt = _pair(pred, gt)
    union = int(np.count_nonzero(pred | gt))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & gt)) / union


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in the units of ``spacing`` (usually mm).

    Args:
        pred: Binary mask, shape (H, W) or (D, H, W).
        gt: Binary mask of the same shape.
        spacing: Voxel size along each axis of the arrays, in array axis order.

    Returns:
        HD95; 0.0 if both masks are empty, ``nan`` if exactly one is (see the module docstring).
    """
    pred, gt = _pair(pred, gt)
    spacing_t = _spacing(spacing, pred.ndim)
    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    if not pred_any and not gt_any:
        return 0.0
    if pred_any != gt_any:
        return float("nan")
    return _hd95(pred, gt, spacing_t)


def per_class_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    class_ids: Iterable[int],
    spacing: Sequence[float],
) -> dict[int, dict[str, float]]:
    """Dice, IoU and HD95 (in ``spacing`` units) of each class of two integer label maps.

    Args:
        pred_labels: Integer label map, shape (H, W) or (D, H, W).
        gt_labels: Integer label map of the same shape.
        class_ids: Labels to evaluate, e.g. ``range(1, 9)`` for the 8 Synapse organs.
        spacing: Voxel size along each array axis.

    Returns:
        ``{class_id: {"dice": ..., "iou": ..., "hd95_mm": ...}}`` in the order of ``class_ids``.
    """
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(
            f"pred and gt label maps differ in shape: {pred_labels.shape} vs {gt_labels.shape}"
        )
    for name, labels in (("pred_labels", pred_labels), ("gt_labels", gt_labels)):
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            raise ValueError(f"{name}: expected an integer label map, got dtype {labels.dtype}")
    spacing_t = _spacing(spacing, pred_labels.ndim)
    results: dict[int, dict[str, float]] = {}
    for class_id in class_ids:
        p, g = pred_labels == class_id, gt_labels == class_id
        results[int(class_id)] = {
            "dice": dice(p, g),
            "iou": iou(p, g),
            "hd95_mm": hd95(p, g, spacing_t),
        }
    return results


def summarize(
    results: Mapping[int, Mapping[str, float]] | Sequence[Mapping[int, Mapping[str, float]]],
) -> dict[str, float]:
    """Average :func:`per_class_metrics` output over cases, then over classes.

    The order (cases first, then classes) is the official Synapse reporting order. Undefined HD95
    values (``nan``) are skipped by ``nanmean`` and counted in ``n_hd95_undefined``; a class whose
    HD95 is undefined in every case is left out of ``mean_hd95_mm``.

    Args:
        results: One case (``{class_id: {"dice", "iou", "hd95_mm"}}``) or a sequence of cases
            with the same class ids.

    Returns:
        ``mean_dice``, ``mean_iou``, ``mean_hd95_mm`` (``nan`` if no value is defined),
        ``n_hd95_undefined``, ``n_cases`` and ``n_classes``.
    """
    cases = [results] if isinstance(results, Mapping) else list(results)
    if not cases or not cases[0]:
        raise ValueError("summarize needs at least one case with at least one class")
    class_ids = list(cases[0])
    for i, case in enumerate(cases):
        if list(case) != class_ids:
            raise ValueError(f"case {i} has classes {list(case)}, expected {class_ids}")
    table = {
        key: np.array([[case[c][key] for c in class_ids] for case in cases], dtype=np.float64)
        for key in ("dice", "iou", "hd95_mm")
    }  # each (n_cases, n_classes)
    hd = table["hd95_mm"]
    defined = ~np.isnan(hd)
    per_class_hd = np.where(
        defined.any(axis=0), np.nansum(hd, axis=0) / np.maximum(defined.sum(axis=0), 1), np.nan
    )
    has_hd = ~np.isnan(per_class_hd)
    return {
        "mean_dice": float(table["dice"].mean(axis=0).mean()),
        "mean_iou": float(table["iou"].mean(axis=0).mean()),
        "mean_hd95_mm": float(per_class_hd[has_hd].mean()) if has_hd.any() else float("nan"),
        "n_hd95_undefined": int((~defined).sum()),
        "n_cases": len(cases),
        "n_classes": len(class_ids),
    }


def official_metric_percase(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """The official Synapse ``calculate_metric_percase``: (Dice, HD95 in voxels).

    Reproduces ``synapse_train_test/utils.py`` of the BRAU-Net++ repository (same as TransUNet and
    Swin-Unet): MedPy ``dc`` and ``hd95`` without voxel spacing, and these shortcuts:

    * pred and gt non-empty -> (dice, hd95);
    * pred non-empty, gt empty -> (1.0, 0.0): a false positive scores a perfect Dice;
    * pred empty -> (0.0, 0.0), whatever gt is (so a correctly absent organ scores Dice 0).

    As in the official code, any non-zero value is foreground.

    Args:
        pred: Mask of one class, shape (D, H, W) for the official test (2-D also works).
        gt: Mask of the same shape.
    """
    pred, gt = np.atleast_1d(np.asarray(pred) != 0), np.atleast_1d(np.asarray(gt) != 0)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    if pred.any() and gt.any():
        dc = 2.0 * np.count_nonzero(pred & gt) / (np.count_nonzero(pred) + np.count_nonzero(gt))
        return float(dc), _hd95(pred, gt, (1.0,) * pred.ndim)
    if pred.any():
        return 1.0, 0.0
    return 0.0, 0.0
