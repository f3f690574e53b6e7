"""Label overlays as pictures: CT slices in a display window with coloured organ labels.

Used by ``braunet demo`` (and handy in notebooks) to check a segmentation by eye without a viewer.
Slices are shown as radiologists read them (:mod:`braunet.infer.views`, radiological view): patient's
right on the left of the picture, anterior at the top.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from braunet.infer.views import to_view
from braunet.infer.windows import apply_window
from braunet.io import Volume, to_canonical

__all__ = ["hex_to_rgb", "overlay_slices", "pick_slices"]


def hex_to_rgb(colors: Sequence[str]) -> np.ndarray:
    """["#rrggbb", ...] -> (K, 3) uint8."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=np.uint8)


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
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    palette = hex_to_rgb(colors).astype(np.float32)
    mask = lab > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * palette[np.clip(lab[mask], 0, len(palette) - 1)]
    return np.concatenate(list(rgb.round().astype(np.uint8)), axis=1)
