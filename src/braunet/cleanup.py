"""Optional 3-D clean-up of slice-wise label maps: stray pieces of each organ removed, holes filled.

A 2-D network labels each slice on its own, so a volume can keep small islands of an organ in
slices where it is not (a "spleen" speck beside the liver) and pinholes inside an organ. Each
organ keeps its largest connected component and the pieces at least ``min_fraction`` of its size,
and background holes the organ encloses are filled. ``min_fraction=1.0`` is the classic "largest
component only"; the default 0.1 exists because an organ can truly come in pieces at CT slice
spacing: on the shared 3 mm CT the reference pancreas itself is two pieces (425 and 390 voxels),
and keeping only the largest halved the pancreas Dice (0.82 -> 0.50). Lesion and polyp classes
can have several true pieces, so callers choose the classes.

Measured with ``scripts/measure_cleanup.py`` (``ct-abdomen-8`` on ``totalseg_ct/case01``, one
volume with silver-standard labels that the model was trained on): mean Dice 0.871 -> 0.877 but
mean HD95 12.0 -> 12.6 mm (a 9-voxel true piece of the aorta is removed: aorta HD95 19 -> 28 mm;
pancreas 6.0 -> 4.2, stomach 14.7 -> 13.1). Mixed, so the CLI leaves it off by default.

Both steps use :mod:`scipy.ndimage` inside each class's bounding box (one ``find_objects`` pass),
so the cost follows the organs' size, not the number of classes times the volume.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

__all__ = ["clean_labels"]


def clean_labels(
    labels: np.ndarray,
    *,
    classes: Iterable[int] | None = None,
    min_fraction: float = 0.1,
    fill_holes: bool = True,
) -> np.ndarray:
    """Remove the small connected pieces of each class and fill the holes it encloses.

    Args:
        labels: integer label map, ``(I, J, K)`` (or ``(H, W)``); not modified.
        classes: the label values to clean (default: every non-zero value present).
        min_fraction: keep the largest 26-connected (8 in 2-D) piece of each class and every
            piece with at least this fraction of its voxels (1.0: the largest only; 0: no
            removal). Removed voxels become background (0).
        fill_holes: set background voxels fully enclosed by a class (in 3-D) to that class. It
            runs after all removals, so a removed island of another organ inside an organ becomes
            part of it; voxels of kept pieces never change class.

    Returns:
        A new label map, same shape and dtype.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"clean_labels needs an integer label map, got {labels.dtype}")
    if not 0 <= min_fraction <= 1:
        raise ValueError(f"min_fraction must lie in [0, 1], got {min_fraction}")
    cleaned = labels.copy()
    wanted = None if classes is None else {int(c) for c in classes}
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)  # all face, edge and corner neighbours
    boxes = [
        (value, box) for value, box in enumerate(ndimage.find_objects(labels), start=1)
        if box is not None and (wanted is None or value in wanted)
    ]  # fmt: skip
    # reason: every removal before any filling, so an island of one organ removed from inside
    # another is filled by it whatever the class order
    if min_fraction > 0:
        for value, box in boxes:
            region = cleaned[box]  # a view: edits land in ``cleaned``
            mask = region == value
            pieces, count = ndimage.label(mask, structure=structure)
            if count > 1:
                sizes = np.bincount(pieces.ravel())
                sizes[0] = 0
                kept = sizes >= min_fraction * sizes.max()
                kept[0] = False
                region[mask & ~kept[pieces]] = 0
    if fill_holes:
        for value, box in boxes:
            region = cleaned[box]
            region[ndimage.binary_fill_holes(region == value) & (region == 0)] = value
    return cleaned
