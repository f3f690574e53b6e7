"""The official recipes' augmentation pipelines, without imgaug or albumentations (NumPy, SciPy, scikit-image).

Two pipelines of the official BRAU-Net++ code that :mod:`braunet.train.augment` does not cover:

* :func:`missformer_augment` - what the official Synapse training really applies: the imgaug
  ``SomeOf((0, 4), [...], random_order=True)`` list that ``Synapse_dataset`` inherited from
  MISSFormer (it ignores the ``RandomGenerator`` it defines). 0 to 4 of nine transforms, chosen
  without replacement, in random order.
* :func:`albumentations_isic_augment` - the ISIC / CVC-ClinicDB albumentations list after
  ``Resize`` and before ``Normalize``: flips, ShiftScaleRotate and CoarseDropout.

Both take ``image`` (H, W) or channel-last (H, W, C), ``label`` (H, W) and a
``np.random.Generator``, and return a new C-contiguous pair. Labels are resampled with nearest
neighbour and filled with 0 (background) where the image has no source pixel, as imgaug does for
segmentation maps. Random streams differ from imgaug's and albumentations', so a run is comparable
statistically, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from braunet.train.augment import random_affine, random_flip, random_rot90_flip, random_rotate

__all__ = [
    "MISSFORMER_TRANSFORMS",
    "albumentations_isic_augment",
    "coarse_dropout",
    "missformer_augment",
    "piecewise_affine",
    "transunet_augment",
]

Pair = tuple[np.ndarray, np.ndarray]


def _planes(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a 2-D ``fn`` to each channel of (H, W) or (H, W, C)."""
    if image.ndim == 2:
        return fn(image)
    return np.stack([fn(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def _affine_about_centre(image: np.ndarray, label: np.ndarray, forward: np.ndarray, shift: np.ndarray) -> Pair:
    """Warp by ``out = forward @ (in - c) + c + shift`` in (row, col) pixel coordinates.

    Image bilinear (imgaug's default order 1), label nearest; constant 0 outside (imgaug's default
    mode and cval).
    """
    inverse = np.linalg.inv(forward)
    centre = (np.array(label.shape, dtype=np.float64) - 1) / 2
    offset = centre - inverse @ (centre + shift)
    image_f = image.astype(np.float32, copy=False)
    out = _planes(image_f, lambda p: ndimage.affine_transform(p, inverse, offset, order=1, mode="constant", cval=0.0))
    lab = ndimage.affine_transform(label, inverse, offset, order=0, mode="constant", cval=0)
    return out.astype(image.dtype, copy=False), lab


def _flipud(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """imgaug ``Flipud(0.5)``: flip rows with probability 0.5."""
    if rng.random() < 0.5:
        return image[::-1], label[::-1]
    return image, label


def _fliplr(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """imgaug ``Fliplr(0.5)``: flip columns with probability 0.5."""
    if rng.random() < 0.5:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _noise(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """imgaug ``AdditiveGaussianNoise(scale=0.005 * 255)``: sigma 1.275 in the image's own units.

    The official slices are floats in [0, 1], so this is very strong noise; it is what the
    official code does (see the recipe's deviations).
    """
    noisy = image.astype(np.float32) + rng.normal(0.0, 0.005 * 255, size=image.shape).astype(np.float32)
    return noisy.astype(image.dtype, copy=False), label


def _blur(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """imgaug ``GaussianBlur(sigma=1.0)`` (reflect-101 borders, SciPy's "mirror")."""
    blurred = _planes(image.astype(np.float32), lambda p: ndimage.gaussian_filter(p, 1.0, mode="mirror"))
    return blurred.astype(image.dtype, copy=False), label


def _scale(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """imgaug ``Affine(scale={"x": (0.5, 2), "y": (0.5, 2)})``: independent uniform factors."""
    sy, sx = rng.uniform(0.5, 2.0, size=2)
    return _affine_about_centre(image, label, np.diag([sy, sx]), np.zeros(2))


def _rotate(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """imgaug ``Affine(rotate=(-40, 40))``: uniform angle in degrees."""
    angle = np.deg2rad(rng.uniform(-40.0, 40.0))
    cos, sin = np.cos(angle), np.sin(angle)
    return _affine_about_centre(image, label, np.array([[cos, -sin], [sin, cos]]), np.zeros(2))


def _shear(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """imgaug ``Affine(shear=(-16, 16))``: shear along x (columns move with the row) by a uniform angle."""
    shear = np.tan(np.deg2rad(rng.uniform(-16.0, 16.0)))
    return _affine_about_centre(image, label, np.array([[1.0, 0.0], [shear, 1.0]]), np.zeros(2))


def _translate(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """imgaug ``Affine(translate_percent={"x": (-0.2, 0.2), "y": (-0.2, 0.2)})``."""
    shift = rng.uniform(-0.2, 0.2, size=2) * np.array(label.shape, dtype=np.float64)
    return _affine_about_centre(image, label, np.eye(2), shift)


def piecewise_affine(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.008, 0.03),
    grid: int = 4,
    step: int = 4,
) -> Pair:
    """imgaug ``PiecewiseAffine(scale=(0.008, 0.03))``: a ``grid x grid`` lattice of control points,
    each moved by normal noise of sigma ``s * height`` (rows) and ``s * width`` (columns), with
    ``s`` uniform in ``scale``; the image follows the piecewise-affine map between the triangles.

    The map is evaluated every ``step`` pixels and interpolated linearly in between (the map is
    linear inside each triangle, so this only rounds the creases; it is ~10x faster than
    evaluating every pixel of a 512 x 512 slice). Pixels mapped from outside the lattice are 0.
    """
    from skimage.transform import PiecewiseAffineTransform

    height, width = label.shape
    s = rng.uniform(*scale)
    rows, cols = np.meshgrid(np.linspace(0, height - 1, grid), np.linspace(0, width - 1, grid), indexing="ij")
    src = np.stack([cols.ravel(), rows.ravel()], axis=1)  # scikit-image points are (x, y)
    dst = src + rng.normal(0.0, s, size=src.shape) * np.array([width, height])
    # the transform maps output points to input points (a warp's inverse map)
    if hasattr(PiecewiseAffineTransform, "from_estimate"):  # scikit-image >= 0.26
        transform = PiecewiseAffineTransform.from_estimate(src, dst)
    else:
        transform = PiecewiseAffineTransform()
        transform = transform if transform.estimate(src, dst) else None
    if not transform:  # reason: a degenerate triangulation (points jittered onto each other)
        return image, label
    coarse_r = np.linspace(0, height - 1, max(2, -(-height // step) + 1))
    coarse_c = np.linspace(0, width - 1, max(2, -(-width // step) + 1))
    cr, cc = np.meshgrid(coarse_r, coarse_c, indexing="ij")
    mapped = transform(np.stack([cc.ravel(), cr.ravel()], axis=1))  # (n, 2) input (x, y); -1 outside
    outside = np.all(mapped == -1, axis=1).reshape(cr.shape)
    maps = [np.where(outside, np.nan, mapped[:, i].reshape(cr.shape)) for i in (1, 0)]  # rows, cols
    fine_r = np.arange(height) * (len(coarse_r) - 1) / max(height - 1, 1)
    fine_c = np.arange(width) * (len(coarse_c) - 1) / max(width - 1, 1)
    fr, fc = np.meshgrid(fine_r, fine_c, indexing="ij")
    coords = np.stack([ndimage.map_coordinates(m, [fr, fc], order=1, mode="nearest") for m in maps])
    coords[:, np.isnan(coords).any(axis=0)] = -1e6  # reason: outside the lattice -> constant fill
    out = _planes(
        image.astype(np.float32),
        lambda p: ndimage.map_coordinates(p, coords, order=1, mode="constant", cval=0.0).astype(np.float32),
    )
    lab = ndimage.map_coordinates(label, coords, order=0, mode="constant", cval=0)
    return out.astype(image.dtype, copy=False), lab.astype(label.dtype, copy=False)


MISSFORMER_TRANSFORMS: tuple[Callable[[np.ndarray, np.ndarray, np.random.Generator], Pair], ...] = (
    _flipud, _fliplr, _noise, _blur, _scale, _rotate, _shear, piecewise_affine, _translate,
)


def missformer_augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """The official Synapse training augmentation (imgaug ``SomeOf((0, 4), ..., random_order=True)``).

    Draws ``n`` uniform in 0..4, picks ``n`` of :data:`MISSFORMER_TRANSFORMS` without replacement
    and applies them in the drawn order.

    Args:
        image: CT slice (H, W), clipped and scaled to [0, 1] (TransUNet format), or (H, W, C).
        label: class ids (H, W).
        rng: source of randomness.
    Returns:
        ``(image, label)`` of the input shape and dtypes.
    """
    if label.shape != image.shape[:2]:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[:2]}")
    count = int(rng.integers(0, 5))
    for k in rng.permutation(len(MISSFORMER_TRANSFORMS))[:count]:
        image, label = MISSFORMER_TRANSFORMS[int(k)](image, label, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def transunet_augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """TransUNet's ``RandomGenerator`` (the paper's description) without its final zoom.

    With probability 0.5 a rot90 + flip, otherwise with probability 0.5 a rotation by an integer
    angle in [-20, 20) (order 0 for image and label), with the same draws as
    :func:`braunet.train.augment.official_synapse_augment`; the zoom to the network size is left to
    the dataset, so non-square slices turned by 90 degrees are not squeezed back to their old shape.
    """
    if rng.random() > 0.5:
        return random_rot90_flip(image, label, rng)
    if rng.random() > 0.5:
        return random_rotate(image, label, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def coarse_dropout(
    image: np.ndarray,
    rng: np.random.Generator,
    holes: int = 8,
    height: int = 8,
    width: int = 8,
    fill: float | Sequence[float] = 0.0,
) -> np.ndarray:
    """albumentations 0.4 ``CoarseDropout()`` defaults: ``holes`` rectangles of ``height x width``
    pixels at uniform positions (inside the image) set to ``fill`` (per channel if a sequence).
    The mask is not changed (``mask_fill_value=None``). Returns a new array.
    """
    out = np.array(image, copy=True)
    rows, cols = out.shape[:2]
    h, w = min(height, rows), min(width, cols)
    for _ in range(holes):
        top = int(rng.integers(0, rows - h + 1))
        left = int(rng.integers(0, cols - w + 1))
        out[top : top + h, left : left + w] = fill
    return out


def albumentations_isic_augment(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    params: Mapping[str, Any],
    fill: float | Sequence[float] = 0.0,
) -> Pair:
    """The official ISIC / CVC-ClinicDB training transforms between Resize and Normalize.

    ``HorizontalFlip(p_hflip)``, ``VerticalFlip(p_vflip)``, ``ShiftScaleRotate`` with probability
    ``shift_scale_rotate.p`` (bilinear image, nearest label, reflect-101 borders), then
    ``CoarseDropout`` with probability ``coarse_dropout.p`` on the image only.

    Args:
        image: (H, W, 3) at the network size; normalised or not (see ``fill``).
        label: (H, W) 0/1.
        params: the recipe's ``augmentation`` object (see ``recipes/isic.json``).
        fill: value of a dropped pixel: 0 for raw images, ``-mean / std`` per channel for normalised.
    """
    image, label = random_flip(image, label, rng, p_horizontal=params["p_hflip"], p_vertical=params["p_vflip"])
    ssr = params["shift_scale_rotate"]
    if rng.random() < ssr["p"]:
        image, label = random_affine(
            image, label, rng, shift_limit=ssr["shift_limit"], scale_limit=ssr["scale_limit"],
            rotate_limit=ssr["rotate_limit"], image_order=1, mode="mirror",
        )
    drop = params["coarse_dropout"]
    if rng.random() < drop["p"]:
        image = coarse_dropout(image, rng, drop["holes"], drop["height"], drop["width"], fill)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
