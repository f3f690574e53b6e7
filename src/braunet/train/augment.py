"""Paired geometric augmentation of 2-D slices and RGB frames (NumPy and SciPy).

Every function takes ``image`` of shape (H, W) or channel-last (H, W, C), ``label`` of shape
(H, W) and a ``np.random.Generator``; it returns a new ``(image, label)`` pair, C-contiguous (so
``torch.from_numpy`` accepts it), with the dtypes of the inputs. The same geometric transform is
applied to every channel of the image and to the label.

Labels are always resampled with nearest neighbour (order 0): the output holds only values of the
input label plus the fill value 0 (background), never a blend of two class ids. Images use the
``image_order`` given (0 nearest, 1 bilinear, 3 cubic spline); integer images are interpolated in
float32, then rounded and clipped to their dtype's range.

:func:`official_synapse_augment` is the ``RandomGenerator`` transform that TransUNet and Swin-Unet
train Synapse with (the BRAU-Net++ repository defines it but trains with imgaug; see there).
:func:`random_flip` and
:func:`random_affine` follow the official albumentations ISIC / CVC-ClinicDB pipeline
(``HorizontalFlip(0.25)``, ``VerticalFlip(0.25)``, ``ShiftScaleRotate``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

__all__ = [
    "official_synapse_augment",
    "random_affine",
    "random_flip",
    "random_rot90_flip",
    "random_rotate",
]

Pair = tuple[np.ndarray, np.ndarray]


def _check(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    image, label = np.asarray(image), np.asarray(label)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if label.ndim != 2 or label.shape != image.shape[:2]:
        raise ValueError(f"label must be (H, W) = {image.shape[:2]}, got shape {label.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return image, label


def _resample(
    image: np.ndarray, order: int, warp: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """Apply the 2-D ``warp(plane, order)`` to each channel of an (H, W) or (H, W, C) image.

    reason: one 2-D call per channel keeps spline prefiltering from mixing channels.
    """
    work = image
    if order > 0 and not np.issubdtype(image.dtype, np.floating):
        work = image.astype(np.float32)  # reason: integer outputs would truncate, not round
    if work.ndim == 2:
        out = warp(work, order)
    else:
        out = np.stack([warp(work[..., c], order) for c in range(work.shape[-1])], axis=-1)
    if out.dtype != image.dtype:
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        out = out.astype(image.dtype)
    return out


def _contiguous(image: np.ndarray, label: np.ndarray) -> Pair:
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def random_rot90_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """Rotate by ``k * 90`` degrees (k uniform in 0..3), then flip along axis 0 or 1.

    Draws, in order: ``k = rng.integers(0, 4)``, ``axis = rng.integers(0, 2)`` (the official
    ``random_rot_flip``). Lossless and exactly invertible; odd ``k`` swaps H and W. A flip after a
    rotation is always a reflection, so, as in the official code, the output is one of the 4
    mirror images of the input (each with probability 1/4), never the input or a pure rotation.
    """
    image, label = _check(image, label, rng)
    k = int(rng.integers(0, 4))
    axis = int(rng.integers(0, 2))
    image = np.flip(np.rot90(image, k, axes=(0, 1)), axis=axis)
    label = np.flip(np.rot90(label, k, axes=(0, 1)), axis=axis)
    return _contiguous(image, label)


def random_rotate(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    max_angle: int = 20,
    image_order: int = 0,
) -> Pair:
    """Rotate by an integer angle in ``[-max_angle, max_angle)`` degrees about the centre.

    The half-open range and the integer angle copy the official ``np.random.randint(-20, 20)``.
    The shape is kept (corners leave, zeros come in). ``image_order=0`` is what the official
    transform uses for the image too (which keeps CT intensities unblended); pass 1 or 3 for
    bilinear or cubic images. The label is always nearest neighbour.
    """
    image, label = _check(image, label, rng)
    angle = float(rng.integers(-max_angle, max_angle))

    def warp(plane: np.ndarray, order: int) -> np.ndarray:
        return ndimage.rotate(plane, angle, reshape=False, order=order, mode="constant", cval=0)

    return _contiguous(_resample(image, image_order, warp), warp(label, 0))


def _zoom_to(image: np.ndarray, label: np.ndarray, out_size: tuple[int, int]) -> Pair:
    height, width = label.shape
    if (height, width) == out_size:
        return image, label
    factors = (out_size[0] / height, out_size[1] / width)

    def warp(plane: np.ndarray, order: int) -> np.ndarray:
        return ndimage.zoom(plane, factors, order=order)

    return _resample(image, 3, warp), warp(label, 0)


def official_synapse_augment(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    out_size: int | tuple[int, int] = 224,
) -> Pair:
    """The TransUNet / Swin-Unet Synapse training transform (``RandomGenerator``), without the
    tensor step.

    The BRAU-Net++ repository defines ``RandomGenerator`` too, but its ``Synapse_dataset`` ignores
    it and augments training slices with an imgaug ``SomeOf((0, 4), ...)`` pipeline (flips, noise,
    blur, scale, rotation, shear, piecewise affine, translation) inherited from MISSFormer. This is
    the simpler, widely reproduced protocol.

    With probability 0.5 :func:`random_rot90_flip`; otherwise with probability 0.5
    :func:`random_rotate` (order 0 for image and label); then zoom to ``out_size`` with a cubic
    spline for the image (order 3) and nearest neighbour for the label (order 0).

    Args:
        image: CT slice (H, W) (already clipped and scaled to [0, 1]) or (H, W, C).
        label: Class ids (H, W).
        rng: Source of randomness; draws ``rng.random()`` once or twice, then the transform's own.
        out_size: Output (H, W), or one int for a square.

    Returns:
        ``(image, label)`` of spatial shape ``out_size``.
    """
    image, label = _check(image, label, rng)
    size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"out_size must be a positive int or (H, W), got {out_size!r}")
    if rng.random() > 0.5:
        image, label = random_rot90_flip(image, label, rng)
    elif rng.random() > 0.5:
        image, label = random_rotate(image, label, rng)
    return _contiguous(*_zoom_to(image, label, (int(size[0]), int(size[1]))))


def random_flip(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    p_horizontal: float = 0.25,
    p_vertical: float = 0.25,
) -> Pair:
    """Flip left-right with probability ``p_horizontal``, then up-down with ``p_vertical``.

    The defaults are the official ISIC / CVC-ClinicDB probabilities. Draws ``rng.random()`` twice.
    """
    image, label = _check(image, label, rng)
    if rng.random() < p_horizontal:
        image, label = image[:, ::-1], label[:, ::-1]
    if rng.random() < p_vertical:
        image, label = image[::-1], label[::-1]
    return _contiguous(image, label)


def random_affine(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    shift_limit: float = 0.0625,
    scale_limit: float = 0.1,
    rotate_limit: float = 45.0,
    image_order: int = 1,
    mode: str = "mirror",
) -> Pair:
    """Random shift, scale and rotation about the image centre (albumentations' ShiftScaleRotate).

    Draws uniformly: an angle in ``[-rotate_limit, rotate_limit]`` degrees, a scale in
    ``[1 - scale_limit, 1 + scale_limit]``, and a shift in ``[-shift_limit, shift_limit]`` times the
    height and width. The output keeps the input shape. The defaults are albumentations'; the
    official ISIC / CVC pipeline sets ``shift_limit=0`` and applies it with probability 0.25.

    Args:
        image_order: Image interpolation (1 bilinear, as albumentations); the label is order 0.
        mode: SciPy border mode for both; ``"mirror"`` is OpenCV's BORDER_REFLECT_101 (the
            albumentations default) and, like ``"constant"`` (fill 0), keeps labels valid.
    """
    image, label = _check(image, label, rng)
    if not 0 <= scale_limit < 1:
        raise ValueError(f"scale_limit must be in [0, 1), got {scale_limit}")
    angle = np.deg2rad(rng.uniform(-rotate_limit, rotate_limit))
    scale = rng.uniform(1 - scale_limit, 1 + scale_limit)
    shift = rng.uniform(-shift_limit, shift_limit, size=2) * np.array(label.shape)
    # output o = scale * R @ (i - c) + c + shift, so input i = R.T @ (o - c - shift) / scale + c
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, sin], [-sin, cos]]) / scale  # R.T / scale, axes (row, col)
    centre = (np.array(label.shape) - 1) / 2
    offset = centre - matrix @ (centre + shift)

    def warp(plane: np.ndarray, order: int) -> np.ndarray:
        return ndimage.affine_transform(plane, matrix, offset, order=order, mode=mode, cval=0)

    return _contiguous(_resample(image, image_order, warp), warp(label, 0))
