"""How a :class:`braunet.io.Volume` is laid out as a napari layer, and back (NumPy only, no napari).

Volumes are shown as axial slices in the radiological convention, the picture the engine's
``"radiological"`` view gives the network (:mod:`braunet.infer.views`):

* the volume is reoriented to its closest RAS+ grid (:func:`braunet.io.to_canonical`, flips and
  transposes only), then the layer array is ``layer[k, r, c] = canonical[I-1-c, J-1-r, k]``: shape
  ``(K, J, I)``, the dims slider runs over axial slices from feet to head, rows go from anterior
  (top) to posterior and columns from the patient's right (screen left) to left;
* world coordinates are DICOM patient coordinates in millimetres (LPS: x to the patient's Left,
  y Posterior, z Superior), in napari's axis order ``(z, y, x)``, through positive ``scale`` and a
  ``translate``; exact for non-oblique volumes. For an oblique volume the displayed grid drops the
  small rotation (``LayerGeometry.oblique``), but nothing else changes: every computation maps
  back through the stored geometry, never through world coordinates;
* the source affine, the :class:`~braunet.io.Reorientation` and the source header travel in
  ``layer.metadata["braunet"]`` (a :class:`LayerGeometry`), so the writer saves labels on the
  original voxel grid with the exact source affine.

2-D images (endoscopy, dermoscopy) are shown as they are: ``(H, W, 3)`` RGB or ``(H, W)`` grey,
labels ``(H, W)``, scale 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from braunet.infer.views import from_view, to_view
from braunet.io import Reorientation, Volume, to_canonical

__all__ = [
    "METADATA_KEY",
    "LayerGeometry",
    "geometry_from_layer_state",
    "layer_from_source",
    "layer_to_source",
    "layer_volume",
    "view_pixel_mm",
    "volume_to_layer",
]

METADATA_KEY = "braunet"
_OBLIQUE_TOLERANCE = 1e-4  # relative off-diagonal size of the canonical affine above which we say "oblique"


@dataclass(frozen=True, eq=False)
class LayerGeometry:
    """Everything needed to go from a layer's array to the source file's voxel grid and back.

    Attributes:
        like: the source :class:`Volume` with a zero-memory placeholder array (its affine, header,
            source path and modality are real): the ``like`` of :func:`braunet.io.write_labels`.
        reorientation: original grid -> canonical grid (identity for 2-D images).
        scale, translate: the layer's napari scale and translate (``(z, y, x)`` mm, or ``(y, x)`` px).
        oblique: the canonical affine has a rotation the display drops.
    """

    like: Volume
    reorientation: Reorientation
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    oblique: bool = False

    @property
    def is_2d(self) -> bool:
        return self.like.is_2d

    @property
    def source_affine(self) -> np.ndarray:
        """(4, 4) voxel -> RAS+ mm of the source file's grid."""
        return self.like.affine

    @property
    def source_shape(self) -> tuple[int, ...]:
        """Spatial shape of the source grid: (I, J, K) or (H, W)."""
        return self.like.spatial_shape

    @property
    def layer_shape(self) -> tuple[int, ...]:
        """Spatial shape of the layer array: (K, J, I) of the canonical grid, or (H, W)."""
        if self.is_2d:
            return self.source_shape
        i, j, k = self.reorientation.canonical_shape
        return (k, j, i)

    def layer_kwargs(self) -> dict[str, Any]:
        """``scale``, ``translate``, ``axis_labels`` and ``metadata`` for any layer on this grid."""
        return {"scale": self.scale, "translate": self.translate, "axis_labels": self.axis_labels,
                "metadata": {METADATA_KEY: self}}  # fmt: skip

    @property
    def axis_labels(self) -> tuple[str, ...]:
        """Where each world axis points: LPS patient axes (z up = Superior) for volumes, rows/columns for images."""
        return ("y", "x") if self.is_2d else ("S", "P", "L")

    def data_to_world(self, index: np.ndarray) -> np.ndarray:
        """Layer array coordinates (..., ndim) -> napari world coordinates (same shape)."""
        return np.asarray(self.translate) + np.asarray(self.scale) * np.asarray(index, dtype=np.float64)

    def world_to_data(self, world: np.ndarray) -> np.ndarray:
        return (np.asarray(world, dtype=np.float64) - np.asarray(self.translate)) / np.asarray(self.scale)


