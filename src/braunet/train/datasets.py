"""Tensors at the network's size: :class:`PreparedSlices` and the augmenting ``Dataset`` over it.

:func:`prepare` preprocesses a :class:`~braunet.train.slices.SliceSet` with the model card's
recipe (:func:`braunet.infer.preprocess.preprocess_slices`, the one place that recipe lives) and
resizes the labels to the network's size with nearest neighbour. :class:`AugmentedSlices` wraps
the result as a ``torch.utils.data.Dataset`` with deterministic per-(epoch, index) augmentation,
so every DDP rank and every resumed run draws the same transforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from braunet.errors import InputError

if TYPE_CHECKING:
    import torch

    from braunet.train.slices import SliceSet

__all__ = ["AUGMENTATIONS", "AugmentedSlices", "PreparedSlices", "prepare"]


@dataclass
class PreparedSlices:
    """Slices preprocessed for one model.

    Attributes:
        x: (N, C, S, S) float32 network input (C = 1 for CT, 3 for RGB).
        y: (N, S, S) int64 class ids (0/1 for a binary model).
        known: (N, K) bool, which of the K = max(num_classes, 2) classes each slice annotates.
        groups, names: as in :class:`SliceSet`.
    """

    x: torch.Tensor
    y: torch.Tensor
    known: torch.Tensor
    groups: list[str]
    names: list[str]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: Sequence[int]) -> PreparedSlices:
        import torch

        index = torch.as_tensor(list(indices), dtype=torch.long)
        return PreparedSlices(
            self.x[index], self.y[index], self.known[index],
            [self.groups[i] for i in indices], [self.names[i] for i in indices],
        )

    @property
    def partial(self) -> bool:
        return not bool(self.known.all())


def prepare(slices: SliceSet, preprocessing: dict[str, Any], img_size: int, num_classes: int) -> PreparedSlices:
    """Preprocess ``slices`` with the card's recipe and resize their labels to ``img_size``.

    Images go through :func:`braunet.infer.preprocess.preprocess_slices` and labels through its
    ``resize_labels`` (nearest neighbour with the recipe's pixel-centre convention): the one
    implementation of the recipe, shared with inference.
    """
    import torch

    from braunet.infer.preprocess import preprocess_slices, resize_labels

    if not len(slices):
        raise InputError("no slices to prepare")
    classes = max(num_classes, 2)
    xs = [preprocess_slices(np.asarray(image)[None], preprocessing, img_size, spacing=spacing)
          for image, spacing in zip(slices.images, slices.spacing, strict=True)]  # fmt: skip
    ys = []
    for label, name, spacing in zip(slices.labels, slices.names, slices.spacing, strict=True):
        label = np.asarray(label)
        if label.size and label.max() >= classes:
            raise InputError(f"{name}: label value {label.max()} is not a class of a {classes}-class model")
        ys.append(resize_labels(label[None], (img_size, img_size), preprocessing, spacing)[0].astype(np.int64))
    known = torch.ones(len(slices), classes, dtype=torch.bool)
    for i, annotated in enumerate(slices.known):
        if annotated is not None:
            known[i] = False
            known[i, 0] = True
            known[i, list(annotated)] = True
    return PreparedSlices(
        x=torch.cat(xs).float().contiguous(),
        y=torch.from_numpy(np.stack(ys)),
        known=known,
        groups=list(slices.groups),
        names=list(slices.names),
    )


AUGMENTATIONS = ("none", "ct", "rgb", "site")


class AugmentedSlices:
    """``torch.utils.data.Dataset`` over :class:`PreparedSlices` with paired augmentation.

    Item ``i`` of epoch ``e`` is transformed with ``np.random.default_rng((seed, e, i))``: the same on
    every DDP rank, in every DataLoader worker and after a resume. Call :meth:`set_epoch` each epoch.

    Kinds:
        ``"ct"``: with probability 0.5 a small shift/scale/rotation (+-20 degrees, +-10 % scale,
            mirror border). No flips or 90 degree turns: they swap the patient's left and right, and
            left and right kidney are separate classes that a model trained on few subjects would then
            have to tell apart from context alone.
        ``"rgb"``: with probability 0.5 a rot90 + flip (endoscopy and dermoscopy have no handedness),
            then with probability 0.5 a shift/scale/rotation.
        ``"site"``: ``policy`` (a :func:`braunet.train.augment.site_augment` policy, or any
            ``(image (S, S, C), label (S, S), rng) -> (image, label)`` on the normalised input).
        ``"none"``: items as prepared.
    Returns ``(x (C, S, S) float32, y (S, S) int64, known (K,) bool)``.
    """

    def __init__(self, data: PreparedSlices, kind: str = "none", seed: int = 0, policy: Any = None) -> None:
        if kind not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {kind!r}")
        if (kind == "site") != (policy is not None):
            raise ValueError("the 'site' augmentation, and only it, takes a policy")
        self.data, self.kind, self.seed, self.epoch, self.policy = data, kind, seed, 0, policy

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        import torch

        from braunet.train.augment import random_affine, random_rot90_flip

        x, y, known = self.data.x[index], self.data.y[index], self.data.known[index]
        if self.kind == "none":
            return x, y, known
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image = x.numpy().transpose(1, 2, 0)  # (S, S, C): the augment functions are channel-last
        label = y.numpy()
        if self.policy is not None:
            image, label = self.policy(image, label, rng)
        elif self.kind == "rgb" and rng.random() < 0.5:
            image, label = random_rot90_flip(image, label, rng)
        if self.policy is None and rng.random() < 0.5:
            image, label = random_affine(
                image, label, rng, shift_limit=0.0625, scale_limit=0.1, rotate_limit=20.0, mode="mirror"
            )
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return x, torch.from_numpy(np.ascontiguousarray(label)), known

