"""The three resizes of the pipeline, each matching the code a model was trained with.

* ``spline3``: cubic B-spline zoom exactly as ``scipy.ndimage.zoom(slice, factors, order=3)`` in the
  official Synapse test (prefilter, mirror boundaries, first and last pixel centres aligned). A
  separable zoom is linear along each axis, so it equals ``Zy @ x @ Zx.T`` with ``Z = zoom(eye(n))``;
  computing it as two batched matmuls gives scipy's numbers (to float32 rounding) on any device,
  and is several times faster than scipy on a CPU.
* ``bilinear``: half-pixel bilinear without anti-aliasing, as OpenCV's ``INTER_LINEAR`` that the
  official ISIC/CVC pipeline (albumentations ``Resize``) uses.
* nearest, for label maps going back to the slice grid, with the same pixel-centre convention as
  the forward resize (corner-aligned for ``spline3``, like the official ``zoom(pred, order=0)``;
  half-pixel for ``bilinear``).
* ``centred``: the fixed-spacing recipe (``spacing_mm``). Both grids are centred on each other and
  sampled in millimetres: output sample ``o`` lies at ``(o - (n_out - 1) / 2) * spacing_out`` from the
  centre, input pixel ``r`` at ``(r - (n_in - 1) / 2) * spacing_in``, so one matrix per axis does the
  resampling and the centre crop or pad at once (no rounding of an intermediate size). Linear
  interpolation, widened to a tent of ``spacing_out / spacing_in`` input pixels when it shrinks
  (anti-aliasing, as PIL's bilinear); :func:`centred_matrix` builds it for both directions.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

__all__ = [
    "RESIZES",
    "centred_indices",
    "centred_coverage",
    "centred_matrix",
    "centred_resample",
    "nearest_indices",
    "resize_images",
    "resize_nearest",
    "resized_ones",
    "spline_matrix",
]

RESIZES = ("spline3", "bilinear")


@functools.lru_cache(maxsize=32)
def spline_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix Z with ``Z @ v == scipy.ndimage.zoom(v, n_out / n_in, order=3)``."""
    matrix = ndimage.zoom(np.eye(n_in), (n_out / n_in, 1.0), order=3)
    if matrix.shape != (n_out, n_in):  # reason: zoom rounds n_in * factor; guard against float drift
        raise AssertionError(f"spline zoom {n_in} -> {n_out} gave {matrix.shape[0]} samples")
    return matrix