def _placeholder(volume: Volume) -> Volume:
    """``volume`` with its array replaced by a read-only zero-stride stand-in of the same shape."""
    stand_in = np.broadcast_to(np.zeros((), dtype=volume.array.dtype), volume.array.shape)
    return dataclasses.replace(volume, array=stand_in)


def _display_frame(reorientation: Reorientation) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
    """scale, translate (z, y, x) in LPS mm of the layer grid, and whether the volume is oblique."""
    affine = reorientation.canonical_affine
    i, j, _ = reorientation.canonical_shape
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)  # (sx, sy, sz) along canonical i, j, k
    off_diagonal = linear - np.diag(np.diag(linear))
    oblique = bool(np.abs(off_diagonal).max() > _OBLIQUE_TOLERANCE * spacing.max())
    # World position of layer voxel (0, 0, 0) = canonical voxel (I-1, J-1, 0), RAS -> LPS.
    ras = affine @ np.array([i - 1, j - 1, 0, 1.0])
    lps = (-ras[0], -ras[1], ras[2])
    scale = (float(spacing[2]), float(spacing[1]), float(spacing[0]))
    translate = (float(lps[2]), float(lps[1]), float(lps[0]))
    return scale, translate, oblique


def volume_to_layer(volume: Volume) -> tuple[np.ndarray, LayerGeometry]:
    """A Volume -> (layer array, geometry). 3-D: (K, J, I) radiological axial stack; 2-D: as is."""
    canonical, reorientation = to_canonical(volume)
    if volume.is_2d:
        scale = tuple(float(s) for s in volume.spacing)
        geometry = LayerGeometry(_placeholder(volume), reorientation, scale, (0.0, 0.0))
        return np.asarray(volume.array), geometry
    scale, translate, oblique = _display_frame(reorientation)
    geometry = LayerGeometry(_placeholder(volume), reorientation, scale, translate, oblique)
    return layer_from_canonical(canonical), geometry


def layer_from_canonical(canonical: np.ndarray) -> np.ndarray:
    """Canonical (I, J, K) -> C-contiguous layer array (K, J, I)."""
    return to_view(canonical, range(canonical.shape[2]), "radiological")


def layer_from_source(array: np.ndarray, geometry: LayerGeometry, slices: Sequence[int] | None = None) -> np.ndarray:
    """An array on the source grid (a label map, a confidence map) -> C-contiguous layer array.

    ``slices``: convert only these layer slices (axis 0, the canonical axial index) and leave the
    others 0, for an array that is 0 elsewhere anyway (a prediction of some slices): a "current
    slice" run then reorders one slice instead of the whole volume, and the zeros elsewhere cost
    no memory traffic (``np.zeros`` pages are mapped lazily). Ignored for 2-D images.
    """
    array = np.asarray(array)
    if array.shape[: len(geometry.source_shape)] != geometry.source_shape:
        raise ValueError(f"array of shape {array.shape} is not on the source grid {geometry.source_shape}")
    if geometry.is_2d:
        return np.ascontiguousarray(array)
    canonical = geometry.reorientation.apply(array, contiguous=False)  # a view: to_view copies what it takes
    if slices is None:
        return layer_from_canonical(canonical)
    index = sorted({int(k) for k in slices})
    layer = np.zeros(geometry.layer_shape + array.shape[3:], dtype=array.dtype)
    layer[index] = to_view(canonical, index, "radiological")
    return layer


