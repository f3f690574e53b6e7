"""Metrics: hand-computed cases, empty-mask conventions, MedPy golden values, real CT labels."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from braunet.train.metrics import (
    dice,
    hd95,
    iou,
    official_metric_percase,
    per_class_metrics,
    summarize,
)


def _square_pair(shift: int, axis: int, size: int = 40, side: int = 20) -> tuple[np.ndarray, ...]:
    """A side x side square and the same square shifted by ``shift`` pixels along ``axis``."""
    a = np.zeros((size, size), bool)
    a[10 : 10 + side, 10 : 10 + side] = True
    return a, np.roll(a, shift, axis=axis)


def _medpy_hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> float:
    """MedPy 0.5.2 ``hd95`` written out literally (whole arrays, no cropping)."""
    structure = ndimage.generate_binary_structure(a.ndim, 1)
    border_a = a ^ ndimage.binary_erosion(a, structure=structure, iterations=1)
    border_b = b ^ ndimage.binary_erosion(b, structure=structure, iterations=1)
    d_ab = ndimage.distance_transform_edt(~border_b, sampling=spacing)[border_a]
    d_ba = ndimage.distance_transform_edt(~border_a, sampling=spacing)[border_b]
    return float(np.percentile(np.hstack((d_ab, d_ba)), 95))


# --- overlap -------------------------------------------------------------------------------------


def test_dice_and_iou_of_known_overlap() -> None:
    a = np.array([1, 1, 1, 1, 0, 0], bool)
    b = np.array([0, 0, 1, 1, 1, 1], bool)
    assert dice(a, b) == pytest.approx(0.5)  # 2 * 2 / (4 + 4)
    assert iou(a, b) == pytest.approx(1 / 3)  # 2 / 6
    assert dice(a, a) == iou(a, a) == 1.0


@pytest.mark.parametrize("shift", [1, 2, 5])
def test_dice_of_shifted_squares(shift: int) -> None:
    a, b = _square_pair(shift, axis=1)
    assert dice(a, b) == pytest.approx((20 - shift) / 20)  # overlap (20 - k) x 20 of 20 x 20
    assert iou(a, b) == pytest.approx((20 - shift) / (20 + shift))


def test_masks_may_be_0_1_integers() -> None:
    a = np.array([[0, 1], [1, 1]], np.uint8)
    assert dice(a, a.astype(bool)) == 1.0


# --- hd95 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("shift", [1, 2, 3, 5])
def test_hd95_of_shifted_squares_is_the_shift(shift: int, axis: int) -> None:
    a, b = _square_pair(shift, axis)
    assert hd95(a, b, (1.0, 1.0)) == pytest.approx(shift)


@pytest.mark.parametrize(("axis", "expected_per_pixel"), [(0, 2.0), (1, 0.5)])
def test_hd95_uses_anisotropic_spacing(axis: int, expected_per_pixel: float) -> None:
    a, b = _square_pair(3, axis)
    assert hd95(a, b, (2.0, 0.5)) == pytest.approx(3 * expected_per_pixel)


def test_hd95_of_two_points_is_their_distance() -> None:
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[0, 0] = True
    b[3, 4] = True
    assert hd95(a, b, (1.0, 1.0)) == pytest.approx(5.0)
    assert hd95(a, b, (2.0, 1.0)) == pytest.approx(math.hypot(6.0, 4.0))


def test_hd95_is_symmetric_and_zero_for_identical_masks() -> None:
    a, b = _square_pair(2, axis=0)
    b[0:3, 0:3] = True  # an outlier blob makes the two directions differ
    assert hd95(a, b, (1.0, 1.5)) == hd95(b, a, (1.0, 1.5))
    assert hd95(a, a, (1.0, 1.0)) == 0.0


def test_hd95_matches_the_medpy_algorithm_on_random_masks() -> None:
    """Cropping to the bounding box must not change anything, also for masks touching the edge."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        shape = (17, 23) if trial % 2 else (9, 12, 14)
        a = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5
        b = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5
        if not (a.any() and b.any()):
            continue
        spacing = tuple(rng.uniform(0.5, 3.0, len(shape)))
        assert hd95(a, b, spacing) == pytest.approx(_medpy_hd95(a, b, spacing), abs=1e-12)
        assert official_metric_percase(a, b)[1] == pytest.approx(
            _medpy_hd95(a, b, (1.0,) * len(shape)), abs=1e-12
        )


# --- empty-mask conventions ----------------------------------------------------------------------


def test_default_conventions_for_empty_masks() -> None:
    empty = np.zeros((6, 6), bool)
    full = np.zeros((6, 6), bool)
    full[2:4, 2:4] = True
    assert (dice(empty, empty), iou(empty, empty), hd95(empty, empty, (1, 1))) == (1.0, 1.0, 0.0)
    for pred, gt in ((full, empty), (empty, full)):
        assert dice(pred, gt) == 0.0
        assert iou(pred, gt) == 0.0
        assert math.isnan(hd95(pred, gt, (1.0, 1.0)))


def test_official_conventions_for_empty_masks() -> None:
    empty = np.zeros((4, 6, 6), bool)
    full = np.zeros((4, 6, 6), bool)
    full[1:3, 2:4, 2:4] = True
    assert official_metric_percase(full, full) == (1.0, 0.0)
    assert official_metric_percase(full, empty) == (1.0, 0.0)  # false positive: perfect Dice
    assert official_metric_percase(empty, full) == (0.0, 0.0)
    assert official_metric_percase(empty, empty) == (0.0, 0.0)  # absent and predicted absent: 0