@functools.lru_cache(maxsize=32)
def _spline_tensor(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """float32 Z for the device. The spline prefilter's weights decay as 0.268^distance, so far
    entries underflow to float32 denormals, which make CPU matmuls ~30x slower; entries below 1e-8
    (together under 2e-8 of a row's unit sum) are set to zero."""
    matrix = spline_matrix(n_in, n_out)
    matrix = np.where(np.abs(matrix) < 1e-8, 0.0, matrix)
    return torch.from_numpy(matrix).to(device=device, dtype=torch.float32)


def resize_images(x: Tensor, size: int, method: str) -> Tensor:
    """Resize float images (B, C, H, W) -> (B, C, size, size) with ``method`` in :data:`RESIZES`."""
    height, width = x.shape[-2:]
    if (height, width) == (size, size):  # reason: the official test skips the zoom at the model size
        return x
    if method == "spline3":
        zy = _spline_tensor(height, size, x.device)
        zx = _spline_tensor(width, size, x.device)
        return zy @ x @ zx.T
    if method == "bilinear":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    raise ValueError(f"unknown resize {method!r}; known: {', '.join(RESIZES)}")


@functools.lru_cache(maxsize=32)
def resized_ones(shape: tuple[int, int], size: int, method: str, device: torch.device) -> Tensor:
    """``resize_images`` of an all-ones (H, W) image: (size, size) float32.

    All ones for bilinear and for no resize. For ``spline3`` it is the outer product of the
    matrices' row sums: 1, except that scipy's zoom returns 0 for an output sample whose source
    coordinate rounds past the last pixel (e.g. the last row and column of 512 -> 224), which the
    official pipeline inherits and so do we.
    """
    height, width = shape
    if method != "spline3" or (height, width) == (size, size):
        return torch.ones(size, size, device=device)
    return torch.outer(_spline_tensor(height, size, device).sum(1), _spline_tensor(width, size, device).sum(1))


@functools.lru_cache(maxsize=64)
def nearest_indices(n_out: int, n_in: int, align_corners: bool) -> np.ndarray:
    """Source index (into n_in samples) of each of n_out nearest-neighbour output samples."""
    out = np.arange(n_out, dtype=np.float64)
    if align_corners:  # scipy.ndimage.zoom(order=0): centres of the first and last samples coincide
        source = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
        index = np.floor(source + 0.5)
    else:  # half-pixel centres, as OpenCV/PyTorch "nearest-exact"
        index = np.floor((out + 0.5) * (n_in / n_out))
    return np.clip(index, 0, n_in - 1).astype(np.intp)


def resize_nearest(stack: np.ndarray, shape: tuple[int, int], method: str) -> np.ndarray:
    """Nearest-neighbour resize of a label/score stack (B, h, w) -> (B, *shape), inverse of ``method``."""
    if stack.shape[1:] == tuple(shape):
        return stack
    align = method == "spline3"
    rows = nearest_indices(shape[0], stack.shape[1], align)
    cols = nearest_indices(shape[1], stack.shape[2], align)
    return stack[:, rows[:, None], cols[None, :]]


def _centred_positions(n_out: int, spacing_out: float, n_in: int, spacing_in: float) -> np.ndarray:
    """Input pixel coordinate (float) of each output sample centre, both grids centred on each other."""
    return (np.arange(n_out) - (n_out - 1) / 2) * (spacing_out / spacing_in) + (n_in - 1) / 2


@functools.lru_cache(maxsize=64)
def centred_matrix(n_in: int, spacing_in: float, n_out: int, spacing_out: float, pad: bool) -> np.ndarray:
    """(n_out, n_in) float64 weights: ``M @ v`` samples a line of ``n_in`` pixels of ``spacing_in`` mm on
    ``n_out`` centred samples of ``spacing_out`` mm (see the module docstring).

    ``pad=True`` (slices -> network): each row is divided by its full kernel sum, including the virtual
    pixels beyond the line, so samples over the edge fade to 0 (the caller subtracts its pad value
    first) and samples wholly outside are 0. ``pad=False`` (network -> slices): rows are normalised over
    the pixels that exist (the edge value extends half a sample), and rows with no pixel in reach stay
    all zero, which marks them as outside for the caller.
    """
    source = _centred_positions(n_out, spacing_out, n_in, spacing_in)
    width = max(1.0, spacing_out / spacing_in)  # tent half-width in input pixels
    lo = min(0, int(np.floor(source.min() - width)))  # every input pixel and every pixel in a kernel's reach
    hi = max(n_in - 1, int(np.ceil(source.max() + width)))
    pixels = np.arange(lo, hi + 1, dtype=np.float64)
    weights = np.clip(1.0 - np.abs(pixels[None, :] - source[:, None]) / width, 0.0, None)  # (n_out, all pixels)
    inside = (pixels >= 0) & (pixels <= n_in - 1)
    total = weights.sum(1) if pad else weights[:, inside].sum(1)
    matrix = weights[:, inside] / np.where(total > 0, total, 1.0)[:, None]
    return matrix


@functools.lru_cache(maxsize=64)
def _centred_tensor(n_in: int, spacing_in: float, n_out: int, spacing_out: float, pad: bool,
                    device: torch.device) -> Tensor:  # fmt: skip
    return torch.from_numpy(centred_matrix(n_in, spacing_in, n_out, spacing_out, pad)).to(device, torch.float32)


def centred_resample(
    x: Tensor, shape: tuple[int, int], spacing_in: tuple[float, float], spacing_out: tuple[float, float], pad: bool
) -> Tensor:
    """Images (B, C, H, W) of pixel size ``spacing_in`` (rows, cols mm) -> (B, C, *shape) of ``spacing_out``.

    Two matmuls with :func:`centred_matrix` (``pad`` as there). With ``pad=False`` the rows and columns
    of the output that no input pixel reaches are 0; :func:`centred_coverage` names them.
    """
    height, width = x.shape[-2:]
    my = _centred_tensor(height, float(spacing_in[0]), shape[0], float(spacing_out[0]), pad, x.device)
    mx = _centred_tensor(width, float(spacing_in[1]), shape[1], float(spacing_out[1]), pad, x.device)
    return my @ x @ mx.T


def centred_coverage(
    shape_in: tuple[int, int], spacing_in: tuple[float, float], shape_out: tuple[int, int], spacing_out: tuple[float, float]
) -> np.ndarray:
    """(H_out, W_out) bool: which output pixels an unpadded :func:`centred_resample` reaches from the input."""
    rows = centred_matrix(shape_in[0], float(spacing_in[0]), shape_out[0], float(spacing_out[0]), False).sum(1) > 0
    cols = centred_matrix(shape_in[1], float(spacing_in[1]), shape_out[1], float(spacing_out[1]), False).sum(1) > 0
    return rows[:, None] & cols[None, :]


@functools.lru_cache(maxsize=64)
def centred_indices(n_in: int, spacing_in: float, n_out: int, spacing_out: float) -> np.ndarray:
    """Nearest input pixel of each centred output sample (labels -> network), -1 where it falls outside."""
    index = np.floor(_centred_positions(n_out, spacing_out, n_in, spacing_in) + 0.5).astype(np.intp)
    return np.where((index >= 0) & (index < n_in), index, -1)
