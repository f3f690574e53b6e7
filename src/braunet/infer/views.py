"""How an axial slice of a canonical (closest RAS+) volume is laid out for the network.

The canonical array is indexed ``(i, j, k)`` with i towards the patient's Right, j Anterior and
k Superior (:func:`braunet.io.to_canonical`), so ``canonical[:, :, k]`` is one axial slice. A 2-D
network, however, learned one particular picture of a slice, and the official Synapse slices
(TransUNet's ``(D, H, W)`` arrays) are DICOM-style radiological pictures: rows run anterior to
posterior (the spine at the bottom) and columns from the patient's right to left (the liver on the
left of the picture). The ``"radiological"`` view reproduces that picture, so converted official
checkpoints see what they were trained on; ``"ras"`` is the raw canonical slice, for models trained
on it. The view is part of a model's preprocessing (``card.preprocessing["view"]``).

    radiological: view[b, r, c] = canonical[I - 1 - c, J - 1 - r, k_b]   shape (B, J, I)
    ras:          view[b, r, c] = canonical[r, c, k_b]                   shape (B, I, J)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["VIEWS", "from_view", "to_view", "view_shape"]

VIEWS = ("radiological", "ras")


def view_shape(canonical_shape: Sequence[int], view: str) -> tuple[int, int]:
    """(H, W) of one model-view slice of a canonical volume of shape (I, J, K)."""
    i, j = canonical_shape[0], canonical_shape[1]
    return (j, i) if view == "radiological" else (i, j)


def to_view(canonical: np.ndarray, indices: Sequence[int], view: str) -> np.ndarray:
    """Axial slices ``indices`` of canonical (I, J, K[, C]) -> contiguous stack (B, H, W[, C])."""
    slab = np.moveaxis(canonical[:, :, list(indices)], 2, 0)  # (B, I, J[, C]) copy of the chosen slices
    if view == "radiological":
        slab = slab.swapaxes(1, 2)[:, ::-1, ::-1]
    elif view != "ras":
        raise ValueError(f"unknown slice view {view!r}; known views: {', '.join(VIEWS)}")
    return np.ascontiguousarray(slab)


def from_view(stack: np.ndarray, view: str) -> np.ndarray:
    """Inverse of :func:`to_view` for a whole stack: (K, H, W) -> canonical (I, J, K), as a view."""
    if view == "radiological":
        stack = stack[:, ::-1, ::-1].swapaxes(1, 2)
    elif view != "ras":
        raise ValueError(f"unknown slice view {view!r}; known views: {', '.join(VIEWS)}")
    return np.moveaxis(stack, 0, 2)
