"""Pairing image files with their label files, as the CLI and the recipes receive them.

Which files count as images comes from the reader table (:data:`braunet.io.FORMATS`), so a folder
is listed exactly as :func:`braunet.io.read_image` would read it; a folder of ``.dcm`` files is
one DICOM series, not a folder of images.

A label volume is used only on its image's voxel grid (:func:`label_on_image_grid`): stored in
another axis order or with flipped axes (a NIfTI label map beside a DICOM series, an LPS file
beside an RAS one) it is reoriented exactly, voxel for voxel; a grid that is shifted, rotated or
resampled is refused, naming both files and the distance in mm.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from braunet.errors import InputError
from braunet.io import SUPPORTED_SUFFIXES, Reorientation, Volume, file_stem, format_of
from braunet.io.formats import DICOM_FILE_SUFFIXES

__all__ = ["GRID_TOLERANCE", "collect_pairs", "is_volume_path", "label_on_image_grid"]

# Largest distance between a label voxel's centre and the image voxel it is taken for, as a fraction
# of the image's smallest voxel size: far above the rounding of header floats (1e-5 mm on the shared
# DICOM/NIfTI pair), far below anything that moves a label to another voxel.
GRID_TOLERANCE = 0.1


def is_volume_path(path: Path) -> bool:
    """True for a 3-D input: a DICOM series folder or a file of a volume format (NIfTI)."""
    if path.is_dir():
        return True
    fmt = format_of(path)
    return fmt is not None and not fmt.is_2d


def _list_files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    usable = [p for p in files if format_of(p) is not None]
    if not usable:
        raise InputError(f"{folder}: no image files (expected {', '.join(SUPPORTED_SUFFIXES)})")
    return usable


def _is_dicom_series(folder: Path) -> bool:
    files = [p for p in folder.iterdir() if p.is_file()]
    shown = [p for p in files if not p.name.startswith(".")]
    return bool(files) and all(p.suffix.lower() in (*DICOM_FILE_SUFFIXES, "") for p in shown)


def collect_pairs(images: Sequence[str | os.PathLike], labels: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Pair image and label paths as the CLI receives them.

    * One folder of images and one folder of labels: matched by file stem
      (:func:`braunet.io.file_stem`: ``frame.tif`` with ``frame.png``); every image needs a label,
      extra labels are ignored. A folder of ``.dcm`` files is one DICOM series, not a folder of images.
    * Otherwise two equally long lists of files (or DICOM folders), paired in order.

    Raises:
        InputError: missing paths, unequal counts or images without a label (named).
    """
    image_paths, label_paths = [Path(p).expanduser() for p in images], [Path(p).expanduser() for p in labels]
    for path in image_paths + label_paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    if not image_paths or not label_paths:
        raise InputError("give at least one image and one label path")
    if (
        len(image_paths) == len(label_paths) == 1
        and image_paths[0].is_dir()
        and label_paths[0].is_dir()
        and not _is_dicom_series(image_paths[0])
    ):
        by_stem: dict[str, Path] = {}
        for path in _list_files(label_paths[0]):
            by_stem.setdefault(file_stem(path), path)
        pairs, missing = [], []
        for path in _list_files(image_paths[0]):
            if file_stem(path) in by_stem:
                pairs.append((path, by_stem[file_stem(path)]))
            else:
                missing.append(path.name)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputError(
                f"{label_paths[0]}: no label for {len(missing)} image(s) of {image_paths[0]}: {shown} "
                "(labels are matched by file name without suffix)"
            )
        return pairs
    if len(image_paths) != len(label_paths):
        raise InputError(f"{len(image_paths)} image paths but {len(label_paths)} label paths (paired in order)")
    return list(zip(image_paths, label_paths, strict=True))


def _grid_name(volume: Volume) -> str:
    size = " x ".join(str(n) for n in volume.spatial_shape)
    spacing = " x ".join(f"{v:.3g}" for v in volume.spacing)
    return f"{size} voxels of {spacing} mm, {volume.orientation}"


