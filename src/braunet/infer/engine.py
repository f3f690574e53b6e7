"""Slice-wise inference: a volume or a 2-D image in, a label map on the exact input grid out.

Volumes: reorient to the closest RAS+ canonical stack (:func:`braunet.io.to_canonical`), take the
axial slices in batches in the model's view (:mod:`braunet.infer.views`), and hand them to the
:class:`~braunet.infer.slices.SliceRunner` (the model's recipe, the network under
``torch.inference_mode`` with autocast on GPUs, the arg-max at the model resolution, labels resized
back to the slice with nearest neighbours as the official test does); then undo the
reorientation, so the labels index exactly like the input array and share its affine.

Memory is bounded by one batch: float logits never exist for more than ``batch_size`` slices;
each batch's labels go straight into a preallocated uint8 (or uint16) stack.

Example (needs a CT file)::

    from braunet.io import read_image
    from braunet.zoo import load_model
    model, card = load_model("ct-abdomen-8")
    prediction = predict(model, card, read_image("ct.nii.gz"), progress=print)
    prediction.labels.shape  # == volume.array.shape
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from braunet.errors import Cancelled, InputError
from braunet.infer.device import bf16_validated
from braunet.infer.slices import Network, Progress, SliceRunner, StopCheck, stop_check
from braunet.infer.views import from_view, to_view, view_shape, view_spacing
from braunet.model import ModelCard

if TYPE_CHECKING:
    from braunet.io import Volume

__all__ = [
    "MIN_SIZE", "Prediction", "check_ct_modality", "check_input", "check_input_kind", "predict", "predict_image",
    "predict_volume",
]  # fmt: skip

MIN_SIZE = 16  # smallest slice/image side accepted, in pixels: below it there is nothing to segment
# what a CT recipe accepts: CT, or a volume whose file does not say (NIfTI, a DICOM series without a Modality tag)
_CT_MODALITIES = ("CT", "UNKNOWN")
_FINITE_CHECK_VOXELS = 1 << 24  # chunk of the NaN/Inf scan, so it needs no volume-sized temporary


@dataclass
class Prediction:
    """Result of :func:`predict_volume` / :func:`predict_image`.

    ``labels`` has the input's spatial shape and voxel order (uint8, or uint16 beyond 256 classes);
    ``confidence`` (same shape, float32 in [0, 1], or uint8 = round(255 p)) is the max softmax
    probability, or the foreground sigmoid probability of a binary model; ``slices`` are the
    canonical axial indices that were segmented (others are 0); ``precision`` is what the network
    ran in ("fp32", "bf16", or "fp16" under GPU AMP).
    """

    labels: np.ndarray
    confidence: np.ndarray | None
    class_names: list[str]
    slices: list[int]
    precision: str = "fp32"


def predict(model: Network, card: ModelCard, volume: Volume, **options: Any) -> Prediction:
    """Segment ``volume`` with :func:`predict_image` if it is 2-D, else :func:`predict_volume`."""
    if volume.is_2d:
        options.pop("slices", None)
        options.pop("batch_size", None)
        return predict_image(model, card, volume, **options)
    return predict_volume(model, card, volume, **options)


def predict_volume(
    model: Network,
    card: ModelCard,
    volume: Volume,
    *,
    slices: Sequence[int] | range | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    precision: str | None = None,
    confidence: bool | str = False,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Prediction:
    """Segment a 3-D volume slice by slice along its canonical axial axis.

    Args:
        model: a BRAU-Net++, or any callable mapping (N, C, S, S) to (N, K, S, S) logits.
        card: the model's card: class names, the input size and classes (``card.config``) and the
            preprocessing recipe.
        volume: a :class:`braunet.io.Volume` with a 3-D array (I, J, K) in file voxel order.
        slices: canonical axial indices to segment (None = all); labels elsewhere are 0.
        batch_size: slices per network call (halved automatically if a GPU runs out of memory).
        device: "auto", "cpu", "cuda", "mps" or a torch.device (the model is moved there);
            None keeps the model where it is.
        amp: autocast on GPUs (None = on for CUDA/MPS); ignored on CPUs and when ``precision`` is given.
        precision: "auto", "fp32" or "bf16" (``auto``: bf16 where the hardware runs it natively and
            the card records it validated, :func:`braunet.infer.device.resolve_precision`); None leaves it to ``amp``.
        confidence: False, True/"float32" or "uint8".
        progress: called as ``progress(done, total)`` in slices, first with done = 0.
        should_stop: a callable or a ``threading.Event``; when it is set, :class:`Cancelled` is raised
            before the next batch.
    Raises:
        InputError: wrong kind of image for the model (an RGB model, or a volume whose modality is
            known and not CT, e.g. an MR series), NaN/Inf voxels, slice index out of range.
        Cancelled: ``should_stop`` was set.
    """
    source = _source(volume)
    recipe = card.recipe
    if volume.is_2d:
        check_input_kind(card, False, source)
        raise InputError(f"{source}: expected a 3-D volume, got an array of shape {np.shape(volume.array)}")
    check_input(card, volume)

    from braunet.io import to_canonical

    # reason: some slices (a "current slice" click) read only those from a view; a copy of the whole
    # volume would cost more than the network on a large CT. All slices read faster from a contiguous copy.
    canonical, reorientation = to_canonical(volume, contiguous=slices is None)
    depth = canonical.shape[2]
    indices = _slice_indices(slices, depth, source)
    height, width = view_shape(canonical.shape, recipe.view)

    runner = _runner(model, card, device=device, amp=amp, precision=precision, batch_size=batch_size,
                     confidence=confidence)
    labels_stack = np.zeros((depth, height, width), dtype=runner.label_dtype)  # model-view order (K, H, W)
    conf_stack: np.ndarray | None = np.zeros((depth, height, width), runner.conf_dtype) if runner.conf_dtype else None
    spacing = view_spacing(reorientation.canonical_affine, recipe.view)
    batches = runner.run(lambda batch: to_view(canonical, batch, recipe.view), indices, spacing=spacing,
                         progress=progress, should_stop=should_stop, what=f"{source}: prediction")  # fmt: skip
    for batch, labels, conf in batches:
        labels_stack[batch] = labels
        if conf_stack is not None:
            conf_stack[batch] = conf

    def restore(stack: np.ndarray) -> np.ndarray:  # (K, H, W) model view -> input voxel order
        return np.ascontiguousarray(reorientation.undo(from_view(stack, recipe.view)))

    return Prediction(
        labels=restore(labels_stack),
        confidence=restore(conf_stack) if conf_stack is not None else None,
        class_names=list(card.class_names),
        slices=indices,
        precision=runner.precision,
    )


def predict_image(
    model: Network,
    card: ModelCard,
    volume_2d: Volume,
    *,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    precision: str | None = None,
    confidence: bool | str = False,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Prediction:
    """Segment a 2-D image (H, W) grey or (H, W, 3) RGB, 8-bit; labels are (H, W).

    ``device``, ``amp``, ``precision``, ``confidence``: as for :func:`predict_volume`.

    Raises:
        InputError: a CT model, RGBA or 16-bit pixels, or an image under MIN_SIZE pixels.
        Cancelled: ``should_stop`` was set before the network ran.
    """
    source = _source(volume_2d)
    image = np.asarray(volume_2d.array)
    if not volume_2d.is_2d:
        check_input_kind(card, True, source)
        raise InputError(f"{source}: expected a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}")
    check_input(card, volume_2d)
    runner = _runner(model, card, device=device, amp=amp, precision=precision, batch_size=1, confidence=confidence)
    if progress:
        progress(0, 1)
    if stop_check(should_stop)():
        raise Cancelled(f"{source}: prediction cancelled")
    labels, conf = runner(image[None])
    if progress:
        progress(1, 1)
    return Prediction(labels[0], conf[0] if conf is not None else None, list(card.class_names), [0], runner.precision)


def check_input_kind(card: ModelCard, is_2d: bool, source: str) -> None:
    """Refuse an input of the other kind than the model's: a CT model segments volumes, an RGB model 2-D images.

    The one check of this pairing: :func:`predict` (hence ``braunet predict``, ``braunet evaluate``
    and the napari Segment widget) and ``braunet finetune`` call it, so a CT volume never runs
    through an RGB recipe (nor a photograph through HU windows) anywhere.

    Raises:
        InputError: ``"SOURCE: model 'NAME' segments ..., but this is ..."``.
    """
    if card.recipe.kind == "ct" and is_2d:
        raise InputError(f"{source}: model {card.name!r} segments 3-D CT volumes, but this is a 2-D image")
    if card.recipe.kind != "ct" and not is_2d:
        raise InputError(f"{source}: model {card.name!r} segments 2-D RGB images, but this is a 3-D volume")


def check_ct_modality(volume: Volume, who: str) -> None:
    """Refuse a volume whose modality is known and not CT (an MR series, say): HU windows mean nothing there.

    ``who`` completes the message: ``"SOURCE: modality MR, not CT; {who} CT in Hounsfield units ..."``.

    Raises:
        InputError: naming ``volume.source``.
    """
    if volume.modality.upper() not in _CT_MODALITIES:
        raise InputError(f"{_source(volume)}: modality {volume.modality}, not CT; {who} CT in Hounsfield units, "
                         f"a scale {volume.modality} intensities do not have")  # fmt: skip


def check_input(card: ModelCard, volume: Volume) -> None:
    """Refuse, before any work, what :func:`predict` would refuse: wrong kind, shape, pixels or size.

    ``braunet predict`` checks every input with it before writing any output; the prediction
    functions call it first. Volumes: 3-D, non-empty, finite, axial slices of at least
    :data:`MIN_SIZE` px; 2-D images: grey (H, W) or RGB (H, W, 3), 8-bit, at least MIN_SIZE px.

    Raises:
        InputError: naming ``volume.source`` and the problem.
    """
    source = _source(volume)
    check_input_kind(card, volume.is_2d, source)
    array = np.asarray(volume.array)
    if volume.is_2d:
        _check_rgb_image(array, source)
        return
    check_ct_modality(volume, f"model {card.name!r} segments")
    if array.ndim != 3:
        raise InputError(f"{source}: expected a 3-D volume, got an array of shape {array.shape}")
    _check_finite(array, source)
    if array.size == 0:
        raise InputError(f"{source}: the volume is empty (shape {array.shape})")
    from nibabel.orientations import io_orientation

    canonical_shape = [0, 0, 0]  # reason: the shape to_canonical would give, without reordering the voxels
    for axis, (target, _) in enumerate(io_orientation(volume.affine)):
        canonical_shape[int(target)] = array.shape[axis]
    height, width = view_shape(canonical_shape, card.recipe.view)
    if min(height, width) < MIN_SIZE:
        raise InputError(f"{source}: axial slices are {height}x{width} px, too small to segment (need >= {MIN_SIZE})")


def _runner(model: Network, card: ModelCard, **options: Any) -> SliceRunner:
    """The slice runner for ``model`` as its card describes it (recipe, input size, classes)."""
    return SliceRunner(model, card.recipe, card.config.img_size, card.config.num_classes,
                       bf16_validated=bf16_validated(card.extra), **options)  # fmt: skip


def _source(volume: object) -> str:
    source = getattr(volume, "source", None)
    return str(source) if source else "<array>"


def _check_finite(array: np.ndarray, source: str) -> None:
    """Raise InputError if a float volume holds NaN or Inf, scanning in chunks of slices."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    step = max(1, _FINITE_CHECK_VOXELS // max(1, array[..., 0].size))
    for start in range(0, array.shape[-1], step):
        if not np.isfinite(array[..., start : start + step]).all():
            raise InputError(f"{source}: the image contains NaN or infinite voxel values")


def _check_rgb_image(image: np.ndarray, source: str) -> None:
    if image.ndim == 3 and image.shape[-1] == 4:
        raise InputError(f"{source}: RGBA image (4 channels); save it as RGB without transparency")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise InputError(f"{source}: expected a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        kind = f"{image.dtype.itemsize * 8}-bit" if image.dtype.kind in "ui" else str(image.dtype)
        raise InputError(f"{source}: {kind} pixels; the model expects 8-bit images (0-255), convert it first")
    if min(image.shape[:2]) < MIN_SIZE:
        raise InputError(
            f"{source}: image is {image.shape[0]}x{image.shape[1]} px, too small to segment (need >= {MIN_SIZE})"
        )


def _slice_indices(slices: Sequence[int] | range | None, depth: int, source: str) -> list[int]:
    if slices is None:
        return list(range(depth))
    indices = sorted({int(k) for k in slices})
    if indices and (indices[0] < 0 or indices[-1] >= depth):
        raise InputError(f"{source}: slice indices must be in 0..{depth - 1}, got {indices[0]}..{indices[-1]}")
    return indices

