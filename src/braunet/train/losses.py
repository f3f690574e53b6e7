"""Segmentation losses of the official BRAU-Net++ trainers, with shape checks.

* Multi-class (Synapse, 9 classes): ``0.4 * CE + 0.6 * Dice`` (:class:`DiceCELoss`), where the Dice
  term is the TransUNet / Swin-Unet / BRAU-Net++ ``DiceLoss`` (:class:`DiceLoss`).
* Binary (ISIC, CVC-ClinicDB; one sigmoid channel): the official trainer uses only the smooth-1
  Dice loss (:class:`SoftDiceLoss`). :func:`make_loss` adds BCE to it (:class:`BinaryDiceBCELoss`):
  BCE gives every pixel a gradient from the first step, while a batch-global Dice is flat when the
  foreground is tiny or the prediction is far off.

Every Dice here sums over the whole batch (one ratio per class per batch, not per image), as the
official code does. Probabilities are computed in float32: under fp16 the sums of a 24 x 224 x 224
batch overflow (65504 is the fp16 maximum).

Shapes use ``*S`` for the spatial axes: (H, W) for the BRAU-Net++ 2-D networks; 3-D also works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BinaryDiceBCELoss", "DiceCELoss", "DiceLoss", "SoftDiceLoss", "make_loss"]


def _check_multiclass(logits: Tensor, target: Tensor, num_classes: int | None) -> int:
    """Validate (B, C, *S) logits against (B, *S) integer targets; return C."""
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    channels = logits.shape[1]
    if num_classes is not None and channels != num_classes:
        raise ValueError(
            f"logits have {channels} channels but the loss expects {num_classes} classes"
        )
    if channels < 2:
        raise ValueError("softmax losses need at least 2 channels; use BinaryDiceBCELoss for 1")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        hint = " (squeeze the channel axis: target[:, 0])" if target.ndim == logits.ndim else ""
        raise ValueError(
            f"target must have shape {expected} for logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}{hint}"
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class ids (int64), got {target.dtype}")
    if target.numel():
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= channels:
            raise ValueError(f"target values must be in [0, {channels - 1}], got [{low}, {high}]")
    return channels


def _check_binary(logits: Tensor, target: Tensor) -> Tensor:
    """Validate (B, 1, *S) logits against (B, *S) or (B, 1, *S) 0/1 targets; return the target
    as float with the logits' shape."""
    if logits.ndim < 3 or logits.shape[1] != 1:
        raise ValueError(f"logits must be (B, 1, *spatial), got shape {tuple(logits.shape)}")
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(
            f"target must have shape {tuple(logits.shape)} or "
            f"{(logits.shape[0], *logits.shape[2:])}, got {tuple(target.shape)}"
        )
    if target.numel() and bool(((target != 0) & (target != 1)).any()):
        # reason: 0/255 masks straight from PNG files are the usual mistake
        raise ValueError(
            f"binary targets must be 0 or 1, got values up to {target.max().item()} "
            "(convert masks with mask > 0)"
        )
    return target.float()