def layer_to_source(data: np.ndarray, geometry: LayerGeometry, *, contiguous: bool = True) -> np.ndarray:
    """A layer array (K, J, I) or (H, W) -> C-contiguous array on the source grid (I, J, K) or (H, W).

    ``contiguous=False`` gives a strided view of ``data`` instead of a copy.
    """
    data = np.asarray(data)
    if data.shape[: len(geometry.layer_shape)] != geometry.layer_shape:
        raise ValueError(f"layer data of shape {data.shape} does not match the layer grid {geometry.layer_shape}")
    if geometry.is_2d:
        return np.ascontiguousarray(data) if contiguous else data
    return geometry.reorientation.undo(from_view(data, "radiological"), contiguous=contiguous)


def layer_volume(data: np.ndarray, geometry: LayerGeometry, *, copy: bool = True) -> Volume:
    """A layer's array as a Volume on the source grid with the source affine (what the engine takes).

    ``copy=False``: the Volume's array is a strided view of ``data`` (no copy); the engine reorders
    the voxels it reads itself, so the Segment widget hands it the view and saves a whole-volume copy.
    """
    return dataclasses.replace(geometry.like, array=layer_to_source(data, geometry, contiguous=copy))


def geometry_from_layer_state(
    data: np.ndarray, scale: tuple[float, ...], translate: tuple[float, ...], metadata: dict | None, rgb: bool = False
) -> LayerGeometry:
    """The geometry of a layer: ours from its metadata, or one built from its scale and translate.

    A layer opened by another reader (or made in a console) is read in our display convention: a
    3-D array is ``(slices, rows, columns)`` with rows running anterior -> posterior and columns
    from the patient's right to left (how DICOM stores axial slices), its scale in mm.
    """
    found = (metadata or {}).get(METADATA_KEY)
    if isinstance(found, LayerGeometry):
        return found
    data = np.asarray(data) if not hasattr(data, "shape") else data
    spatial = data.shape[:-1] if rgb else data.shape
    if len(spatial) == 2:
        volume = Volume(array=np.broadcast_to(np.zeros((), np.uint8), data.shape), affine=np.eye(4), source=None,
                        modality="RGB" if rgb else "grey", is_2d=True)  # fmt: skip
        return LayerGeometry(volume, _identity(volume), tuple(float(s) for s in scale[-2:]), (0.0, 0.0))
    if len(spatial) != 3:
        raise ValueError(f"expected a 2-D or 3-D layer, got data of shape {data.shape}")
    k, j, i = spatial
    sz, sy, sx = (float(s) for s in scale[-3:])
    tz, ty, tx = (float(t) for t in translate[-3:])
    # Invert _display_frame for a diagonal RAS+ affine: x_RAS = -(tx + sx (I-1-i)), y_RAS = -(ty + sy (J-1-j)).
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = (-(tx + sx * (i - 1)), -(ty + sy * (j - 1)), tz)
    volume = Volume(array=np.broadcast_to(np.zeros((), getattr(data, "dtype", np.float32)), (i, j, k)), affine=affine,
                    source=None, modality="unknown", is_2d=False)  # fmt: skip
    return LayerGeometry(volume, _identity(volume), (sz, sy, sx), (tz, ty, tx))


def _identity(volume: Volume) -> Reorientation:
    """The Reorientation of a grid that already is canonical (what to_canonical would return, without copying)."""
    ndim = len(volume.spatial_shape)
    ornt = np.array([[axis, 1.0] for axis in range(ndim)])
    return Reorientation(ornt=ornt, original_shape=volume.spatial_shape, original_affine=volume.affine.copy(),
                         canonical_affine=volume.affine.copy())  # fmt: skip


def view_pixel_mm(scale: Any, view: str) -> tuple[float, float]:
    """A layer's in-plane scale (its last two entries: display rows, columns) as the pixel size (rows, cols)
    of the slice in a model's ``view``, read in mm as the Segment widget reads it (``"ras"`` is a transpose)."""
    rows, cols = (float(v) for v in np.asarray(scale, dtype=float)[-2:])
    return (rows, cols) if view == "radiological" else (cols, rows)