def label_on_image_grid(
    image: Volume, label: Volume, image_path: str | os.PathLike, label_path: str | os.PathLike
) -> np.ndarray:
    """The label array on the image's voxel grid, or a refusal; 2-D pairs are returned as they are.

    For volumes the label voxel ``l`` lies at world point ``label.affine @ l``; ``M =
    inv(image.affine) @ label.affine`` takes it to image voxel coordinates. When ``M`` is a signed
    axis permutation that maps the label's grid onto the image's grid (same voxels, stored in
    another axis order or direction), the label is transposed and flipped onto the image grid
    exactly (no resampling). Otherwise the label lies elsewhere and is refused.

    Args:
        image: the image the labels belong to; its grid is the target.
        label: the label volume (or 2-D mask) as read.
        image_path, label_path: named in the messages.

    Returns:
        ``(*image.spatial_shape)`` label array for volumes (dtype of the file); for 2-D images the
        mask array unchanged (2-D images carry no geometry; callers check the shape).

    Raises:
        InputError: one line naming both files: a 2-D mask for a volume (or the reverse), grids
            of different size, or voxels more than :data:`GRID_TOLERANCE` of a voxel apart (the
            largest distance in mm is given).
    """
    if image.is_2d and label.is_2d:
        return np.asarray(label.array)
    if image.is_2d != label.is_2d:
        kinds = ("a 2-D image", "a volume") if image.is_2d else ("a volume", "a 2-D mask")
        raise InputError(f"{label_path}: {kinds[1]} cannot label {kinds[0]} ({image_path})")
    try:
        to_image = np.linalg.inv(image.affine) @ label.affine  # label voxel -> image voxel coordinates
    except np.linalg.LinAlgError:
        raise InputError(f"{image_path}: the voxel-to-world affine is singular; the image has no grid") from None
    linear = to_image[:3, :3]
    axes = np.argmax(np.abs(linear), axis=0)  # image axis each label axis runs along
    signs = np.sign(linear[axes, range(3)])
    shape_i, shape_l = image.spatial_shape, label.spatial_shape
    if sorted(axes.tolist()) != [0, 1, 2]:
        raise InputError(
            f"{label_path}: label grid ({_grid_name(label)}) is oblique to the image's ({_grid_name(image)}, "
            f"{image_path}); resample the labels onto the image first"
        )
    if any(shape_i[axes[b]] != shape_l[b] for b in range(3)):
        raise InputError(
            f"{label_path}: label volume shape {shape_l} ({_grid_name(label)}) differs from the image's "
            f"{shape_i} ({_grid_name(image)}, {image_path}); resample the labels onto the image first"
        )
    exact = np.zeros((4, 4))  # the signed permutation that puts label voxel l on image voxel P l + t
    exact[3, 3] = 1.0
    for b in range(3):
        exact[axes[b], b] = signs[b]
        exact[axes[b], 3] = 0.0 if signs[b] > 0 else shape_l[b] - 1
    corners = np.array([[*c, 1.0] for c in itertools.product(*[(0, n - 1) for n in shape_l])]).T  # (4, 8)
    offsets = image.affine[:3, :3] @ ((to_image - exact) @ corners)[:3]  # mm, world axes
    distance = float(np.linalg.norm(offsets, axis=0).max())
    if distance > GRID_TOLERANCE * min(image.spacing):
        raise InputError(
            f"{label_path}: labels are not on the voxel grid of {image_path} (voxels up to {distance:.1f} mm "
            f"apart; label {label.orientation}, image {image.orientation}); resample the labels onto the image first"
        )
    ornt = np.array([[float(axes[b]), float(signs[b])] for b in range(3)])
    reorientation = Reorientation(ornt=ornt, original_shape=shape_l, original_affine=label.affine,
                                  canonical_affine=image.affine)  # fmt: skip
    return reorientation.apply(np.asarray(label.array))
