"""Paired augmentation of 2-D slices and RGB frames (NumPy and SciPy, no torch).

Every function takes ``image`` of shape (H, W) or channel-last (H, W, C), ``label`` of shape
(H, W) and a ``np.random.Generator``; it returns a new ``(image, label)`` pair, C-contiguous (so
``torch.from_numpy`` accepts it), with the dtypes of the inputs. The same geometric transform is
applied to every channel of the image and to the label.

Labels are always resampled with nearest neighbour (order 0): the output holds only values of the
input label plus the fill value 0 (background), never a blend of two class ids. Images use the
``image_order`` given (0 nearest, 1 bilinear, 3 cubic spline); integer images are interpolated in
float32, then rounded and clipped to their dtype's range.

Two layers:

* Single transforms of the published recipes. :func:`official_synapse_augment` is the
  ``RandomGenerator`` transform that TransUNet and Swin-Unet train Synapse with (the BRAU-Net++
  repository defines it but trains with imgaug; see there). :func:`random_flip` and
  :func:`random_affine` follow the official albumentations ISIC / CVC-ClinicDB pipeline
  (``HorizontalFlip(0.25)``, ``VerticalFlip(0.25)``, ``ShiftScaleRotate``).
* Site policies: what differs between scanners, hospitals and videos. :func:`site_augment` returns a
  :class:`SitePolicy` per image kind, a picklable callable ``(image, label, rng) -> (image, label)``
  whose probabilities and ranges are frozen dataclasses (:class:`GeometryParams`,
  :class:`CTIntensityParams`, :class:`RGBColourParams`; ``dataclasses.asdict`` gives what a card
  records). Geometry (flips, scale, aspect, rotation, shear, shift and an elastic field) is one
  coordinate map and one resampling (:func:`random_warp`); intensity (:func:`ct_intensity`,
  :func:`rgb_colour`) never sees the label.

Units. In training, augmentation runs on the prepared network input (``PreparedSlices`` items:
the card's recipe already applied and the slice resized to the network size S), so images arrive
in the card's normalised units ``x = (unit - mean) / std``: for CT ``unit`` is the HU window
scaled to [0, 1] (``(clip(HU, low, high) - low) / (high - low)``; with the bundled
``clip_hu [-125, 275]``, mean 0.5 and std 0.5, x = -1 is air and fat below -125 HU and x = 1 is
bone above 275 HU), for RGB ``unit = rgb / 255`` with ImageNet mean and std. A policy takes the
recipe's ``mean`` and ``std`` (1 or C values), does its intensity work on ``unit`` (clipped back to
[0, 1], the range the recipe produces) and returns ``x`` in the same units. Other units work by
choosing them: raw HU with ``mean = -low / span, std = 1 / span``; uint8 RGB with ``mean = 0,
std = 1 / 255``; [0, 1] images with 0 and 1. The constant border fill is ``unit = 0``: air below
the window for CT, black for RGB (the frame around an endoscopy image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "SITE_POLICIES",
    "CTIntensityParams",
    "GeometryParams",
    "RGBColourParams",
    "SitePolicy",
    "ct_intensity",
    "official_synapse_augment",
    "random_affine",
    "random_flip",
    "random_rot90_flip",
    "random_rotate",
    "random_warp",
    "rgb_colour",
    "site_augment",
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
    """Apply the 2-D ``warp(plane, order)`` to each channel of an (H, W) or (H, W, C) image."""
    return _warp_each_channel(image, order, lambda plane, _channel: warp(plane, order))


def _warp_each_channel(
    image: np.ndarray, order: int, warp: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """``warp(plane, channel)`` on each channel of an (H, W) (channel 0) or (H, W, C) image, interpolating
    at ``order``: integer images are warped as float32 and rounded back into their dtype's range.

    reason: one 2-D call per channel keeps spline prefiltering from mixing channels.
    """
    work = image
    if order > 0 and not np.issubdtype(image.dtype, np.floating):
        work = image.astype(np.float32)  # reason: integer outputs would truncate, not round
    if work.ndim == 2:
        out = warp(work, 0)
    else:
        out = np.stack([warp(work[..., c], c) for c in range(work.shape[-1])], axis=-1)
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


# ----------------------------------------------------------------------------------------------
# Site policies: parameters


def _range(default: tuple[float, float], *, log: bool = False) -> Any:
    """A ``(low, high)`` field; ``log`` ranges are factors (identity 1, drawn log-uniformly), the
    others offsets (identity 0, drawn uniformly). :meth:`_Params.scaled` reads the flag."""
    return field(default=default, metadata={"log": log})


_NON_NEGATIVE = ("elastic_rms", "blur_sigma", "noise_sigma")  # sizes, not offsets


class _Params:
    """Checks and strength scaling shared by the frozen parameter dataclasses below.

    Fields named ``p_*`` are probabilities; fields made by :func:`_range` are ranges.
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{type(self).__name__}.{f.name} must be a probability in [0, 1], got {value}")
            if "log" in f.metadata:
                low, high = value
                if not low <= high:
                    raise ValueError(f"{type(self).__name__}.{f.name} = {value}: low must not exceed high")
                if f.metadata["log"] and low <= 0:
                    raise ValueError(f"{type(self).__name__}.{f.name} = {value}: factors must be positive")
                if f.name in _NON_NEGATIVE and low < 0:
                    raise ValueError(f"{type(self).__name__}.{f.name} = {value}: must be >= 0")

    def scaled(self, strength: float):
        """The same parameters with every range's distance from the identity times ``strength``.

        Offsets ``(a, b)`` become ``(a * s, b * s)`` and factors ``(a, b)`` become ``(a ** s, b ** s)``
        (so a zoom range stays symmetric in log scale); probabilities stay. ``strength = 0`` turns
        every transform into the identity, which the policies then skip.
        """
        updates = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if "log" in f.metadata:
                low, high = getattr(self, f.name)
                pair = (low**strength, high**strength) if f.metadata["log"] else (low * strength, high * strength)
                updates[f.name] = (float(pair[0]), float(pair[1]))
        return dataclasses.replace(self, **updates)  # type: ignore[type-var]

    def _active(self, p_name: str, *ranges: str) -> bool:
        """True if step ``p_name`` can change anything: probability > 0 and a range off the identity."""
        if getattr(self, p_name) <= 0:
            return False
        fields = {f.name: f for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        identity = {name: 1.0 if fields[name].metadata["log"] else 0.0 for name in ranges}
        return any(tuple(getattr(self, name)) != (identity[name], identity[name]) for name in ranges)

    def _draw(self, rng: np.random.Generator, name: str) -> float:
        low, high = getattr(self, name)
        if next(f for f in dataclasses.fields(self) if f.name == name).metadata["log"]:  # type: ignore[arg-type]
            return float(np.exp(rng.uniform(np.log(low), np.log(high))))
        return float(rng.uniform(low, high))


BORDERS = ("constant", "mirror", "nearest")


@dataclass(frozen=True)
class GeometryParams(_Params):
    """Paired geometric augmentation: flips, then one affine + elastic warp (:func:`random_warp`).

    The defaults are the CT policy's. Scale 0.7-1.4 covers the 1.4x difference in organ size that a
    500 mm field of view and a 366 mm one give when both are resized to the network size; no flips,
    because the patient's left and right are classes of their own (left and right kidney).

    Attributes:
        p_flip_lr, p_flip_ud: probabilities of a left-right and an up-down flip (exact, no resampling).
        p_affine: probability of the affine part (scale, aspect, rotation, shear, shift together).
        scale: zoom factor (> 1 enlarges the content), log-uniform.
        aspect: ratio of the row zoom to the column zoom, log-uniform (squashed or stretched frames).
        rotate_deg: rotation angle in degrees.
        shear: shear factor (column offset per row, in pixels per pixel).
        shift: translation as a fraction of the height and of the width (drawn per axis).
        p_elastic: probability of an elastic displacement field.
        elastic_rms: RMS displacement per axis as a fraction of the shorter side.
        elastic_sigma: smoothness of the field (Gaussian sigma) as a fraction of the shorter side;
            not scaled by strength. The largest RMS may be at most a quarter of it: at that ratio
            the smallest Jacobian determinant of 50 fields (224 px) was 0.16 > 0, so the warp
            does not fold (no label islands from nothing); at half of it fields fold. The defaults
            (ratio 1/8) allow strengths up to 2.
        border: ``"constant"``: the image is filled with unit 0 (air / black, see the module
            docstring) and the label with 0; ``"mirror"`` (OpenCV's BORDER_REFLECT_101) and
            ``"nearest"`` (edge value) extend image and label alike.
        image_order: interpolation of the image (0, 1 bilinear, 3 cubic); the label is always 0.
    """

    p_flip_lr: float = 0.0
    p_flip_ud: float = 0.0
    p_affine: float = 0.6
    scale: tuple[float, float] = _range((0.7, 1.4), log=True)
    aspect: tuple[float, float] = _range((1.0, 1.0), log=True)
    rotate_deg: tuple[float, float] = _range((-15.0, 15.0))
    shear: tuple[float, float] = _range((-0.1, 0.1))
    shift: tuple[float, float] = _range((-0.05, 0.05))
    p_elastic: float = 0.3
    elastic_rms: tuple[float, float] = _range((0.0, 0.01))
    elastic_sigma: float = 0.08
    border: str = "constant"
    image_order: int = 1

    def scaled(self, strength: float) -> GeometryParams:
        """As :meth:`_Params.scaled`; flips have no range, so they stay at any strength > 0 and are
        dropped at 0 (the identity)."""
        out = super().scaled(strength)
        return out if strength > 0 else dataclasses.replace(out, p_flip_lr=0.0, p_flip_ud=0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.border not in BORDERS:
            raise ValueError(f"border must be one of {BORDERS}, got {self.border!r}")
        if self.image_order not in (0, 1, 3):
            raise ValueError(f"image_order must be 0, 1 or 3, got {self.image_order}")
        if not self.elastic_sigma > 0:
            raise ValueError(f"elastic_sigma must be positive, got {self.elastic_sigma}")
        if max(abs(v) for v in self.elastic_rms) > 0.25 * self.elastic_sigma + 1e-12:
            raise ValueError(
                f"elastic_rms {self.elastic_rms} exceeds a quarter of elastic_sigma {self.elastic_sigma}: "
                "so rough a field can fold the image onto itself; lower the strength or raise elastic_sigma"
            )


@dataclass(frozen=True)
class CTIntensityParams(_Params):
    """CT intensity augmentation in window units (``unit`` in [0, 1], see the module docstring).

    Steps, in this order, each with its own probability: window/level jitter
    ``(unit - 0.5 - level) / width + 0.5`` (another scanner's or reader's window: ``level`` moves
    the centre by a fraction of the window, ``width`` > 1 widens it), gamma ``unit ** gamma``,
    Gaussian blur (sigma in pixels; softer reconstruction kernels), low resolution (down by
    ``lowres``, bilinear, then back up; thicker or coarser acquisitions), Gaussian noise (sigma in
    window units: 0.04 is 16 HU for the 400 HU window). The result is clipped to [0, 1].
    """

    p_window: float = 0.5
    level: tuple[float, float] = _range((-0.1, 0.1))
    width: tuple[float, float] = _range((0.8, 1.25), log=True)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = _range((0.7, 1.5), log=True)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = _range((0.5, 1.25))
    p_lowres: float = 0.2
    lowres: tuple[float, float] = _range((0.5, 1.0), log=True)
    p_noise: float = 0.3
    noise_sigma: tuple[float, float] = _range((0.0, 0.04))


@dataclass(frozen=True)
class RGBColourParams(_Params):
    """RGB colour augmentation in [0, 1] units (another endoscope, camera, light or white balance).

    Steps, in this order: colour jitter (``brightness`` and ``contrast`` factors, ``saturation``
    factor, ``hue`` shift in turns), applied together as one affine colour map in YIQ space (hue is
    a rotation of the I/Q chroma plane, which keeps the luma Y), then gamma, Gaussian blur (sigma
    in pixels), Gaussian noise (sigma in [0, 1] units). The result is clipped to [0, 1].
    """

    p_colour: float = 0.8
    brightness: tuple[float, float] = _range((0.8, 1.25), log=True)
    contrast: tuple[float, float] = _range((0.8, 1.25), log=True)
    saturation: tuple[float, float] = _range((0.7, 1.4), log=True)
    hue: tuple[float, float] = _range((-0.05, 0.05))
    p_gamma: float = 0.3
    gamma: tuple[float, float] = _range((0.75, 1.33), log=True)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = _range((0.5, 1.5))
    p_noise: float = 0.2
    noise_sigma: tuple[float, float] = _range((0.0, 0.03))


# ----------------------------------------------------------------------------------------------
# Site policies: transforms


def _per_channel(values: float | Sequence[float], channels: int, name: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or array.size not in (1, channels):
        raise ValueError(f"{name} needs 1 or {channels} values, got {values!r}")
    return np.broadcast_to(array, (channels,))


def _linear_upsample(coarse: np.ndarray, shape: tuple[int, int], step: int) -> np.ndarray:
    """(..., h, w) values on nodes every ``step`` pixels -> (..., H, W), linear along each axis.

    reason: elementwise, not a product with interpolation matrices, which went through a
    multi-threaded BLAS and was 2-20x slower on a loaded 2-core machine.
    """
    out = coarse
    for axis, size in ((-2, shape[0]), (-1, shape[1])):
        position = np.arange(size) / step
        left = np.minimum(np.floor(position).astype(int), out.shape[axis] - 2)
        frac = (position - left).reshape((-1, 1) if axis == -2 else (-1,))
        out = np.take(out, left, axis=axis) * (1 - frac) + np.take(out, left + 1, axis=axis) * frac
    return out


def _elastic_field(shape: tuple[int, int], rms_px: float, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement (2, H, W) in pixels with RMS ``rms_px`` per axis.

    White noise on a grid coarser than the smoothing (nodes every ``sigma_px / 4`` pixels) is
    smoothed with ``gaussian_filter`` and interpolated linearly to every pixel: the same field as
    smoothing full-resolution noise, at a fraction of the cost.
    """
    step = max(1, int(sigma_px / 4))
    nodes = (-(-(shape[0] - 1) // step) + 2, -(-(shape[1] - 1) // step) + 2)
    noise = rng.standard_normal((2, *nodes))
    smooth = ndimage.gaussian_filter(noise, (0, sigma_px / step, sigma_px / step), mode="reflect")
    smooth *= rms_px / max(float(smooth.std()), 1e-12)
    return _linear_upsample(smooth, shape, step)


def _warp_channels(
    image: np.ndarray, coords: np.ndarray, order: int, mode: str, fills: np.ndarray
) -> np.ndarray:
    """``map_coordinates`` on each channel of an (H, W) or (H, W, C) image with a fill per channel."""

    def one(plane: np.ndarray, channel: int) -> np.ndarray:
        return ndimage.map_coordinates(plane, coords, order=order, mode=mode, cval=float(fills[channel]),
                                       prefilter=order > 1)  # fmt: skip

    return _warp_each_channel(image, order, one)


def random_warp(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    params: GeometryParams = GeometryParams(),
    fill: float | Sequence[float] = 0.0,
) -> Pair:
    """Random flips, then affine and elastic deformation composed into one resampling.

    For each output pixel ``o`` (row, col) the source position is
    ``A @ (o - c - t) + c + d(o)``: ``A`` the inverse of rotation @ shear @ zoom, ``c`` the centre,
    ``t`` the shift and ``d`` the elastic field (:func:`_elastic_field`), so image and label are
    interpolated once however many transforms were drawn. The shape is kept.

    Draws, in order: a flip decision per axis, then (if active) the affine decision and its scale,
    aspect, angle, shear and two shifts, then the elastic decision, its RMS and its noise. Steps
    whose range is the identity (strength 0) draw nothing.

    Args:
        image: (H, W) or (H, W, C), any dtype.
        label: (H, W) class ids.
        params: probabilities and ranges.
        fill: image value(s) for a ``"constant"`` border, one or C values (the label gets 0).

    Returns:
        ``(image, label)`` with the input shapes and dtypes.
    """
    image, label = _check(image, label, rng)
    if params.p_flip_lr > 0 and rng.random() < params.p_flip_lr:
        image, label = image[:, ::-1], label[:, ::-1]
    if params.p_flip_ud > 0 and rng.random() < params.p_flip_ud:
        image, label = image[::-1], label[::-1]
    height, width = label.shape
    inverse, shift, displacement = np.eye(2), np.zeros(2), None
    if params._active("p_affine", "scale", "aspect", "rotate_deg", "shear", "shift") and rng.random() < params.p_affine:
        scale, aspect = params._draw(rng, "scale"), params._draw(rng, "aspect")
        angle, shear = np.deg2rad(params._draw(rng, "rotate_deg")), params._draw(rng, "shear")
        shift = np.array([params._draw(rng, "shift") * height, params._draw(rng, "shift") * width])
        cos, sin = np.cos(angle), np.sin(angle)
        forward = (
            np.array([[cos, -sin], [sin, cos]])
            @ np.array([[1.0, 0.0], [shear, 1.0]])
            @ np.diag([scale * np.sqrt(aspect), scale / np.sqrt(aspect)])
        )
        inverse = np.linalg.inv(forward)
    if params._active("p_elastic", "elastic_rms") and rng.random() < params.p_elastic:
        side = min(height, width)
        displacement = _elastic_field(
            (height, width), params._draw(rng, "elastic_rms") * side, params.elastic_sigma * side, rng
        )
    if displacement is None and np.array_equal(inverse, np.eye(2)) and not shift.any():
        return _contiguous(image, label)
    centre = (np.array([height, width], dtype=np.float64) - 1) / 2
    rows = np.arange(height) - centre[0] - shift[0]
    cols = np.arange(width) - centre[1] - shift[1]
    coords = np.empty((2, height, width))
    for axis in range(2):
        coords[axis] = inverse[axis, 0] * rows[:, None] + inverse[axis, 1] * cols[None, :] + centre[axis]
    if displacement is not None:
        coords += displacement
    channels = 1 if image.ndim == 2 else image.shape[-1]
    fills = _per_channel(fill, channels, "fill")
    image = _warp_channels(image, coords, params.image_order, params.border, fills)
    label = _warp_channels(label, coords, 0, params.border, np.zeros(1))
    return _contiguous(image, label)


def _to_unit(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    scale, offset = (std, mean) if image.ndim == 3 else (std[0], mean[0])
    return (image.astype(np.float32) * scale.astype(np.float32) + offset.astype(np.float32)).astype(np.float32)


def _from_unit(unit: np.ndarray, dtype: np.dtype, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    scale, offset = (std, mean) if unit.ndim == 3 else (std[0], mean[0])
    out = (unit - offset.astype(np.float32)) / scale.astype(np.float32)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return np.ascontiguousarray(out.astype(dtype))


def _spatial(image: np.ndarray, value: float) -> tuple[float, ...]:
    """A per-axis parameter that acts on rows and columns only, never across channels."""
    return (value, value) + (0,) * (image.ndim - 2) if value else (0,) * image.ndim


def _low_resolution(unit: np.ndarray, factor: float) -> np.ndarray:
    height, width = unit.shape[:2]
    small_shape = (max(2, round(height * factor)), max(2, round(width * factor)))
    down = (small_shape[0] / height, small_shape[1] / width) + (1,) * (unit.ndim - 2)
    small = ndimage.zoom(unit, down, order=1)
    up = (height / small.shape[0], width / small.shape[1]) + (1,) * (unit.ndim - 2)
    return ndimage.zoom(small, up, order=1)


def _normalisation(
    image: np.ndarray, mean: float | Sequence[float], std: float | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (C,) mean and std of ``image``'s units (C = 1 for an (H, W) image)."""
    channels = 1 if image.ndim == 2 else image.shape[-1]
    mean_c, std_c = _per_channel(mean, channels, "mean"), _per_channel(std, channels, "std")
    if not np.all(std_c > 0):
        raise ValueError(f"std must be positive, got {std}")
    return mean_c, std_c


def ct_intensity(
    image: np.ndarray,
    rng: np.random.Generator,
    params: CTIntensityParams = CTIntensityParams(),
    mean: float | Sequence[float] = 0.5,
    std: float | Sequence[float] = 0.5,
) -> np.ndarray:
    """Random CT window, gamma, blur, low resolution and noise (:class:`CTIntensityParams`).

    Args:
        image: (H, W) or (H, W, C) (e.g. 2.5-D neighbouring slices, all treated alike) in the units
            ``(unit - mean) / std`` (module docstring); any dtype.
        mean, std: the card recipe's normalisation (default: the bundled CT recipe).

    Returns:
        The image in its units and dtype; the input itself (unchanged) when no step was drawn.
    """
    mean_c, std_c = _normalisation(image, mean, std)
    steps: list[tuple[str, float]] = []
    if params._active("p_window", "level", "width") and rng.random() < params.p_window:
        steps.append(("window", params._draw(rng, "level")))
        steps.append(("width", params._draw(rng, "width")))
    for name, p_name in (("gamma", "p_gamma"), ("blur_sigma", "p_blur"), ("lowres", "p_lowres")):
        if params._active(p_name, name) and rng.random() < getattr(params, p_name):
            steps.append((name, params._draw(rng, name)))
    if params._active("p_noise", "noise_sigma") and rng.random() < params.p_noise:
        steps.append(("noise_sigma", params._draw(rng, "noise_sigma")))
    if not steps:
        return image
    unit = _to_unit(image, mean_c, std_c)
    values = dict(steps)
    if "window" in values:
        unit = (unit - np.float32(0.5 + values["window"])) / np.float32(values["width"]) + np.float32(0.5)
    if "gamma" in values:
        unit = np.clip(unit, 0, 1) ** np.float32(values["gamma"])
    if "blur_sigma" in values:
        unit = ndimage.gaussian_filter(unit, _spatial(unit, values["blur_sigma"]), mode="nearest")
    if "lowres" in values:
        unit = _low_resolution(unit, values["lowres"])
    if "noise_sigma" in values:
        unit = unit + np.float32(values["noise_sigma"]) * rng.standard_normal(unit.shape, dtype=np.float32)
    return _from_unit(np.clip(unit, 0, 1), image.dtype, mean_c, std_c)


# RGB -> YIQ (NTSC 1953, Rec. 601 luma); YIQ_TO_RGB's first column is (1, 1, 1): Y is grey
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def _colour_map(
    brightness: float, contrast: float, saturation: float, hue_turns: float, mean_luma: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(M, offset)`` with ``rgb' = M @ rgb + offset`` for the four colour-jitter factors.

    In YIQ: contrast blends with the mean grey (Y' = c Y + (1 - c) m, chroma times c), saturation
    scales the chroma (I, Q), hue rotates it, brightness scales everything. A positive hue turns
    red towards yellow and green (HSV hue increases).
    """
    angle = -2 * np.pi * hue_turns  # reason: the I/Q plane turns the other way round than HSV hue
    cos, sin = np.cos(angle), np.sin(angle)
    chroma = contrast * saturation * np.array([[cos, -sin], [sin, cos]])
    yiq = np.zeros((3, 3))
    yiq[0, 0] = contrast
    yiq[1:, 1:] = chroma
    matrix = brightness * YIQ_TO_RGB @ yiq @ RGB_TO_YIQ
    offset = brightness * (1 - contrast) * mean_luma * YIQ_TO_RGB[:, 0]
    return matrix, offset


def rgb_colour(
    image: np.ndarray,
    rng: np.random.Generator,
    params: RGBColourParams = RGBColourParams(),
    mean: float | Sequence[float] = (0.485, 0.456, 0.406),
    std: float | Sequence[float] = (0.229, 0.224, 0.225),
) -> np.ndarray:
    """Random colour jitter, gamma, blur and noise of an RGB image (:class:`RGBColourParams`).

    Args:
        image: (H, W, 3) in the units ``(unit - mean) / std`` (module docstring); any dtype.
        mean, std: the card recipe's normalisation (default: the bundled RGB recipe, ImageNet).

    Returns:
        The image in its units and dtype; the input itself (unchanged) when no step was drawn.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"rgb_colour needs an (H, W, 3) image, got shape {image.shape}")
    mean_c, std_c = _normalisation(image, mean, std)
    jitter: tuple[float, float, float, float] | None = None
    if params._active("p_colour", "brightness", "contrast", "saturation", "hue") and rng.random() < params.p_colour:
        brightness, contrast = params._draw(rng, "brightness"), params._draw(rng, "contrast")
        jitter = (brightness, contrast, params._draw(rng, "saturation"), params._draw(rng, "hue"))
    steps = {}
    for name, p_name in (("gamma", "p_gamma"), ("blur_sigma", "p_blur"), ("noise_sigma", "p_noise")):
        if params._active(p_name, name) and rng.random() < getattr(params, p_name):
            steps[name] = params._draw(rng, name)
    if jitter is None and not steps:
        return image
    unit = _to_unit(image, mean_c, std_c)
    if jitter is not None:
        mean_luma = float(sum(RGB_TO_YIQ[0, k] * unit[..., k].mean(dtype=np.float64) for k in range(3)))
        matrix, offset = _colour_map(*jitter, mean_luma)
        # reason: three multiply-adds, not ``unit @ matrix.T``, which goes through a multi-threaded BLAS
        unit = offset.astype(np.float32) + sum(unit[..., k : k + 1] * matrix[:, k].astype(np.float32) for k in range(3))
    if "gamma" in steps:
        unit = np.clip(unit, 0, 1) ** np.float32(steps["gamma"])
    if "blur_sigma" in steps:
        unit = ndimage.gaussian_filter(unit, _spatial(unit, steps["blur_sigma"]), mode="nearest")
    if "noise_sigma" in steps:
        unit = unit + np.float32(steps["noise_sigma"]) * rng.standard_normal(unit.shape, dtype=np.float32)
    return _from_unit(np.clip(unit, 0, 1), image.dtype, mean_c, std_c)


# ----------------------------------------------------------------------------------------------
# Site policies: composition


@dataclass(frozen=True)
class SitePolicy:
    """One image kind's augmentation: :func:`random_warp`, then the kind's intensity transform.

    Call it as ``policy(image, label, rng) -> (image, label)`` with the arrays of the module
    docstring in the units given by ``mean`` and ``std``. Deterministic for a given generator
    state; picklable (DataLoader workers); ``dataclasses.asdict(policy)`` is JSON-ready for a card.

    Attributes:
        kind: ``"ct"`` or ``"rgb"``.
        geometry: flips, affine and elastic parameters.
        intensity: :class:`CTIntensityParams` for CT, :class:`RGBColourParams` for RGB.
        mean, std: the normalisation of the images the policy receives (1 or C values).
    """

    kind: str
    geometry: GeometryParams
    intensity: CTIntensityParams | RGBColourParams
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        expected = {"ct": CTIntensityParams, "rgb": RGBColourParams}
        if self.kind not in expected:
            raise ValueError(f"kind must be 'ct' or 'rgb', got {self.kind!r}")
        if not isinstance(self.intensity, expected[self.kind]):
            raise TypeError(f"a {self.kind} policy needs {expected[self.kind].__name__}")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        image, label = _check(image, label, rng)
        channels = 1 if image.ndim == 2 else image.shape[-1]
        mean = _per_channel(self.mean, channels, "mean")
        std = _per_channel(self.std, channels, "std")
        fill = (0.0 - mean) / std  # unit 0: air below the CT window, black for RGB
        if np.issubdtype(image.dtype, np.integer):
            fill = np.rint(fill)
        image, label = random_warp(image, label, rng, self.geometry, fill)
        if self.kind == "ct":
            image = ct_intensity(image, rng, self.intensity, mean, std)  # type: ignore[arg-type]
        else:
            image = rgb_colour(image, rng, self.intensity, mean, std)  # type: ignore[arg-type]
        return _contiguous(image, label)


SITE_POLICIES: dict[str, SitePolicy] = {
    # CT: no flips (left and right kidney are classes), air fill; the window jitter stands in for
    # other scanners' and readers' windows (the 8-bit CURVAS and MSD slices come pre-windowed)
    "ct": SitePolicy(
        "ct", GeometryParams(), CTIntensityParams(), mean=(0.5,), std=(0.5,)
    ),
    # RGB: endoscopy and dermoscopy have no handedness, so flips on both axes plus +-90 degrees
    # reach every orientation; aspect 0.8-1.25 for frames squashed to a square (Kvasir-SEG 352 px);
    # black border: endoscopy frames have a black surround and dermoscopes a dark vignette, while a
    # mirror border tiled the frame's own black edge and the polyp into a kaleidoscope
    "rgb": SitePolicy(
        "rgb",
        GeometryParams(
            p_flip_lr=0.5, p_flip_ud=0.5, p_affine=0.7, scale=(0.7, 1.4), aspect=(0.8, 1.25),
            rotate_deg=(-90.0, 90.0), shear=(-0.1, 0.1), shift=(-0.05, 0.05), border="constant",
        ),
        RGBColourParams(),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    ),
}


def site_augment(
    kind: str,
    strength: float = 1.0,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> SitePolicy:
    """The site-variation policy for ``kind`` (``"ct"`` or ``"rgb"``) at ``strength``.

    ``strength`` 1 gives the defaults of :data:`SITE_POLICIES` (documented on the parameter
    classes); 0 the identity (nothing is drawn from the generator, flips are off too); other values
    scale every range (:meth:`_Params.scaled`), with the probabilities kept. ``mean`` and ``std``
    default to the bundled recipe of the kind (pass the card's ``preprocessing`` values; see the
    module docstring for other units).

    Examples::

        policy = site_augment("ct", 1.0, mean=recipe.mean, std=recipe.std)
        image, label = policy(image, label, np.random.default_rng((seed, epoch, index)))

    Raises:
        ValueError: an unknown kind, a negative strength, or one so high that the elastic field
            could fold.
    """
    if kind not in SITE_POLICIES:
        raise ValueError(f"unknown augmentation kind {kind!r}; known: {', '.join(SITE_POLICIES)}")
    if not (np.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    base = SITE_POLICIES[kind]
    return dataclasses.replace(
        base,
        geometry=base.geometry.scaled(strength),
        intensity=base.intensity.scaled(strength),
        mean=base.mean if mean is None else tuple(float(v) for v in np.atleast_1d(mean)),
        std=base.std if std is None else tuple(float(v) for v in np.atleast_1d(std)),
    )
