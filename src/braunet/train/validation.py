"""Dice of a model on prepared slices, at the network's resolution (fast, for model selection).

This is what the training loop and fine-tuning use to compare checkpoints; reported figures at the
image's own resolution, with HD95 in mm, come from :mod:`braunet.train.evaluate`.

* Multi-class models: per class, Dice of all slices pooled (a slab of CT slices scores like a
  volume), over the slices where that class is annotated; the mean is over the classes present in the
  ground truth. A class absent from the ground truth is left out of the mean (its Dice would be 0
  for any false positive and 1 otherwise: a coin toss on a few pixels), and its false-positive pixel
  count is reported instead.
* Binary models: the mean over slices of the per-slice Dice of the foreground, as the official
  ISIC / CVC-ClinicDB test computes it (an empty prediction on an empty mask scores 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from braunet.train.datasets import PreparedSlices
from braunet.train.metrics import dice

__all__ = ["DiceReport", "predict_prepared", "validation_dice"]


@dataclass
class DiceReport:
    """``mean`` Dice and, per foreground class id, its Dice (None when absent from the ground truth)."""

    mean: float
    per_class: dict[int, float | None] = field(default_factory=dict)
    false_positive_pixels: dict[int, int] = field(default_factory=dict)  # classes absent from the truth
    n: int = 0

    def to_dict(self, class_names: list[str] | None = None) -> dict:
        def name(c: int) -> str:
            return class_names[c] if class_names and c < len(class_names) else str(c)

        return {
            "mean_dice": self.mean,
            "per_class_dice": {name(c): d for c, d in self.per_class.items()},
            "n_slices": self.n,
        }


def predict_prepared(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Class ids (N, S, S) int64 on the CPU for prepared inputs (N, C, S, S), in float32.

    The :class:`~braunet.infer.slices.SliceRunner` pass (eval mode during the call, restored after);
    one output channel means binary, ``sigmoid(logit) >= 0.5`` (:func:`braunet.infer.decode_labels`).
    """
    from braunet.infer.slices import SliceRunner

    runner = SliceRunner(model, None, x.shape[-1], _num_classes(model), amp=False, batch_size=batch_size)
    return torch.from_numpy(runner.predict_prepared(x)[0]).long()


def validation_dice(model: torch.nn.Module, data: PreparedSlices, batch_size: int = 8) -> DiceReport:
    """Dice of ``model`` on ``data`` (see the module docstring). Restores the model's train/eval mode."""
    pred = predict_prepared(model, data.x, batch_size).numpy()
    truth = data.y.numpy()
    known = data.known.numpy()
    classes = known.shape[1]
    if classes == 2 and _num_classes(model) == 1:
        scores = [dice(p == 1, t == 1) for p, t in zip(pred, truth, strict=True)]
        return DiceReport(mean=float(np.mean(scores)), per_class={1: float(np.mean(scores))}, n=len(scores))
    per_class: dict[int, float | None] = {}
    false_pos: dict[int, int] = {}
    for c in range(1, classes):
        rows = known[:, c]
        p, t = pred[rows] == c, truth[rows] == c
        if t.any():
            per_class[c] = dice(p, t)
        else:
            per_class[c] = None
            false_pos[c] = int(p.sum())
    defined = [d for d in per_class.values() if d is not None]
    return DiceReport(
        mean=float(np.mean(defined)) if defined else float("nan"),
        per_class=per_class,
        false_positive_pixels=false_pos,
        n=len(pred),
    )


def _num_classes(model: torch.nn.Module) -> int:
    """Output channels of a BRAU-Net++, also inside ``DistributedDataParallel``."""
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "module"):  # DistributedDataParallel
        config = getattr(model.module, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config: cannot tell its number of classes")
    return config.num_classes
