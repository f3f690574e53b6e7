"""Which slices to correct next: rank slices by how unsure the model is about what it segmented.

Active learning for the Fine-tune loop (``braunet suggest``, the Fine-tune widget's "Suggested
slices"). Each slice goes once through the :class:`~braunet.infer.slices.SliceRunner` for its class
probabilities (B, K, S, S) at the model resolution; then, per slice,

* every pixel gets an uncertainty in [0, 1]: the entropy of its class distribution divided by
  ``log K`` (``"entropy"``), or one minus the gap between its two most likely classes (``"margin"``);
* the region that counts is the predicted foreground (any class but 0) dilated by ``band``
  pixels, where boundary errors and missed organ parts lie;
* the score is the region's summed uncertainty over ``max(region area, min_area * S * S)``: the
  mean uncertainty of the region once it is large enough. A slice with no predicted foreground
  scores 0 (a slice of air or of legs has nothing to correct) and a speck of a few uncertain
  pixels cannot outrank an organ the model half-knows.

Suggestions are the highest scores, best first, greedily skipping any slice closer than
``spacing`` slices to one already chosen (neighbouring slices look alike; correcting one teaches
most of what its neighbour would). Slices scoring 0 are never suggested.

Indices: :func:`suggest_volume` counts canonical axial slices from feet to head, the index of the
napari layer's first axis (:mod:`braunet.napari._geometry`) and of ``predict_volume(slices=...)``;
:func:`suggest_slices` counts positions in the stack or list it was given.

Example, with probabilities made by hand (three 32 x 32 slices: nothing, a sure square, an unsure one)::

    >>> import torch
    >>> from braunet.infer.uncertainty import slice_scores, pick_diverse
    >>> p = torch.zeros(3, 2, 32, 32)
    >>> p[:, 0] = 1.0  # all background...
    >>> p[1, :, 8:24, 8:24] = torch.tensor([0.05, 0.95])[:, None, None]  # slice 1: a sure square
    >>> p[2, :, 8:24, 8:24] = torch.tensor([0.4, 0.6])[:, None, None]  # slice 2: an unsure one
    >>> scores, counts = slice_scores(p, band=2)  # entropy summed over the 16 x 16 square / its 20 x 20 region
    >>> [round(float(s), 3) for s in scores], counts[:, 1].tolist()
    ([0.0, 0.183, 0.621], [0, 256, 256])
    >>> pick_diverse(scores.numpy(), n=3, spacing=1)  # slice 0 predicts nothing: never suggested
    [2, 1]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from braunet.errors import InputError
from braunet.infer.engine import MIN_SIZE, _check_finite, _check_rgb_image, _runner, _source, check_input
from braunet.infer.slices import Network, Progress, SliceRunner, StopCheck
from braunet.infer.views import to_view, view_spacing
from braunet.model import ModelCard

if TYPE_CHECKING:
    from braunet.io import Volume

__all__ = ["MEASURES", "Suggestions", "pick_diverse", "pixel_uncertainty", "slice_scores", "suggest_slices",
           "suggest_volume"]  # fmt: skip

MEASURES = ("entropy", "margin")


@dataclass(frozen=True)
class Suggestions:
    """The uncertainty of every slice and the slices to correct next.

    Attributes:
        scores: (N,) float64 per slice, in [0, 1]; 0 where the model predicts no foreground.
        indices: the suggested slices, best first (at most ``n``, ``spacing`` apart).
        classes: per slice, the class ids (> 0) the model predicts somewhere on it, ascending.
        class_names: the model's class names (index = class id).
        measure: ``"entropy"`` or ``"margin"``.
    """

    scores: np.ndarray
    indices: list[int]
    classes: list[list[int]]
    class_names: list[str]
    measure: str

    def rows(self) -> list[dict[str, Any]]:
        """The suggestions as ``{"slice", "score", "classes"}`` dicts (class names), best first: the CLI's JSON."""
        return [{"slice": k, "score": round(float(self.scores[k]), 6),
                 "classes": [self.class_names[c] for c in self.classes[k]]} for k in self.indices]  # fmt: skip