def _valid_weight(valid: Tensor, target: Tensor) -> Tensor:
    """(B, *S) bool mask of the pixels that count -> float weights; checked against the target."""
    if tuple(valid.shape) != tuple(target.shape):
        raise ValueError(f"valid must have the target's shape {tuple(target.shape)}, got {tuple(valid.shape)}")
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool mask, got {valid.dtype}")
    return valid.float()


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of per-pixel ``values`` (B, *S) over the valid pixels (0 when there are none)."""
    weight = _valid_weight(valid, values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


class DiceLoss(nn.Module):
    """Official multi-class soft Dice loss over softmax probabilities.

    Per class ``c``, over the whole batch: ``1 - (2 * sum(p_c * t_c) + smooth) /
    (sum(p_c ** 2) + sum(t_c ** 2) + smooth)``, then the mean over all classes, background
    included, with ``smooth = 1e-5`` (``DiceLoss`` of the official ``synapse_train_test/utils.py``).

    Args:
        num_classes: Expected channel count; ``None`` accepts any count >= 2.
        smooth: Added to numerator and denominator.

    Shapes:
        logits: (B, C, *S) raw network output; target: (B, *S) integer class ids in [0, C);
        valid: optional (B, *S) bool, the pixels that count (e.g. the labelled part of a slice).
        Returns a scalar.
    """

    def __init__(self, num_classes: int | None = None, smooth: float = 1e-5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        channels = _check_multiclass(logits, target, self.num_classes)
        probs = torch.softmax(logits.float(), dim=1)
        one_hot = F.one_hot(target.long(), channels).movedim(-1, 1).float()  # (B, C, *S)
        if valid is not None:
            weight = _valid_weight(valid, target).unsqueeze(1)  # (B, 1, *S)
            probs, one_hot = probs * weight, one_hot * weight
        dims = (0, *range(2, logits.ndim))  # batch and space: one ratio per class
        intersect = (probs * one_hot).sum(dims)
        z_sum = (probs * probs).sum(dims)
        y_sum = one_hot.sum(dims)  # one_hot ** 2 == one_hot
        dice = (2 * intersect + self.smooth) / (z_sum + y_sum + self.smooth)
        return (1 - dice).mean()


class DiceCELoss(nn.Module):
    """Official Synapse hybrid loss ``ce_weight * CE + dice_weight * Dice`` (0.4 and 0.6).

    Args:
        ce_weight: Weight of the mean cross-entropy.
        dice_weight: Weight of :class:`DiceLoss`.
        num_classes: Expected channel count; ``None`` accepts any count >= 2.

    Shapes:
        logits: (B, C, *S); target: (B, *S) integer class ids; valid: optional (B, *S) bool, the
        pixels that count. Returns a scalar.
    """

    def __init__(
        self, ce_weight: float = 0.4, dice_weight: float = 0.6, num_classes: int | None = None
    ) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.dice = DiceLoss(num_classes)

    def terms(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
        """Return ``{"loss", "ce", "dice"}`` (scalars), so a training loop can log both terms."""
        dice = self.dice(logits, target, valid)  # validates the shapes and values first
        if valid is None:
            ce = F.cross_entropy(logits.float(), target.long())
        else:
            ce = _masked_mean(F.cross_entropy(logits.float(), target.long(), reduction="none"), valid)
        return {"loss": self.ce_weight * ce + self.dice_weight * dice, "ce": ce, "dice": dice}

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.terms(logits, target, valid)["loss"]


class SoftDiceLoss(nn.Module):
    """Official ISIC / CVC-ClinicDB Dice loss over sigmoid probabilities.

    ``1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)`` with ``smooth = 1``, summed over
    the whole batch (``DiceLoss_binary`` of the official ``isic_cvc_train_test/loss.py``). Unlike
    :class:`DiceLoss`, the denominator uses plain sums, not squares.

    Shapes:
        logits: (B, 1, *S) raw network output; target: (B, *S) or (B, 1, *S), values 0 or 1
        (any dtype); valid: optional (B, *S) bool, the pixels that count. Returns a scalar.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        target = _check_binary(logits, target)
        probs = torch.sigmoid(logits.float())
        if valid is not None:
            weight = _valid_weight(valid, target[:, 0]).unsqueeze(1)
            probs, target = probs * weight, target * weight
        intersect = (probs * target).sum()
        return 1 - (2 * intersect + self.smooth) / (probs.sum() + target.sum() + self.smooth)


class BinaryDiceBCELoss(nn.Module):
    """``dice_weight * SoftDiceLoss + bce_weight * BCE`` for one-channel (sigmoid) networks.

    The default 0.6 / 0.4 split copies the proportions of the official Synapse hybrid, with BCE in
    the role that CE plays there.

    Args:
        dice_weight: Weight of :class:`SoftDiceLoss` (smooth 1).
        bce_weight: Weight of the mean binary cross-entropy on logits.

    Shapes:
        logits: (B, 1, *S); target: (B, *S) or (B, 1, *S), values 0 or 1; valid: optional
        (B, *S) bool, the pixels that count. Returns a scalar.
    """

    def __init__(self, dice_weight: float = 0.6, bce_weight: float = 0.4) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight
        self.dice = SoftDiceLoss()

    def terms(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
        """Return ``{"loss", "bce", "dice"}`` (scalars), so a training loop can log both terms."""
        target = _check_binary(logits, target)
        dice = self.dice(logits, target, valid)
        if valid is None:
            bce = F.binary_cross_entropy_with_logits(logits.float(), target)
        else:
            bce = _masked_mean(F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")[:, 0], valid)
        return {"loss": self.dice_weight * dice + self.bce_weight * bce, "bce": bce, "dice": dice}

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.terms(logits, target, valid)["loss"]


def make_loss(num_classes: int) -> nn.Module:
    """The training loss for a network with ``num_classes`` output channels.

    ``num_classes >= 2``: :class:`DiceCELoss` (softmax; targets are class ids).
    ``num_classes == 1``: :class:`BinaryDiceBCELoss` (sigmoid; targets are 0/1 masks).
    """
    if num_classes >= 2:
        return DiceCELoss(num_classes=num_classes)
    if num_classes == 1:
        return BinaryDiceBCELoss()
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
