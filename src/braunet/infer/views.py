"""How an axial slice of a canonical (closest RAS+) volume is laid out for the network.

The canonical array is indexed ``(i, j, k)`` with i towards the patient's Right, j Anterior and
k Superior (:func:`braunet.io.to_canonical`), so ``canonical[:, :, k]`` is one axial slice. A 2-D
network, however, learned one particular picture of a slice, and the official Synapse slices
(TransUNet's ``(D, H, W)`` arrays) are DICOM-style radiological pictures: rows run anterior to
posterior (the spine at the bottom) and columns from the patient's right to left (the liver on the
left of the picture). The ``"radiological"`` view reproduces that picture, so converted official
checkpoints see what they were trained on; ``"ras"`` is the raw canonical slice, for models trained
on it. The view is part of a model's preprocessing (``card.recipe.view``), and the napari layers
show volumes in the radiological view.

    radiological: view[b, r, c] = canonical[I - 1 - c, J - 1 - r, k_b]   shape (B, J, I)
    ras:          view[b, r, c] = canonical[r, c, k_b]                   shape (B, I, J)

The two views differ by one flip, the transpose about the anti-diagonal, which is its own
inverse; every conversion here (volume to slices, slices back, one view to the other, points)
is that flip or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["VIEWS", "convert_view", "convert_view_points", "from_view", "to_view", "view_shape", "view_spacing"]

VIEWS = ("radiological", "ras")


def _check(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"unknown slice view {view!r}; known views: {', '.join(VIEWS)}")


def _flip(stack: np.ndarray) -> np.ndarray:
    """``out[b, r, c] = stack[b, W-1-c, H-1-r]`` for slices (B, H, W[, C]): shape (B, W, H[, C]), a view."""
    return stack.swapaxes(1, 2)[:, ::-1, ::-1]


def view_shape(canonical_shape: Sequence[int], view: str) -> tuple[int, int]:
    """(H, W) of one model-view slice of a canonical volume of shape (I, J, K)."""
    i, j = canonical_shape[0], canonical_shape[1]
    return (j, i) if view == "radiological" else (i, j)


def view_spacing(canonical_affine: np.ndarray, view: str) -> tuple[float, float]:
    """Pixel size (rows, cols) in mm of a model-view slice of a canonical volume with this (4, 4) affine."""
    _check(view)
    affine = np.asarray(canonical_affine, dtype=np.float64)
    i, j = float(np.linalg.norm(affine[:3, 0])), float(np.linalg.norm(affine[:3, 1]))
    return (j, i) if view == "radiological" else (i, j)


def to_view(canonical: np.ndarray, indices: Sequence[int], view: str) -> np.ndarray:
    """Axial slices ``indices`` of canonical (I, J, K[, C]) -> contiguous stack (B, H, W[, C])."""
    _check(view)
    slab = np.moveaxis(canonical[:, :, list(indices)], 2, 0)  # (B, I, J[, C]) copy of the chosen slices
    return np.ascontiguousarray(_flip(slab) if view == "radiological" else slab)


def from_view(stack: np.ndarray, view: str) -> np.ndarray:
    """Inverse of :func:`to_view` for a whole stack: (K, H, W) -> canonical (I, J, K), as a view."""
    _check(view)
    return np.moveaxis(_flip(stack) if view == "radiological" else stack, 0, 2)


def convert_view(stack: np.ndarray, source: str, target: str) -> np.ndarray:
    """Slices (B, H, W[, C]) in view ``source`` -> the same slices in view ``target``, as a view.

    For example a displayed napari slice (radiological) -> the slice a ``"ras"`` model is given.
    """
    _check(source)
    _check(target)
    return stack if source == target else _flip(stack)


def convert_view_points(points: np.ndarray, shape: Sequence[int], source: str, target: str) -> np.ndarray:
    """Continuous pixel coordinates (..., 2) ``(r, c)`` on a slice of ``shape`` (H, W) in view
    ``source`` -> the same points in view ``target``: identity, or ``(W-1-c, H-1-r)``."""
    _check(source)
    _check(target)
    points = np.asarray(points, dtype=np.float64)
    if source == target:
        return points
    height, width = shape[0], shape[1]
    return np.stack([width - 1 - points[..., 1], height - 1 - points[..., 0]], axis=-1)
