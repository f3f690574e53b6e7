"""The official Synapse and ISIC/CVC protocols against hand-computed cases and the real CT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from braunet.repro.official_eval import (
    OfficialReport,
    official_binary_scores,
    official_predict_volume,
    score_case,
)


def _volume(*voxels: tuple[int, int, int], shape=(12, 12, 12)) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int64)
    for v in voxels:
        out[v] = 1
    return out


def test_hand_checked_case_voxels_and_mm() -> None:
    # gt: one voxel; pred: that voxel plus one 4 voxels away along axis 2.
    # Dice = 2*1 / (2 + 1) = 2/3. Surface distances: pred->gt [0, 4], gt->pred [0]; the 95th
    # percentile of [0, 0, 4] with linear interpolation is 0 + 0.9 * 4 = 3.6 voxels, and with
    # 2.5 mm along axis 2 it is 0.9 * 10 = 9.0 mm.
    gt = _volume((5, 5, 5))
    pred = _volume((5, 5, 5), (5, 5, 9))
    case = score_case("hand", pred, gt, [1], spacing=(1.0, 1.0, 2.5))
    dice, hd = case.official[1]
    assert dice == pytest.approx(2 / 3) and hd == pytest.approx(3.6)
    assert case.ours[1]["dice"] == pytest.approx(2 / 3)
    assert case.ours[1]["hd95_mm"] == pytest.approx(9.0)


@pytest.mark.parametrize(
    ("pred_voxels", "gt_voxels", "official", "ours_dice", "ours_hd"),
    [
        ([(3, 3, 3)], [], (1.0, 0.0), 0.0, math.nan),  # false positive on an absent organ: "perfect"
        ([], [(3, 3, 3)], (0.0, 0.0), 0.0, math.nan),  # missed organ: HD 0
        ([], [], (0.0, 0.0), 1.0, 0.0),  # correctly absent: Dice 0 officially
    ],
)
def test_empty_mask_conventions(pred_voxels, gt_voxels, official, ours_dice, ours_hd) -> None:
    case = score_case("empty", _volume(*pred_voxels), _volume(*gt_voxels), [1], spacing=(3.0, 3.0, 3.0))
    assert case.official[1] == official
    assert case.ours[1]["dice"] == ours_dice
    hd = case.ours[1]["hd95_mm"]
    assert (math.isnan(hd) and math.isnan(ours_hd)) or hd == ours_hd


def test_report_means_over_cases_then_organs() -> None:
    cube = np.zeros((12, 12, 12), dtype=np.int64)
    cube[2:4, 2:4, 2:4] = 1
    # case A: organ 1 = the hand case (2/3, 3.6 vox, 9 mm); organ 2 predicted but absent (1, 0).
    pred_a = _volume((5, 5, 5), (5, 5, 9))
    pred_a[8, 8, 8] = 2
    gt_a = _volume((5, 5, 5))
    # case B: organ 1 exact (1, 0); organ 2 present but missed (0, 0).
    pred_b = cube.copy()
    gt_b = cube.copy()
    gt_b[9, 9, 9] = 2
    report = OfficialReport({1: "aorta", 2: "gallbladder"})
    report.cases.append(score_case("A", pred_a, gt_a, [1, 2], spacing=(1.0, 1.0, 2.5)))
    report.cases.append(score_case("B", pred_b, gt_b, [1, 2], spacing=(1.0, 1.0, 2.5)))
    per_class = report.official_per_class()
    assert per_class["aorta"] == pytest.approx({"dice": (2 / 3 + 1) / 2, "hd95": 1.8})
    assert per_class["gallbladder"] == pytest.approx({"dice": 0.5, "hd95": 0.0})
    assert report.official_mean_dice == pytest.approx(((2 / 3 + 1) / 2 + 0.5) / 2)
    assert report.official_mean_hd95 == pytest.approx(0.9)
    ours = report.ours()
    # ours: gallbladder scores Dice 0 in both cases and has no defined HD95 -> left out of the HD mean
    assert ours["mean_dice"] == pytest.approx(((2 / 3 + 1) / 2 + 0.0) / 2)
    assert ours["mean_hd95_mm"] == pytest.approx(4.5)
    assert ours["n_hd95_undefined"] == 2
    data = report.to_json_dict()
    assert data["official"]["mean_hd95_voxels"] == pytest.approx(0.9)
    assert data["ours"]["per_class"]["gallbladder"]["hd95_mm"] is None
    assert "aorta" in report.format_table()


def test_binary_scores_smooth_one() -> None:
    pred = np.zeros((4, 4), dtype=bool)
    gt = np.zeros((4, 4), dtype=bool)
    pred[0, :3] = True  # 3 pixels
    gt[0, 2:4] = True  # 2 pixels, 1 shared
    dice, iou = official_binary_scores(pred, gt)
    assert dice == pytest.approx((2 * 1 + 1) / (5 + 1))
    assert iou == pytest.approx((1 + 1) / (4 + 1))
    assert official_binary_scores(np.zeros((4, 4)), np.zeros((4, 4))) == (1.0, 1.0)


class _Threshold(nn.Module):
    """A 'network' whose class-1 logit is its normalised input: predicts raw > 0.5."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.config = type("Config", (), {"img_size": size, "num_classes": 2})()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], dim=1)


def test_official_slice_path_keeps_geometry(transunet_root) -> None:
    """Zoom to the network size and back (the official test's order 3 / order 0) must land the
    prediction on the slice grid: a threshold 'network' reproduces the thresholded real CT."""
    from braunet.repro.transunet import TransUNetFolder

    volume = TransUNetFolder(transunet_root).read_volume("case01sm")
    pred = official_predict_volume(_Threshold(256), volume.image)  # up-sampling: little detail lost
    truth = volume.image > 0.5
    assert pred.shape == volume.image.shape
    overlap = 2 * np.count_nonzero(pred.astype(bool) & truth) / (np.count_nonzero(pred) + np.count_nonzero(truth))
    assert overlap > 0.9, overlap