def test_official_treats_any_nonzero_value_as_foreground() -> None:
    a = np.array([[0, 3], [0, 0]])
    b = np.array([[0, 1], [0, 0]])
    assert official_metric_percase(a, b) == (1.0, 0.0)


# --- validation ----------------------------------------------------------------------------------


def test_errors_name_the_problem() -> None:
    a = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="labels == k"):
        dice(np.array([[0, 2], [1, 0]]), a[:2, :2])
    with pytest.raises(ValueError, match="spacing has 3 values"):
        hd95(a, a, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        hd95(a, a, (1.0, 0.0))
    with pytest.raises(ValueError, match="integer label map"):
        per_class_metrics(a.astype(float), a.astype(int), [1], (1.0, 1.0))


# --- label maps and summaries --------------------------------------------------------------------


def test_per_class_metrics_on_a_small_label_map() -> None:
    gt = np.zeros((10, 10), np.int64)
    gt[1:5, 1:5] = 1
    gt[6:9, 6:9] = 2
    pred = gt.copy()
    pred[6:9, 6:9] = 0  # class 2 missed, class 3 absent in both
    result = per_class_metrics(pred, gt, [1, 2, 3], (0.5, 0.5))
    assert list(result) == [1, 2, 3]
    assert result[1] == {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0}
    assert result[2]["dice"] == 0.0 and math.isnan(result[2]["hd95_mm"])
    assert result[3] == {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0}


def test_summarize_averages_cases_then_classes_and_counts_undefined_hd95() -> None:
    nan = float("nan")
    case_a = {
        1: {"dice": 0.8, "iou": 0.6, "hd95_mm": nan},
        2: {"dice": 0.0, "iou": 0.0, "hd95_mm": nan},
    }
    case_b = {
        1: {"dice": 0.6, "iou": 0.4, "hd95_mm": 4.0},
        2: {"dice": 0.4, "iou": 0.2, "hd95_mm": nan},
    }
    summary = summarize([case_a, case_b])
    assert summary["mean_dice"] == pytest.approx((0.7 + 0.2) / 2)
    assert summary["mean_iou"] == pytest.approx((0.5 + 0.1) / 2)
    assert summary["mean_hd95_mm"] == pytest.approx(4.0)  # class 2 has no defined HD95
    assert summary["n_hd95_undefined"] == 3
    assert (summary["n_cases"], summary["n_classes"]) == (2, 2)
    assert math.isnan(summarize(case_a)["mean_hd95_mm"])
    with pytest.raises(ValueError, match="expected"):
        summarize([case_a, {1: case_b[1]}])


# --- real CT labels (3 mm isotropic) -------------------------------------------------------------


def test_real_ct_label_shifted_by_one_voxel_has_hd95_of_one_spacing(ct_synapse8) -> None:
    labels, spacing = ct_synapse8
    assert spacing == (3.0, 3.0, 3.0)
    padded = np.pad(labels, 1)  # reason: np.roll must not wrap organs around the volume
    for axis in range(3):
        shifted = np.roll(padded, 1, axis=axis)
        result = per_class_metrics(shifted, padded, range(1, 9), spacing)
        for class_id, values in result.items():
            assert values["hd95_mm"] == pytest.approx(3.0), (axis, class_id)
            assert 0.6 < values["dice"] < 1.0
        assert summarize(result)["mean_hd95_mm"] == pytest.approx(3.0)


def test_real_ct_label_anisotropic_spacing(ct_synapse8) -> None:
    labels, _ = ct_synapse8
    padded = np.pad(labels, 1)
    spacing = (2.0, 1.0, 3.0)
    for axis, expected in ((0, 2.0), (1, 1.0)):
        result = per_class_metrics(np.roll(padded, 1, axis=axis), padded, range(1, 9), spacing)
        assert all(v["hd95_mm"] == pytest.approx(expected) for v in result.values())
    # along the thick axis a thin organ can find a closer in-plane partner: at most one spacing
    result = per_class_metrics(np.roll(padded, 1, axis=2), padded, range(1, 9), spacing)
    assert all(0 < v["hd95_mm"] <= 3.0 + 1e-9 for v in result.values())


def test_golden_values_computed_with_medpy(ct_synapse8) -> None:
    """Values from MedPy 0.5.2 ``dc``/``hd95`` on the same arrays (computed once, outside CI)."""
    labels, _ = ct_synapse8
    pancreas, stomach, liver = labels == 6, labels == 8, labels == 5
    assert hd95(pancreas, stomach, (3.0, 3.0, 3.0)) == pytest.approx(44.476849953289914, abs=1e-9)
    assert hd95(pancreas, stomach, (0.8, 1.1, 3.0)) == pytest.approx(30.595522510428825, abs=1e-9)
    dilated = ndimage.binary_dilation(liver, iterations=2)
    dc, hd = official_metric_percase(dilated, liver)
    assert dc == pytest.approx(0.8721583854437095, abs=1e-12)
    assert hd == pytest.approx(2.0)
    assert hd95(dilated, liver, (3.0, 3.0, 3.0)) == pytest.approx(6.0)


def test_metrics_module_does_not_import_torch() -> None:
    code = (
        "import sys, braunet.train.metrics, braunet.train.augment\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
