"""The preprocessing recipe: raw slices (HU or 8-bit RGB) -> normalised network input.

This module is the one place the recipe lives; inference, training and fine-tuning all call
:func:`preprocess_slices`, and a model's card records the recipe it was trained with
(``card.preprocessing``, the JSON; ``card.recipe``, the :class:`Recipe` parsed from it once), so
the engine applies it automatically.

Recipes (JSON in ``card.json``)::

    {"kind": "ct", "clip_hu": [-125, 275], "mean": 0.5, "std": 0.5, "resize": "spline3", "view": "radiological"}
    {"kind": "ct", "window": "abdomen", ...}       # a named window from braunet.infer.windows instead of clip_hu
    {"kind": "rgb", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": "bilinear"}

CT: clip HU to the window, scale it to [0, 1], zoom the slice to the model size with a cubic
spline, then ``(x - mean) / std`` (the official Synapse pipeline: TransUNet's [-125, 275] clip and
scaling, the official test's ``zoom(order=3)`` and 0.5/0.5 normalisation; 1 input channel, which the
network repeats to 3). RGB: ``x / 255``, bilinear resize, ImageNet normalisation per channel (the
official ISIC/CVC pipeline; albumentations resizes the uint8 image and rounds, we resize floats).
``resize`` and ``view`` default to the values shown.

Fixed pixel spacing (CT only; not the official recipe, so official checkpoints never get it)::

    {"kind": "ct", "clip_hu": [-125, 275], "mean": 0.5, "std": 0.5, "spacing_mm": 1.75, "view": "radiological"}

With ``spacing_mm`` the slice is resampled to that in-plane pixel size and centre-cropped or padded
(with the window's low end, i.e. air) to the network size in the same step
(:func:`braunet.infer.resize.centred_resample`: linear, anti-aliased when it shrinks), so an organ
covers the same number of network pixels whatever the scanner's field of view and matrix. Its
``resize`` is ``"bilinear"`` (the default when ``spacing_mm`` is set). Predictions go back exactly
onto the input grid: the logits are resampled to the slice by the inverse map (:func:`restore_logits`)
and decoded there, so the labels are smooth rather than blocky; input pixels outside the network's
field of view (``img_size * spacing_mm`` mm, centred) are background. Slices must come with their pixel
spacing (rows, cols) in mm. Why 1.75 mm for the bundled CT model: the measurement is in
``scripts/train_bundled.py``.

Test-time flips (optional, RGB only)::

    {"kind": "rgb", ..., "tta": ["hflip", "vflip"]}

The network also runs on the left-right ("hflip") and/or up-down ("vflip") mirrored input and the
logits, mirrored back, are averaged (:class:`braunet.infer.slices.SliceRunner`): each flip costs
one more forward pass. A card gets it only where it was measured to pay (models/README.md). A CT
recipe refuses it: the abdomen is not mirror-symmetric (the liver is on one side).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from braunet.errors import CheckpointError, InputError
from braunet.infer.resize import (
    RESIZES,
    centred_coverage,
    centred_indices,
    centred_resample,
    resize_images,
    resize_nearest,
    resized_ones,
)
from braunet.infer.views import VIEWS
from braunet.infer.windows import get_window

__all__ = [
    "ISIC_RGB",
    "SYNAPSE_CT",
    "Recipe",
    "Spacing",
    "TTA_FLIPS",
    "official_preprocessing",
    "parse_preprocessing",
    "preprocess_slices",
    "resize_labels",
    "restore_logits",
]

Spacing = tuple[float, float]  # in-plane pixel size (rows, cols) in mm
TTA_FLIPS = {"hflip": -1, "vflip": -2}  # test-time flip -> the tensor dimension it mirrors in (B, C, S, S)

SYNAPSE_CT: dict[str, Any] = {
    "kind": "ct", "clip_hu": [-125.0, 275.0], "mean": 0.5, "std": 0.5, "resize": "spline3", "view": "radiological",
}
ISIC_RGB: dict[str, Any] = {
    "kind": "rgb", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": "bilinear",
}


def official_preprocessing(kind: str) -> dict[str, Any]:
    """A fresh copy of the official recipe: ``"ct"`` (Synapse) or ``"rgb"`` (ISIC/CVC-ClinicDB)."""
    recipes = {"ct": SYNAPSE_CT, "rgb": ISIC_RGB}
    if kind not in recipes:
        raise ValueError(f"unknown preprocessing kind {kind!r}; known: ct, rgb")
    return copy.deepcopy(recipes[kind])


@dataclass(frozen=True)
class Recipe:
    """A validated, immutable preprocessing recipe; ``low``/``high`` is the HU window (CT only);
    ``spacing_mm`` the fixed in-plane pixel size of the network input (None: the slice is resized
    to the network size whatever its spacing, as the official recipe does)."""

    kind: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str
    view: str = "radiological"
    low: float = 0.0
    high: float = 255.0
    spacing_mm: float | None = None
    tta: tuple[str, ...] = ()  # test-time flips averaged with the plain pass: "hflip", "vflip"

    @property
    def channels(self) -> int:
        return 1 if self.kind == "ct" else 3


def parse_preprocessing(spec: Mapping[str, Any] | Recipe, source: str = "model card") -> Recipe:
    """Validate a recipe dict (see the module docstring) and fill in defaults.

    Raises:
        CheckpointError: naming ``source`` and the bad field.
    """
    if isinstance(spec, Recipe):
        return spec
    if not isinstance(spec, Mapping):
        raise CheckpointError(f"{source}: preprocessing must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in ("ct", "rgb"):
        raise CheckpointError(f"{source}: preprocessing kind {kind!r} is not supported (expected 'ct' or 'rgb')")
    channels = 1 if kind == "ct" else 3
    try:
        mean = tuple(float(v) for v in np.atleast_1d(spec.get("mean", 0.0)))
        std = tuple(float(v) for v in np.atleast_1d(spec.get("std", 1.0)))
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}: preprocessing mean/std must be numbers") from None
    if len(mean) not in (1, channels) or len(std) not in (1, channels) or not all(s > 0 for s in std):
        raise CheckpointError(f"{source}: preprocessing needs 1 or {channels} mean/std values with std > 0")
    spacing_mm = spec.get("spacing_mm")
    if spacing_mm is not None:
        if kind != "ct":
            raise CheckpointError(f"{source}: spacing_mm is a CT option (the image has no pixel size in mm)")
        if isinstance(spacing_mm, bool) or not isinstance(spacing_mm, (int, float)) or not spacing_mm > 0:
            raise CheckpointError(f"{source}: spacing_mm must be a positive number of millimetres, got {spacing_mm!r}")
        spacing_mm = float(spacing_mm)
    resize = spec.get("resize", "bilinear" if kind == "rgb" or spacing_mm else "spline3")
    view = spec.get("view", "radiological")
    if resize not in RESIZES:
        raise CheckpointError(f"{source}: unknown resize {resize!r} (known: {', '.join(RESIZES)})")
    if spacing_mm and resize != "bilinear":
        raise CheckpointError(f"{source}: spacing_mm resamples linearly; its resize must be 'bilinear', not {resize!r}")
    if view not in VIEWS:
        raise CheckpointError(f"{source}: unknown slice view {view!r} (known: {', '.join(VIEWS)})")
    low, high = 0.0, 255.0
    if kind == "ct":
        if ("clip_hu" in spec) == ("window" in spec):
            raise CheckpointError(f"{source}: a CT recipe needs exactly one of 'clip_hu' [low, high] or 'window'")
        try:
            low, high = get_window(spec["window"]).limits if "window" in spec else map(float, spec["clip_hu"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: bad CT window ({error})") from None
        if not high > low:
            raise CheckpointError(f"{source}: clip_hu upper limit {high} must exceed the lower {low}")
    tta = spec.get("tta", [])
    if not isinstance(tta, (list, tuple)) or not all(isinstance(f, str) and f in TTA_FLIPS for f in tta) \
            or len(set(tta)) != len(tta):
        raise CheckpointError(f"{source}: tta must list distinct flips out of {', '.join(TTA_FLIPS)}, got {tta!r}")
    if tta and kind == "ct":
        raise CheckpointError(f"{source}: tta is an RGB option (a mirrored abdomen is not one a model has seen)")
    return Recipe(kind, mean, std, resize, view, float(low), float(high), spacing_mm, tuple(tta))


def _network_spacing(recipe: Recipe, spacing: Spacing | None, what: str) -> tuple[Spacing, Spacing]:
    """(input spacing, network spacing) for a fixed-spacing recipe; InputError when the slices have none."""
    if spacing is None:
        raise InputError(f"{what}: this model resamples slices to {recipe.spacing_mm} mm pixels and needs their "
                         "pixel spacing (rows, cols) in mm")  # fmt: skip
    rows, cols = (float(v) for v in spacing)
    if not (rows > 0 and cols > 0):
        raise InputError(f"{what}: pixel spacing must be positive, got {spacing}")
    net = float(recipe.spacing_mm or 0.0)
    return (rows, cols), (net, net)


def preprocess_slices(
    slices: np.ndarray | Tensor,
    spec: Mapping[str, Any] | Recipe,
    img_size: int,
    *,
    device: torch.device | str | None = None,
    spacing: Spacing | None = None,
) -> Tensor:
    """Raw slices -> normalised network input.

    Args:
        slices: CT (B, H, W) in HU (any numeric dtype), or RGB (B, H, W, 3) 8-bit values; an RGB
            recipe also takes grey (B, H, W), repeated to 3 channels.
        spec: the model's preprocessing recipe (``card.recipe``, or a recipe dict).
        img_size: the model's input size S.
        device: where to compute and return the tensor (default: where ``slices`` is; CPU for NumPy).
        spacing: the slices' pixel size (rows, cols) in mm; needed by a ``spacing_mm`` recipe, ignored
            by the others.
    Returns:
        float32 (B, 1, S, S) for CT or (B, 3, S, S) for RGB.
    """
    recipe = parse_preprocessing(spec)
    if isinstance(slices, np.ndarray) and not slices.flags.writeable:
        slices = slices.copy()  # reason: torch warns on read-only arrays (memory-mapped or broadcast inputs)
    x = torch.as_tensor(slices)
    if device is not None:
        x = x.to(device, non_blocking=True)  # reason: copy the compact raw dtype, convert on the device
    if recipe.kind == "ct":
        if x.ndim != 3:
            raise InputError(f"CT preprocessing expects slices (B, H, W), got shape {tuple(x.shape)}")
        x = x.unsqueeze(1)
    else:
        if x.ndim == 3:
            x = x.unsqueeze(-1).expand(*x.shape, 3)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(f"RGB preprocessing expects slices (B, H, W, 3), got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
    # reason: a fresh float32 tensor, so the in-place steps below never touch the caller's array
    x = x.to(torch.float32, copy=True)
    # The recipe is "intensity map, resize, normalise"; both maps are affine and the resize is linear,
    # so all the arithmetic happens once on the (small) resized image:
    #   ((resize((clip(x) - low) / span) - mean) / std = resize(clip(x)) * scale + bias,
    # with bias = -low * scale * resize(ones) - mean / std (resize(ones) is 1 except where the
    # official spline zoom leaves an edge row at 0; see braunet.infer.resize.resized_ones).
    span = recipe.high - recipe.low
    mean = torch.tensor(recipe.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(recipe.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    scale = 1.0 / (span * std)
    if recipe.spacing_mm:
        # reason: pad with the window's low end (air); the centred matrices pad with 0, so shift first
        source, net = _network_spacing(recipe, spacing, "CT preprocessing")
        x.clamp_(recipe.low, recipe.high).sub_(recipe.low)
        x = centred_resample(x, (img_size, img_size), source, net, pad=True)
        return x.mul_(scale).add_(-mean / std).contiguous()
    if recipe.kind == "ct":
        x.clamp_(recipe.low, recipe.high)
        ones = resized_ones(tuple(x.shape[-2:]), img_size, recipe.resize, x.device)
        bias = -recipe.low * scale * ones - mean / std
    else:
        bias = -mean / std
    x = resize_images(x, img_size, recipe.resize)
    return x.mul_(scale).add_(bias).contiguous()


def resize_labels(
    labels: np.ndarray, shape: tuple[int, int], spec: Mapping[str, Any] | Recipe, spacing: Spacing | None = None
) -> np.ndarray:
    """Nearest-neighbour resize of label maps (B, h, w) -> (B, *shape) with the recipe's pixel convention.

    For training (labels to the model size, as the official ``zoom(label, order=0)``) and, with the
    resize recipes, for predictions back to the slice size. A ``spacing_mm`` recipe maps labels of
    pixel size ``spacing`` onto the network grid only (``shape`` is the network size; pixels outside
    the slice are background 0): its predictions go back through :func:`restore_logits`.
    """
    recipe = parse_preprocessing(spec)
    if not recipe.spacing_mm:
        return resize_nearest(labels, (shape[0], shape[1]), recipe.resize)
    source, net = _network_spacing(recipe, spacing, "label resize")
    rows = centred_indices(labels.shape[1], source[0], shape[0], net[0])
    cols = centred_indices(labels.shape[2], source[1], shape[1], net[1])
    out = labels[:, np.maximum(rows, 0)[:, None], np.maximum(cols, 0)[None, :]]
    out[:, (rows < 0)[:, None] | (cols < 0)[None, :]] = 0
    return out


def restore_logits(
    logits: Tensor, shape: tuple[int, int], spec: Mapping[str, Any] | Recipe, spacing: Spacing | None
) -> tuple[Tensor, Tensor]:
    """Network logits (B, K, S, S) of a ``spacing_mm`` recipe -> logits on the slice grid (B, K, H, W),
    and (H, W) bool: the input pixels the network saw (elsewhere the logits are 0; the caller labels
    them background). The exact inverse of the forward map in :func:`preprocess_slices`: the network's
    pixel centres are placed at ``spacing_mm`` in mm about the slice centre and linearly interpolated
    at the slice's pixel centres.
    """
    recipe = parse_preprocessing(spec)
    source, net = _network_spacing(recipe, spacing, "prediction")
    size = (int(logits.shape[-2]), int(logits.shape[-1]))
    restored = centred_resample(logits, shape, net, source, pad=False)
    seen = torch.from_numpy(centred_coverage(size, net, shape, source)).to(logits.device)
    return restored, seen