def pixel_uncertainty(probabilities: Tensor, measure: str = "entropy") -> Tensor:
    """Class probabilities (B, K, H, W), K >= 2 -> per-pixel uncertainty (B, H, W) in [0, 1].

    ``"entropy"``: ``-sum p log p / log K`` (1 = all classes equally likely). ``"margin"``: one
    minus the gap between the two largest probabilities (1 = a tie between two classes).
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; known: {', '.join(MEASURES)}")
    if probabilities.ndim != 4 or probabilities.shape[1] < 2:
        raise ValueError(f"expected probabilities (B, K >= 2, H, W), got shape {tuple(probabilities.shape)}")
    if measure == "entropy":
        plogp = probabilities * torch.log(probabilities.clamp_min(1e-12))
        return (-plogp.sum(dim=1) / math.log(probabilities.shape[1])).clamp(0.0, 1.0)
    top2 = probabilities.topk(2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


def slice_scores(
    probabilities: Tensor, *, measure: str = "entropy", band: int = 8, min_area: float = 0.01
) -> tuple[Tensor, Tensor]:
    """Class probabilities (B, K, H, W) -> per-slice scores (B,) float64 and predicted class pixel counts (B, K).

    The score is the summed :func:`pixel_uncertainty` over the predicted foreground (the arg-max
    is not 0) dilated by ``band`` pixels, divided by ``max(area, min_area * H * W)``.
    """
    if band < 0:
        raise ValueError(f"band must be >= 0 pixels, got {band}")
    if not 0 < min_area <= 1:
        raise ValueError(f"min_area must be a share of the slice in (0, 1], got {min_area}")
    batch, classes, height, width = probabilities.shape
    uncertainty = pixel_uncertainty(probabilities, measure)
    labels = probabilities.max(dim=1).indices  # (B, H, W); reason: max(dim) is ~10x faster than argmax on CPU
    foreground = (labels != 0).float()[:, None]
    if band:  # a square dilation, as two 1-D max-pools (rows, then columns): ~band times cheaper than one 2-D pool
        foreground = F.max_pool2d(foreground, (1, 2 * band + 1), stride=1, padding=(0, band))
        foreground = F.max_pool2d(foreground, (2 * band + 1, 1), stride=1, padding=(band, 0))
    region = foreground[:, 0] > 0
    area = region.flatten(1).sum(dim=1).double()
    total = (uncertainty * region).flatten(1).sum(dim=1).double()
    scores = total / area.clamp_min(min_area * height * width)
    offsets = torch.arange(batch, device=labels.device)[:, None] * classes
    counts = torch.bincount((labels.flatten(1) + offsets).flatten(), minlength=batch * classes).view(batch, classes)
    return scores, counts


def pick_diverse(scores: np.ndarray, n: int, spacing: int = 1) -> list[int]:
    """Up to ``n`` indices of the highest positive ``scores`` (N,), best first, no two closer than ``spacing``.

    Greedy: walk the slices from the highest score down and keep one unless it lies within
    ``spacing - 1`` slices of one already kept. Ties go to the lower index.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if spacing < 1:
        raise ValueError(f"spacing must be >= 1 slice, got {spacing}")
    scores = np.asarray(scores, dtype=np.float64)
    chosen: list[int] = []
    for index in np.argsort(-scores, kind="stable").tolist():
        if len(chosen) == n or scores[index] <= 0:
            break
        if all(abs(index - other) >= spacing for other in chosen):
            chosen.append(index)
    return chosen


def _rank(
    runner: SliceRunner,
    read: Callable[[list[int]], np.ndarray | Tensor],
    count: int,
    card: ModelCard,
    *,
    prepared: bool,
    n: int,
    spacing: int,
    measure: str,
    band: int,
    min_area: float,
    progress: Progress | None,
    should_stop: StopCheck | None,
    what: str,
    pixel_mm: tuple[float, float] | None = None,
) -> Suggestions:
    """Score slices ``0..count-1`` read by ``read(batch)`` (raw, or prepared inputs) and pick the suggestions.

    ``pixel_mm``: the raw slices' pixel size (rows, cols), for a ``spacing_mm`` recipe.
    """
    if measure not in MEASURES:
        raise InputError(f"unknown uncertainty measure {measure!r}; known: {', '.join(MEASURES)}")
    pick_diverse(np.zeros(0), n, spacing)  # reason: reject a bad n or spacing before the network runs
    scores = np.zeros(count, dtype=np.float64)
    classes: list[list[int]] = [[] for _ in range(count)]
    batches = runner.run(read, range(count), prepared=prepared, progress=progress, should_stop=should_stop,
                         what=what, probabilities=True, spacing=pixel_mm)  # fmt: skip
    for batch, probabilities, _ in batches:
        batch_scores, counts = slice_scores(torch.from_numpy(probabilities), measure=measure, band=band,
                                            min_area=min_area)  # fmt: skip
        scores[batch] = batch_scores.numpy()
        for k, row in zip(batch, counts.numpy(), strict=True):
            classes[k] = (np.flatnonzero(row[1:]) + 1).tolist()
    return Suggestions(scores, pick_diverse(scores, n, spacing), classes, list(card.class_names), measure)


