"""Label overlays as pictures: CT slices in a display window, or a 2-D image, with coloured labels.

Used by ``braunet demo`` and ``braunet predict --overlay`` (and handy in notebooks) to check a
segmentation by eye without a viewer. CT slices are shown as radiologists read them
(:mod:`braunet.infer.views`, radiological view): patient's right on the left of the picture,
anterior at the top.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from braunet.infer.views import to_view
from braunet.infer.windows import apply_window
from braunet.io import Volume, to_canonical
from braunet.io.colour_tables import hex_to_rgb

__all__ = ["blend_labels", "overlay_image", "overlay_slices", "pick_slices"]


def blend_labels(rgb: np.ndarray, labels: np.ndarray, colors: Sequence[str], alpha: float = 0.45) -> np.ndarray:
    """Blend label colours into a picture.

    Args:
        rgb: ``(..., 3)`` uint8 picture.
        labels: its label map, ``rgb.shape[:-1]``; values index ``colors`` (larger ones take the
            last colour), value 0 is left as it is.
        colors: "#rrggbb" per label value.
    Returns:
        ``(..., 3)`` uint8: ``(1 - alpha) * picture + alpha * colour`` where labelled.
    """
    out = rgb.astype(np.float32)
    palette = hex_to_rgb(colors).astype(np.float32)
    mask = labels > 0
    out[mask] = (1 - alpha) * out[mask] + alpha * palette[np.clip(labels[mask], 0, len(palette) - 1)]
    return out.round().astype(np.uint8)


def overlay_image(image: Volume, labels: np.ndarray, colors: Sequence[str], *, alpha: float = 0.45) -> np.ndarray:
    """A 2-D image (grey or RGB, 8 or 16 bit) with its ``(H, W)`` labels blended in: ``(H, W, 3)`` uint8."""
    pixels = image.array
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)  # reason: the top byte, as viewers show 16-bit images
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
    return blend_labels(rgb, labels, colors, alpha)


def pick_slices(labels_canonical: np.ndarray, count: int = 4) -> list[int]:
    """``count`` axial slices spread over the labelled range (most informative for a quick look)."""
    labelled = np.flatnonzero(labels_canonical.reshape(-1, labels_canonical.shape[2]).any(axis=0))
    first, last = (labelled[0], labelled[-1]) if labelled.size else (0, labels_canonical.shape[2] - 1)
    return sorted({int(round(v)) for v in np.linspace(first, last, count + 2)[1:-1]})


def overlay_slices(
    volume: Volume,
    labels: np.ndarray,
    colors: Sequence[str],
    *,
    slices: Sequence[int] | None = None,
    window: str = "abdomen",
    alpha: float = 0.45,
) -> np.ndarray:
    """Tile axial slices of a CT with its labels blended in.

    Args:
        volume: the CT (3-D, HU), any orientation.
        labels: (I, J, K) label map on the volume's grid; values index ``colors``.
        colors: "#rrggbb" per label value (value 0 is left transparent).
        slices: canonical axial indices (None: :func:`pick_slices`).
    Returns:
        (H, W * n, 3) uint8 picture, slices side by side from inferior to superior.
    """
    canonical, reorientation = to_canonical(volume)
    labels_canonical = reorientation.apply(labels)
    slices = list(slices) if slices is not None else pick_slices(labels_canonical)
    grey = (apply_window(to_view(canonical, slices, "radiological"), window) * 255).astype(np.uint8)
    lab = to_view(labels_canonical, slices, "radiological")
    rgb = blend_labels(np.repeat(grey[..., None], 3, axis=-1), lab, colors, alpha)
    return np.concatenate(list(rgb), axis=1)
