"""The slice runner: a 2-D network over a stack of slices, from raw pixels to labels on each slice's grid.

Every forward pass of the package goes through :class:`SliceRunner` (the engine, validation,
evaluation, the official protocols, the napari routing explorer). Like MONAI's ``SliceInferer`` it
does not know the model class: ``network`` is any callable mapping a float32 batch (B, C, S, S) to
logits (B, K, S, S). The runner

* preprocesses raw slices with the model's :class:`~braunet.infer.preprocess.Recipe` (on the
  compute device, so only the compact raw dtype crosses to a GPU);
* runs the network in batches under ``torch.inference_mode`` (eval mode, restored afterwards),
  with autocast in the chosen precision (``precision`` or, for internal callers, ``amp`` on GPUs);
  after a CUDA out-of-memory error it halves the batch for good;
* decodes logits with :func:`decode_labels` (the one place the binary and multi-class rules live),
  or gives their class probabilities (:meth:`SliceRunner.probabilities`) to uncertainty measures;
* resizes labels (and confidence) back to the slice grid with nearest neighbours, with the
  recipe's pixel convention; a fixed-spacing recipe (``spacing_mm``) instead resamples the logits
  onto the slice grid and decodes them there (:func:`braunet.infer.preprocess.restore_logits`), so
  it needs the slices' pixel spacing (``spacing=``).

:meth:`SliceRunner.run` adds what long jobs need: a progress callback, a stop check between
batches, and the next batch read in a background thread while the network works on this one.

Example, with a plain function as the network (a per-pixel threshold at 100 HU)::

    >>> import numpy as np, torch
    >>> from braunet.infer import SYNAPSE_CT, SliceRunner, parse_preprocessing
    >>> recipe = parse_preprocessing(SYNAPSE_CT)  # window [-125, 275] HU -> [-1, 1]
    >>> threshold = lambda x: torch.cat([torch.zeros_like(x), x], dim=1)  # class 1 where x > 0
    >>> runner = SliceRunner(threshold, recipe, img_size=32, num_classes=2)
    >>> hu = np.full((3, 50, 40), -500, np.int16)
    >>> hu[:, 10:30, 5:20] = 300
    >>> labels, _ = runner(hu)
    >>> labels.shape, labels.dtype, int(labels[0, 20, 12]), int(labels[0, 45, 35])  # on the slices' own grid
    ((3, 50, 40), dtype('uint8'), 1, 0)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from braunet.errors import BraunetError, Cancelled
from braunet.infer.device import amp_dtype, resolve_device, resolve_precision
from braunet.infer.preprocess import TTA_FLIPS, Recipe, Spacing, preprocess_slices, restore_logits
from braunet.infer.resize import resize_nearest

__all__ = ["Network", "Progress", "SliceRunner", "StopCheck", "decode_labels", "stop_check"]

Network = Callable[[Tensor], Tensor]  # (B, C, S, S) float32 -> logits (B, K, S, S)
StopCheck = Callable[[], bool] | threading.Event
Progress = Callable[[int, int], None]
_CONFIDENCE: dict[bool | str, type | None] = {False: None, True: np.float32, "float32": np.float32, "uint8": np.uint8}
_Result = tuple[np.ndarray, np.ndarray | None]  # labels (B, H, W) and confidence (B, H, W) or None
_Batch = TypeVar("_Batch", np.ndarray, Tensor)  # raw slices or prepared network input


def decode_labels(
    logits: Tensor, *, confidence: bool = False, dtype: torch.dtype = torch.int64
) -> tuple[Tensor, Tensor | None]:
    """Logits (B, K, H, W) -> class indices (B, H, W) and, if asked, their probability (B, H, W).

    K == 1 is a binary sigmoid model: label 1 where ``sigmoid(z) >= 0.5``, that is ``z >= 0``, and
    the confidence is the foreground probability ``sigmoid(z)``. K >= 2 is a softmax model: the
    arg-max, and the largest softmax probability ``exp(max z - logsumexp z)``. Ties go to the lowest
    class index. Labels come in ``dtype``, confidence in the logits' float dtype (on their device).
    """
    if logits.ndim != 4:
        raise ValueError(f"expected logits (B, K, H, W), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        z = logits[:, 0]
        return (z >= 0).to(dtype), torch.sigmoid(z) if confidence else None
    top, labels = logits.max(dim=1)  # reason: max(dim) is ~10x faster than argmax on CPU, same indices
    return labels.to(dtype), torch.exp(top - torch.logsumexp(logits, dim=1)) if confidence else None


def stop_check(should_stop: StopCheck | None) -> Callable[[], bool]:
    """A ``threading.Event`` or a callable (or None: never) as one ``() -> bool``."""
    if should_stop is None:
        return lambda: False
    if isinstance(should_stop, threading.Event):
        return should_stop.is_set
    return lambda: bool(should_stop())


@contextlib.contextmanager
def _eval_mode(network: Network) -> Iterator[None]:
    """Eval mode for an ``nn.Module`` during the block, its own mode restored afterwards."""
    if not isinstance(network, nn.Module):
        yield
        return
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)


class SliceRunner:
    """One network with its recipe, input size and classes: slices in, labels out.

    Args:
        network: any callable (B, C, S, S) float32 -> logits (B, K, S, S): a BRAU-Net++, a
            ``DistributedDataParallel`` wrapper, a function. Modules are put in eval mode while they run.
        recipe: the preprocessing recipe (``card.recipe``); None for a runner that is only given
            prepared inputs (:meth:`predict_prepared`).
        img_size: the network's input size S.
        num_classes: its output channels K (1 = binary sigmoid); labels are uint8 up to 256
            classes, else uint16.
        device: "auto", "cpu", "cuda", "mps" or a torch.device (a module is moved there); None
            keeps a module where its parameters are (CPU for other callables).
        amp: autocast on GPUs (None = on for CUDA/MPS); ignored on CPUs and when ``precision`` is given.
        precision: the user's choice "auto", "fp32" or "bf16" (:func:`~braunet.infer.device.resolve_precision`),
            resolved once here; None leaves it to ``amp``. What runs is in :attr:`precision`.
        bf16_validated: the model's card records a passing bf16 validation (``auto`` needs it).
        batch_size: slices per network call.
        confidence: False, True/"float32" or "uint8" (round(255 p)) for :meth:`__call__` and :meth:`run`.
        tta: average the logits over the recipe's test-time flips (``recipe.tta``); False runs the
            plain pass only (routing records one forward pass per slice).
    """

    def __init__(
        self,
        network: Network,
        recipe: Recipe | None,
        img_size: int,
        num_classes: int,
        *,
        device: str | torch.device | None = None,
        amp: bool | None = None,
        precision: str | None = None,
        bf16_validated: bool = False,
        batch_size: int = 8,
        confidence: bool | str = False,
        tta: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if confidence not in _CONFIDENCE:
            raise ValueError(f"confidence must be False, True, 'float32' or 'uint8', got {confidence!r}")
        if device is not None:
            self.device = resolve_device(device)
            if isinstance(network, nn.Module):
                network.to(self.device)
        else:
            parameter = next(network.parameters(), None) if isinstance(network, nn.Module) else None
            self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.network = network
        self.recipe = recipe
        self.img_size = img_size
        self.num_classes = num_classes
        self.batch_size = batch_size
        if precision is None:
            self.autocast = amp_dtype(self.device, amp)
        else:
            resolved = resolve_precision(precision, self.device, bf16_validated)
            self.autocast = torch.bfloat16 if resolved == "bf16" else None
        self.precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]
        self.label_dtype = np.uint8 if max(num_classes, 2) <= 256 else np.uint16
        self.conf_dtype = _CONFIDENCE[confidence]
        self._max_batch: int | None = None  # lowered after a GPU out-of-memory error
        self.flip_dims = [TTA_FLIPS[f] for f in recipe.tta] if tta and recipe is not None else []

    # -- the steps -------------------------------------------------------------------------------
    def _require_recipe(self) -> Recipe:
        if self.recipe is None:
            raise ValueError("this SliceRunner has no preprocessing recipe; give it prepared inputs")
        return self.recipe

    def prepare(self, raw: np.ndarray | Tensor, spacing: Spacing | None = None) -> Tensor:
        """Raw slices (B, H, W[, 3]) -> network input (B, C, S, S) float32 on the device.

        ``spacing``: the slices' pixel size (rows, cols) in mm, needed by a ``spacing_mm`` recipe.
        """
        with torch.inference_mode():
            return preprocess_slices(raw, self._require_recipe(), self.img_size, device=self.device, spacing=spacing)

    def logits(self, x: Tensor) -> Tensor:
        """Network input (B, C, S, S) -> float32 logits (B, K, S, S) on the device, no gradients.

        With test-time flips (``recipe.tta``) the mean of the logits of the plain and mirrored inputs.
        """
        with torch.inference_mode(), _eval_mode(self.network):
            x = x.to(self.device, non_blocking=True)
            logits = self._forward(x)
            if self.autocast is torch.float16 and not bool(torch.isfinite(logits).all()):
                # float16 holds values up to 65504 only: a model with larger activations (the retrained
                # polyp model has some) overflows to NaN, so this runner falls back to float32 for good
                self.autocast, self.precision = None, "fp32"
                logits = self._forward(x)
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"the network gave logits of shape {tuple(logits.shape)}, expected "
                             f"(B, {self.num_classes}, H, W)")  # fmt: skip
        return logits

    def _forward(self, x: Tensor) -> Tensor:
        """The network under this runner's autocast, averaged over the recipe's test-time flips (float32)."""
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            logits = self.network(x).float()
            for dim in self.flip_dims:  # the recipe's test-time flips: mirror in, mirror back, average
                logits = logits + self.network(x.flip(dim)).float().flip(dim)  # reason: never in place
        return logits / (1 + len(self.flip_dims)) if self.flip_dims else logits

    def probabilities(self, x: Tensor) -> Tensor:
        """Network input (B, C, S, S) -> float32 class probabilities (B, max(K, 2), S, S) on the device.

        The softmax of K >= 2 logits; a binary model (K == 1) gives ``(1 - p, p)`` with
        ``p = sigmoid(z)``, so uncertainty measures see every model as a distribution over classes.
        """
        logits = self.logits(x)
        with torch.inference_mode():
            if logits.shape[1] == 1:
                foreground = torch.sigmoid(logits)
                return torch.cat([1 - foreground, foreground], dim=1)
            return torch.softmax(logits, dim=1)

    def _decode(self, logits: Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits -> labels (B, S, S) in ``label_dtype`` and float32 confidence (B, S, S) or None, on the CPU."""
        small = torch.uint8 if self.label_dtype is np.uint8 else torch.int32  # reason: copy compact labels off a GPU
        with torch.inference_mode():
            labels, conf = decode_labels(logits, confidence=self.conf_dtype is not None, dtype=small)
            labels_np = labels.cpu().numpy().astype(self.label_dtype, copy=False)
            return labels_np, None if conf is None else conf.cpu().numpy()

    # -- batches ---------------------------------------------------------------------------------
    def predict_prepared(self, x: Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Prepared inputs (N, C, S, S) -> labels (N, S, S) and float32 confidence or None, at the model size."""
        return self._batched(x, lambda part: self._decode(self.logits(part)))

    def _restore(self, logits: Tensor, shape: tuple[int, int], spacing: Spacing | None) -> _Result:
        """Logits (B, K, S, S) of a ``spacing_mm`` recipe -> labels and confidence on the slice grid (B, H, W)."""
        with torch.inference_mode():
            restored, seen = restore_logits(logits, shape, self._require_recipe(), spacing)
            labels, conf = self._decode(restored)
        unseen = ~seen.cpu().numpy()
        labels[:, unseen] = 0  # reason: outside the network's field of view nothing was segmented
        if conf is not None:
            conf[:, unseen] = 1.0
        return labels, conf

    def __call__(self, raw: np.ndarray, spacing: Spacing | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw slices of one shape (B, H, W[, 3]) -> labels (B, H, W) and confidence (B, H, W) or None.

        ``spacing``: the slices' pixel size (rows, cols) in mm, needed by a ``spacing_mm`` recipe.
        """
        raw = np.asarray(raw)
        recipe = self._require_recipe()
        shape = (int(raw.shape[1]), int(raw.shape[2]))
        if recipe.spacing_mm:
            labels, conf = self._batched(
                raw, lambda part: self._restore(self.logits(self.prepare(part, spacing)), shape, spacing), shape
            )
        else:
            labels, conf = self._batched(raw, lambda part: self._decode(self.logits(self.prepare(part))))
            labels = resize_nearest(labels, shape, recipe.resize)
            if conf is not None:
                conf = resize_nearest(conf, shape, recipe.resize)
        if conf is not None and self.conf_dtype is np.uint8:
            conf = np.round(conf * 255).astype(np.uint8)
        return labels, conf

    def run(
        self,
        read: Callable[[list[int]], np.ndarray | Tensor],
        indices: Sequence[int],
        *,
        prepared: bool = False,
        spacing: Spacing | None = None,
        progress: Progress | None = None,
        should_stop: StopCheck | None = None,
        what: str = "prediction",
        probabilities: bool = False,
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray | None]]:
        """Slices ``indices`` in batches of ``batch_size``: yields ``(batch, labels, confidence)``.

        ``read(batch)`` gives the raw slices (B, H, W[, 3]) of a batch (or, with ``prepared``, the
        network input (B, C, S, S), and labels stay at the model size); the next batch is read in a
        background thread while the network runs on this one. ``spacing`` is the slices' pixel size
        (rows, cols) in mm (one for the whole run: the slices of one volume), for a ``spacing_mm``
        recipe. ``progress(done, total)`` counts slices, first with done = 0.
        With ``probabilities``, each batch yields ``(batch, probabilities, None)`` instead: float32
        (B, max(K, 2), S, S) at the model size (:meth:`probabilities`), for measures that need the
        whole distribution.

        Raises:
            Cancelled: ``should_stop`` (a callable or a ``threading.Event``) was set before a batch;
                the message starts with ``what``.
        """
        indices = list(indices)
        batches = [indices[k : k + self.batch_size] for k in range(0, len(indices), self.batch_size)]
        stop = stop_check(should_stop)
        step: Callable[[Any], _Result] = (
            self.predict_prepared if prepared else lambda raw: self.__call__(raw, spacing)
        )
        if probabilities:
            step = partial(self._probabilities_of, prepared=prepared, spacing=spacing)
        total, done = len(indices), 0
        if progress:
            progress(0, total)
        if not batches:
            return
        # reason: reading a batch (a strided copy, a zoom: NumPy releases the GIL) overlaps the
        # network on the previous one; on a GPU that copy is otherwise the bottleneck.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="braunet-slices") as reader:
            pending = reader.submit(read, batches[0])
            for number, batch in enumerate(batches):
                if stop():
                    pending.cancel()
                    raise Cancelled(f"{what} cancelled after {done} of {total} slices")
                raw = pending.result()
                if number + 1 < len(batches):
                    pending = reader.submit(read, batches[number + 1])
                labels, conf = step(raw)
                done += len(batch)
                yield batch, labels, conf
                if progress:
                    progress(done, total)

    def _probabilities_of(self, items: _Batch, prepared: bool, spacing: Spacing | None = None) -> _Result:
        """Raw slices (or prepared inputs) -> float32 probabilities (B, max(K, 2), S, S) on the CPU, and None."""

        def work(part: _Batch) -> _Result:
            x = torch.as_tensor(part) if prepared else self.prepare(part, spacing)
            return self.probabilities(x).cpu().numpy(), None

        return self._batched(items, work)

    def _batched(
        self, items: _Batch, work: Callable[[_Batch], _Result], shape: tuple[int, int] | None = None
    ) -> _Result:
        """``work`` over ``items`` in chunks of the batch size, the parts concatenated; ``shape`` is the
        (H, W) of what ``work`` returns (default: the model size)."""
        step = min(self.batch_size, self._max_batch or self.batch_size)
        parts = [self._with_oom_fallback(items[k : k + step], work) for k in range(0, len(items), step)]
        if not parts:
            empty = np.zeros((0, *(shape or (self.img_size, self.img_size))))
            return empty.astype(self.label_dtype), empty.astype(np.float32) if self.conf_dtype else None
        return _concatenate(parts)

    def _with_oom_fallback(self, chunk: _Batch, work: Callable[[_Batch], _Result]) -> _Result:
        """``work(chunk)``, retried on halves (and with a lower batch size from then on) after a CUDA OOM."""
        try:
            return work(chunk)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(chunk) == 1:
                raise BraunetError(f"out of GPU memory on {self.device} even for one slice; use --device cpu") from None
            self._max_batch = max(1, len(chunk) // 2)
            half = self._max_batch
            return _concatenate([self._with_oom_fallback(chunk[:half], work),
                                 self._with_oom_fallback(chunk[half:], work)])  # fmt: skip


def _concatenate(parts: list[_Result]) -> _Result:
    if len(parts) == 1:
        return parts[0]
    labels = np.concatenate([p[0] for p in parts])
    confidences = [p[1] for p in parts if p[1] is not None]
    return labels, np.concatenate(confidences) if confidences else None