def suggest_volume(
    model: Network,
    card: ModelCard,
    volume: Volume,
    *,
    n: int = 10,
    spacing: int = 5,
    measure: str = "entropy",
    band: int = 8,
    min_area: float = 0.01,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    precision: str | None = None,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Suggestions:
    """Rank the axial slices of a 3-D volume by the model's uncertainty; suggest ``n`` to correct.

    Args:
        model, card: a CT model and its card (recipe, input size, classes).
        volume: a :class:`braunet.io.Volume` with a 3-D array (I, J, K) in file voxel order; slices
            are its canonical axial slices (feet to head), in the model's view.
        n: how many slices to suggest.
        spacing: no two suggestions closer than this many slices (1: any distinct slices).
        measure: ``"entropy"`` or ``"margin"`` (:func:`pixel_uncertainty`).
        band: pixels (at the model resolution S) added around the predicted foreground.
        min_area: share of the S x S slice below which a region's mean is damped (see the module).
        batch_size, device, amp, precision, progress, should_stop: as for
            :func:`braunet.infer.predict_volume`.

    Raises:
        InputError: what :func:`braunet.infer.engine.check_input` refuses (not a CT model, a volume of
            another modality, not 3-D, NaN/Inf voxels, slices under MIN_SIZE), bad options.
        Cancelled: ``should_stop`` was set.
    """
    from braunet.io import to_canonical

    source = _source(volume)
    recipe = card.recipe
    if volume.is_2d:
        raise InputError(f"{source}: expected a 3-D volume, got a 2-D image (rank images with suggest_slices)")
    check_input(card, volume)  # the checks predict makes: kind, modality, 3-D, non-empty, finite, MIN_SIZE
    canonical, reorientation = to_canonical(volume)
    runner = _runner(model, card, device=device, amp=amp, precision=precision, batch_size=batch_size)
    return _rank(runner, lambda batch: to_view(canonical, batch, recipe.view), canonical.shape[2], card,
                 prepared=False, n=n, spacing=spacing, measure=measure, band=band, min_area=min_area,
                 progress=progress, should_stop=should_stop, what=f"{source}: suggestion",
                 pixel_mm=view_spacing(reorientation.canonical_affine, recipe.view))  # fmt: skip


def suggest_slices(
    model: Network,
    card: ModelCard,
    slices: np.ndarray | Sequence[np.ndarray],
    *,
    n: int = 10,
    spacing: int = 1,
    measure: str = "entropy",
    band: int = 8,
    min_area: float = 0.01,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    precision: str | None = None,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    pixel_mm: tuple[float, float] | None = None,
) -> Suggestions:
    """Rank 2-D slices or images by the model's uncertainty; suggest ``n`` to correct.

    Args:
        slices: a stack (N, H, W[, 3]) or a list of N arrays (H, W[, 3]) of any sizes, in the
            model's view and its raw units: HU for a CT model (a napari CT layer's slices after
            :func:`braunet.infer.convert_view` to ``card.recipe.view``), 8-bit grey or RGB for an
            image model.
        spacing: no two suggestions closer than this many positions; 1 (the default) suits
            unrelated images; use more for the slices of a volume or the frames of a video.
        n, measure, band, min_area, batch_size, device, amp, precision, progress, should_stop: as for
            :func:`suggest_volume`.
        pixel_mm: the slices' pixel size (rows, cols) in mm, one for all; needed by a model whose
            recipe resamples to fixed-size pixels (``spacing_mm``, e.g. the bundled CT model).

    Raises:
        InputError: an item that is not a 2-D slice/image the model takes (shape, dtype, NaN/Inf,
            under MIN_SIZE), bad options.
        Cancelled: ``should_stop`` was set.
    """
    items = list(slices) if not isinstance(slices, np.ndarray) else slices
    for position in range(len(items)):
        _check_slice(np.asarray(items[position]), card, f"slice {position}")
    runner = _runner(model, card, device=device, amp=amp, precision=precision, batch_size=batch_size)

    def read(batch: list[int]) -> Tensor:  # prepared here: the items may differ in size
        if isinstance(items, np.ndarray):
            return runner.prepare(np.ascontiguousarray(items[batch]), pixel_mm)
        return torch.cat([runner.prepare(np.asarray(items[k])[None], pixel_mm) for k in batch])

    return _rank(runner, read, len(items), card, prepared=True, n=n, spacing=spacing, measure=measure, band=band,
                 min_area=min_area, progress=progress, should_stop=should_stop, what="suggestion")  # fmt: skip


def _check_slice(image: np.ndarray, card: ModelCard, source: str) -> None:
    """Raise InputError unless ``image`` is one 2-D slice (CT, HU) or image (grey/RGB uint8) the model takes."""
    if card.recipe.kind == "rgb":
        _check_rgb_image(image, source)
        return
    if image.ndim != 2:
        raise InputError(f"{source}: model {card.name!r} takes 2-D CT slices (H, W) in HU, got shape {image.shape}")
    _check_finite(image[..., None], source)
    if min(image.shape) < MIN_SIZE:
        raise InputError(f"{source}: slice is {image.shape[0]}x{image.shape[1]} px, too small (need >= {MIN_SIZE})")
