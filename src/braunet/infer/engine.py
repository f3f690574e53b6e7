"""Slice-wise inference: a volume or a 2-D image in, a label map on the exact input grid out.

Volumes: reorient to the closest RAS+ canonical stack (:func:`braunet.io.to_canonical`), take the
axial slices in batches in the model's view (:mod:`braunet.infer.views`), preprocess them with the
model's recipe (:mod:`braunet.infer.preprocess`), run the network under ``torch.inference_mode``
(autocast on GPUs), take the arg-max at the model resolution, resize the labels back to the slice
with nearest neighbours (as the official test does), and undo the reorientation, so the labels
index exactly like the input array and share its affine.

Memory is bounded by one batch: float logits never exist for more than ``batch_size`` slices;
each batch's labels go straight into a preallocated uint8 (or uint16) stack.

Examples::

    from braunet.io import read_image
    from braunet.zoo import load_model
    model, card = load_model("ct-abdomen-8")
    prediction = predict(model, card, read_image("ct.nii.gz"), progress=print)
    prediction.labels.shape  # == volume.array.shape
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from braunet.errors import BraunetError, Cancelled, InputError
from braunet.infer.device import amp_dtype, resolve_device
from braunet.infer.preprocess import Recipe, parse_preprocessing, preprocess_slices
from braunet.infer.resize import resize_nearest
from braunet.infer.views import from_view, to_view, view_shape
from braunet.model import ModelCard

__all__ = ["MIN_SIZE", "Prediction", "predict", "predict_image", "predict_volume"]

MIN_SIZE = 16  # smallest slice/image side accepted, in pixels: below it there is nothing to segment
_FINITE_CHECK_VOXELS = 1 << 24  # chunk of the NaN/Inf scan, so it needs no volume-sized temporary

StopCheck = Callable[[], bool] | threading.Event
Progress = Callable[[int, int], None]


@dataclass
class Prediction:
    """Result of :func:`predict_volume` / :func:`predict_image`.

    ``labels`` has the input's spatial shape and voxel order (uint8, or uint16 beyond 256 classes);
    ``confidence`` (same shape, float32 in [0, 1], or uint8 = round(255 p)) is the max softmax
    probability, or the foreground sigmoid probability of a binary model; ``slices`` are the
    canonical axial indices that were segmented (others are 0).
    """

    labels: np.ndarray
    confidence: np.ndarray | None
    class_names: list[str]
    slices: list[int]


def predict(model: nn.Module, card: ModelCard, volume, **options) -> Prediction:
    """Segment ``volume`` with :func:`predict_image` if it is 2-D, else :func:`predict_volume`."""
    if volume.is_2d:
        options.pop("slices", None)
        options.pop("batch_size", None)
        return predict_image(model, card, volume, **options)
    return predict_volume(model, card, volume, **options)


def predict_volume(
    model: nn.Module,
    card: ModelCard,
    volume,
    *,
    slices: Sequence[int] | range | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    confidence: bool | str = False,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Prediction:
    """Segment a 3-D volume slice by slice along its canonical axial axis.

    Args:
        model: a BRAU-Net++ (any ``nn.Module`` mapping (N, C, S, S) to (N, K, S, S) logits).
        card: the model's card: class names and the preprocessing recipe.
        volume: a :class:`braunet.io.Volume` with a 3-D array (I, J, K) in file voxel order.
        slices: canonical axial indices to segment (None = all); labels elsewhere are 0.
        batch_size: slices per network call (halved automatically if a GPU runs out of memory).
        device: "auto", "cpu", "cuda", "mps" or a torch.device (the model is moved there);
            None keeps the model where it is.
        amp: autocast on GPUs (None = on for CUDA/MPS); ignored on CPUs.
        confidence: False, True/"float32" or "uint8".
        progress: called as ``progress(done, total)`` in slices, first with done = 0.
        should_stop: a callable or a ``threading.Event``; when it is set, :class:`Cancelled` is raised
            before the next batch.
    Raises:
        InputError: wrong kind of image for the model, NaN/Inf voxels, slice index out of range.
        Cancelled: ``should_stop`` was set.
    """
    source = _source(volume)
    recipe = parse_preprocessing(card.preprocessing, f"model {card.name!r}")
    array = np.asarray(volume.array)
    if recipe.kind != "ct":
        raise InputError(f"{source}: model {card.name!r} segments 2-D RGB images, but this is a 3-D volume")
    if volume.is_2d or array.ndim != 3:
        raise InputError(f"{source}: expected a 3-D volume, got an array of shape {array.shape}")
    _check_finite(array, source)
    if array.size == 0:
        raise InputError(f"{source}: the volume is empty (shape {array.shape})")

    from braunet.io import to_canonical

    canonical, reorientation = to_canonical(volume)
    depth = canonical.shape[2]
    indices = _slice_indices(slices, depth, source)
    height, width = view_shape(canonical.shape, recipe.view)
    if min(height, width) < MIN_SIZE:
        raise InputError(f"{source}: axial slices are {height}x{width} px, too small to segment (need >= {MIN_SIZE})")

    runner = _Runner(model, card, recipe, device, amp, confidence)
    labels_stack = np.zeros((depth, height, width), dtype=runner.label_dtype)  # model-view order (K, H, W)
    conf_stack = np.zeros((depth, height, width), dtype=runner.conf_dtype) if runner.conf_dtype else None
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = [indices[k : k + batch_size] for k in range(0, len(indices), batch_size)]
    stop = _stop_check(should_stop)
    total, done = len(indices), 0
    if progress:
        progress(0, total)
    # reason: gathering the next batch's slices (a strided copy, NumPy releases the GIL) overlaps
    # the network on the current one; on a GPU that copy is otherwise the bottleneck.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="braunet-slices") as reader:
        pending = reader.submit(to_view, canonical, batches[0], recipe.view) if batches else None
        for number, batch in enumerate(batches):
            if stop():
                pending.cancel()
                raise Cancelled(f"{source}: prediction cancelled after {done} of {total} slices")
            raw = pending.result()
            if number + 1 < len(batches):
                pending = reader.submit(to_view, canonical, batches[number + 1], recipe.view)
            labels, conf = runner(raw)
            labels_stack[batch] = labels
            if conf_stack is not None:
                conf_stack[batch] = conf
            done += len(batch)
            if progress:
                progress(done, total)

    def restore(stack: np.ndarray) -> np.ndarray:  # (K, H, W) model view -> input voxel order
        return np.ascontiguousarray(reorientation.undo(from_view(stack, recipe.view)))

    return Prediction(
        labels=restore(labels_stack),
        confidence=restore(conf_stack) if conf_stack is not None else None,
        class_names=list(card.class_names),
        slices=indices,
    )


def predict_image(
    model: nn.Module,
    card: ModelCard,
    volume_2d,
    *,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    confidence: bool | str = False,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Prediction:
    """Segment a 2-D image (H, W) grey or (H, W, 3) RGB, 8-bit; labels are (H, W).

    Raises:
        InputError: a CT model, RGBA or 16-bit pixels, or an image under MIN_SIZE pixels.
        Cancelled: ``should_stop`` was set before the network ran.
    """
    source = _source(volume_2d)
    recipe = parse_preprocessing(card.preprocessing, f"model {card.name!r}")
    image = np.asarray(volume_2d.array)
    if recipe.kind != "rgb":
        raise InputError(f"{source}: model {card.name!r} segments 3-D CT volumes, but this is a 2-D image")
    _check_rgb_image(image, source)
    runner = _Runner(model, card, recipe, device, amp, confidence)
    if progress:
        progress(0, 1)
    if _stop_check(should_stop)():
        raise Cancelled(f"{source}: prediction cancelled")
    labels, conf = runner(image[None])
    if progress:
        progress(1, 1)
    return Prediction(labels[0], conf[0] if conf is not None else None, list(card.class_names), [0])


class _Runner:
    """Raw slices (B, H, W[, 3]) -> labels (B, H, W) and optional confidence, for one model."""

    def __init__(self, model: nn.Module, card: ModelCard, recipe: Recipe, device, amp, confidence) -> None:
        if device is None:
            self.device = next(model.parameters()).device
        else:
            self.device = resolve_device(device)
            model.to(self.device)
        self.model = model.eval()
        self.recipe = recipe
        self.img_size = model.config.img_size
        self.num_classes = model.config.num_classes
        self.autocast = amp_dtype(self.device, amp)
        self.label_dtype = np.uint8 if len(card.class_names) <= 256 else np.uint16
        if confidence not in (False, True, "float32", "uint8"):
            raise ValueError(f"confidence must be False, True, 'float32' or 'uint8', got {confidence!r}")
        self.conf_dtype = {False: None, True: np.float32, "float32": np.float32, "uint8": np.uint8}[confidence]
        self._max_batch: int | None = None  # lowered after a GPU out-of-memory error

    def __call__(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw slices (B, H, W[, 3]) -> labels (B, H, W) and confidence (B, H, W) or None."""
        step = self._max_batch or len(raw)
        parts = [self._run_chunk(raw[k : k + step]) for k in range(0, len(raw), step)]
        labels = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        conf = None
        if self.conf_dtype is not None:
            conf = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        labels = resize_nearest(labels, raw.shape[1:3], self.recipe.resize)
        if conf is not None:
            conf = resize_nearest(conf, raw.shape[1:3], self.recipe.resize)
            conf = np.round(conf * 255).astype(np.uint8) if self.conf_dtype is np.uint8 else conf
        return labels, conf

    def _run_chunk(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Network on one chunk, retrying with half the chunk when the GPU runs out of memory."""
        try:
            return self._decode(self._logits(raw))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(raw) == 1:
                raise BraunetError(
                    f"out of GPU memory on {self.device} even for one slice; use --device cpu"
                ) from None
            self._max_batch = max(1, len(raw) // 2)
            half = self._max_batch
            first, second = self._run_chunk(raw[:half]), self._run_chunk(raw[half:])
            conf = None if first[1] is None else np.concatenate([first[1], second[1]])
            return np.concatenate([first[0], second[0]]), conf

    def _logits(self, raw: np.ndarray) -> Tensor:
        """(B, H, W[, 3]) raw -> float32 logits (B, K, S, S) on the device."""
        with torch.inference_mode():
            x = preprocess_slices(raw, self.recipe, self.img_size, device=self.device)
            with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
                logits = self.model(x)
            return logits.float()

    def _decode(self, logits: Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (B, K, S, S) -> labels (B, S, S) and confidence (B, S, S) float32, at model size."""
        with torch.inference_mode():
            if self.num_classes == 1:  # binary: sigmoid(z) >= 0.5  <=>  z >= 0
                z = logits[:, 0]
                labels = z >= 0
                conf = torch.sigmoid(z) if self.conf_dtype is not None else None
            else:
                top, labels = logits.max(dim=1)  # reason: max(dim) is ~10x faster than argmax on CPU
                conf = torch.exp(top - torch.logsumexp(logits, dim=1)) if self.conf_dtype is not None else None
            labels = labels.to(torch.uint8 if self.label_dtype is np.uint8 else torch.int32).cpu().numpy()
            return labels.astype(self.label_dtype, copy=False), None if conf is None else conf.cpu().numpy()


def _source(volume) -> str:
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


def _stop_check(should_stop: StopCheck | None) -> Callable[[], bool]:
    if should_stop is None:
        return lambda: False
    if isinstance(should_stop, threading.Event):
        return should_stop.is_set
    return lambda: bool(should_stop())
