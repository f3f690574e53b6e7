"""Losses: the official formulas, hand-computed values, shape and value checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from braunet.train.losses import (
    BinaryDiceBCELoss,
    DiceCELoss,
    DiceLoss,
    SoftDiceLoss,
    make_loss,
)


def _official_dice_loss(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``DiceLoss(n_classes)(logits, target, softmax=True)`` of the official utils.py, literally."""
    inputs = torch.softmax(logits, dim=1)
    one_hot = torch.cat([(target == i).unsqueeze(1) for i in range(n_classes)], dim=1).float()
    loss = 0.0
    for i in range(n_classes):
        score, tgt = inputs[:, i], one_hot[:, i]
        smooth = 1e-5
        intersect = torch.sum(score * tgt)
        y_sum = torch.sum(tgt * tgt)
        z_sum = torch.sum(score * score)
        loss += 1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)
    return loss / n_classes


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 12, 10, generator=gen)
    target = torch.randint(0, 5, (3, 12, 10), generator=gen)
    return logits, target


# --- multi-class ---------------------------------------------------------------------------------


def test_dice_loss_matches_the_official_formula(batch) -> None:
    logits, target = batch
    expected = _official_dice_loss(logits, target, 5)
    torch.testing.assert_close(DiceLoss(5)(logits, target), expected)


def test_dice_loss_hand_computed_for_uniform_softmax() -> None:
    logits = torch.zeros(1, 2, 2, 2)  # p = 0.5 everywhere
    target = torch.zeros(1, 2, 2, dtype=torch.long)  # all background
    s = 1e-5
    background = 1 - (2 * 2.0 + s) / (1.0 + 4.0 + s)  # I = 4 * 0.5, sum p^2 = 4 * 0.25, sum t = 4
    foreground = 1 - s / (1.0 + s)  # I = 0, sum p^2 = 1, sum t = 0
    assert DiceLoss()(logits, target).item() == pytest.approx((background + foreground) / 2)


def test_dice_loss_is_near_zero_for_a_confident_correct_prediction(batch) -> None:
    _, target = batch
    logits = 30.0 * F.one_hot(target, 5).movedim(-1, 1).float()
    assert DiceLoss(5)(logits, target).item() < 1e-6


def test_dice_ce_loss_is_the_official_weighted_sum(batch) -> None:
    logits, target = batch
    loss_fn = DiceCELoss(num_classes=5)
    terms = loss_fn.terms(logits, target)
    expected = 0.4 * F.cross_entropy(logits, target) + 0.6 * _official_dice_loss(logits, target, 5)
    torch.testing.assert_close(loss_fn(logits, target), expected)
    torch.testing.assert_close(terms["loss"], 0.4 * terms["ce"] + 0.6 * terms["dice"])


def test_losses_give_finite_gradients(batch) -> None:
    logits, target = batch
    logits = logits.clone().requires_grad_(True)
    DiceCELoss()(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_half_precision_logits_are_computed_in_float32(batch) -> None:
    logits, target = batch
    loss = DiceCELoss()(logits.to(torch.bfloat16), target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(DiceCELoss()(logits, target).item(), abs=2e-2)


@pytest.mark.parametrize(
    ("logits_shape", "target", "message"),
    [
        ((2, 5, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long), "squeeze the channel axis"),
        ((2, 5, 8, 8), torch.zeros(2, 8, 8), "integer class ids"),
        ((2, 5, 8, 8), torch.full((2, 8, 8), 5), r"\[0, 4\], got \[5, 5\]"),
        ((2, 4, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long), "expects 5 classes"),
        ((2, 5), torch.zeros(2, dtype=torch.long), r"\(B, C, \*spatial\)"),
    ],
)
def test_multiclass_shape_and_value_errors(logits_shape, target, message) -> None:
    with pytest.raises(ValueError, match=message):
        DiceCELoss(num_classes=5)(torch.zeros(logits_shape), target)


def test_softmax_dice_refuses_one_channel() -> None:
    with pytest.raises(ValueError, match="BinaryDiceBCELoss"):
        DiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


# --- binary --------------------------------------------------------------------------------------


def test_soft_dice_hand_computed() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # 1 - (2 * 0.5 + 1) / (2 + 1 + 1)
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(0.5)


def test_binary_target_with_or_without_channel_axis_and_any_dtype() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 6, 6, generator=gen)
    target = torch.randint(0, 2, (2, 6, 6), generator=gen)
    loss_fn = BinaryDiceBCELoss()
    reference = loss_fn(logits, target.float())
    torch.testing.assert_close(loss_fn(logits, target.unsqueeze(1)), reference)
    torch.testing.assert_close(loss_fn(logits, target.bool()), reference)


def test_binary_dice_bce_is_the_weighted_sum() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[1, 0], [0, 0]]])
    terms = BinaryDiceBCELoss(dice_weight=0.6, bce_weight=0.4).terms(logits, target)
    assert terms["bce"].item() == pytest.approx(math.log(2))  # sigmoid(0) = 0.5 for every pixel
    assert terms["dice"].item() == pytest.approx(0.5)
    assert terms["loss"].item() == pytest.approx(0.6 * 0.5 + 0.4 * math.log(2))


def test_binary_errors() -> None:
    with pytest.raises(ValueError, match="mask > 0"):
        SoftDiceLoss()(torch.zeros(1, 1, 2, 2), torch.full((1, 2, 2), 255))
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        SoftDiceLoss()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="target must have shape"):
        BinaryDiceBCELoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 3))


# --- factory -------------------------------------------------------------------------------------


def test_make_loss_picks_the_head() -> None:
    multi = make_loss(9)
    assert isinstance(multi, DiceCELoss) and multi.dice.num_classes == 9
    assert (multi.ce_weight, multi.dice_weight) == (0.4, 0.6)
    assert isinstance(make_loss(1), BinaryDiceBCELoss)
    with pytest.raises(ValueError, match=">= 1"):
        make_loss(0)


def test_masked_losses_equal_the_losses_of_the_valid_pixels_alone() -> None:
    """``valid`` drops pixels exactly: the loss equals the loss of a batch holding only the valid ones."""
    torch.manual_seed(4)
    logits, target = torch.randn(2, 5, 8, 8), torch.randint(0, 5, (2, 8, 8))
    valid = torch.rand(2, 8, 8) > 0.3
    kept_logits = logits.movedim(1, -1)[valid].T.unsqueeze(0)  # (1, C, n_valid): pixels as a 1-D "image"
    kept_target = target[valid].unsqueeze(0)
    for loss in (DiceLoss(5), DiceCELoss(num_classes=5)):
        assert loss(logits, target, valid).item() == pytest.approx(loss(kept_logits, kept_target).item(), rel=1e-6)
    binary_logits, binary_target = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8))
    kept_binary = binary_logits[:, 0][valid].view(1, 1, -1)
    for loss in (SoftDiceLoss(), BinaryDiceBCELoss()):
        expected = loss(kept_binary, binary_target[valid].view(1, -1)).item()
        assert loss(binary_logits, binary_target, valid).item() == pytest.approx(expected, rel=1e-6)
    assert DiceCELoss()(logits, target, torch.ones_like(valid)).item() == pytest.approx(DiceCELoss()(logits, target).item())
    with pytest.raises(ValueError, match="valid must have the target's shape"):
        DiceLoss()(logits, target, valid[:, :4])
