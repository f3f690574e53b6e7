"""Fine-tuning on a few corrected slices: measurable, reversible and quick on a CPU.

The napari Fine-tune widget and ``braunet finetune`` call :func:`finetune`. One round:

1. Hold back part of the corrections and score the parent model there: ``dice_before``. By default
   (``holdback_by="slices"``) a share (``holdback``) of the corrected slices, at least one. With
   ``holdback_by="blocks"``, and always for a single corrected slice, every slice is trained on and
   that share of their 8 x 8 blocks, stratified so that both parts hold labelled pixels, is held
   back instead: training ignores those pixels (the network still sees the whole slices); several
   slices whose labels touch fewer than 2 blocks in all are split by slices. Blocks judge a round
   more kindly (their neighbours were trained on): in bench_finetune they accepted every round,
   including rounds that cost the validation split 0.02-0.03 Dice, which slices rejected.
2. Train a copy of the model on the rest for ``time_budget_s`` seconds (a step budget would
   take minutes on one machine and seconds on another). Each batch mixes augmented corrected slices
   with slices of the model's anchor set (a few of its original training slices, stored with the
   model as ``anchors.npz``), so it keeps what it already knew. ``mode="decoder"`` trains only the
   decoder (the encoder's features stay those learned from the full training set); ``"full"``
   trains everything. BatchNorm statistics stay frozen in both modes: a handful of slices gives
   poor batch statistics. An L2 pull towards the parent's weights (L2-SP) adds a second guard.
   The trained copy is then blended back towards the parent in weight space, keeping ``blend``
   (default 0.7) of its update (WiSE-FT, Wortsman et al. 2022): a model fitted to 4-8 slices by
   a few dozen small-batch steps is noisy, and points between it and its parent generalise better
   than either end (in bench_finetune it raised the gain on unseen frames and shrank the
   validation-split cost; models/README.md).
3. Score the blended copy on what was held back: ``dice_after``. The copy is accepted only if
   ``dice_after > dice_before`` and, when there are anchors, its Dice on the anchors dropped by at
   most ``max_anchor_drop``. Otherwise the parent is returned unchanged, with the reason in
   ``message``.

An accepted model gets a new card: ``version = parent.version + 1``, ``parent = "name@version"``,
the fine-tune's figures in ``metrics["finetune"]`` and its settings in ``training["finetune"]``.
Save it with :func:`braunet.train.versions.save_version` (into the library, where ``NAME@N`` finds
it); roll back with
:func:`braunet.train.versions.rollback`.

Dice here is measured at the network's resolution on the held-back pixels, all of them pooled per
class (:mod:`braunet.train.validation` explains the class set), which is stable with few slices; it
is the plain forward pass, without the test-time flips a card may give predictions (the round is
judged the same way before and after). ``FinetuneResult.per_class`` gives each class's Dice and
HD95 before -> after on the same pixels; HD95 is the mean over the slices holding held-back pixels
of the 2-D HD95 (undefined where the class is missing from the prediction or the truth of a slice),
in mm when the caller passes the slices' pixel spacing, else in pixels of the slices as given
(``hd95_unit``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from braunet.errors import Cancelled, InputError
from braunet.model import BRAUNet, ModelCard
from braunet.train.anchors import ANCHORS_FILE, load_anchors
from braunet.train.datasets import AugmentedSlices, prepare
from braunet.train.loop import FitConfig, FitHooks, Step, fit, used_parameters
from braunet.train.losses import make_loss
from braunet.train.metrics import dice, hd95
from braunet.train.slices import SliceSet
from braunet.train.validation import predict_prepared

__all__ = ["DEFAULT_HOLDBACK_BY", "HOLDBACK_UNITS", "MODES", "ClassChange", "FinetuneProgress", "FinetuneResult", "finetune"]

MODES = ("decoder", "full")
HOLDBACK_UNITS = ("slices", "blocks")  # what a round holds back to judge itself on: whole slices, or blocks of each
DEFAULT_HOLDBACK_BY = "slices"  # measured in bench_finetune: blocks accepted rounds that cost the validation split
REGION_GRID = 8  # corrected slices are held back by blocks of a REGION_GRID x REGION_GRID grid
IGNORED = -1  # label value of the pixels training must not see (the held-back blocks)


@dataclass
class FinetuneProgress:
    step: int
    total_steps: int | None  # None: the round is limited by time, not steps
    elapsed_s: float
    loss: float


@dataclass
class ClassChange:
    """One class's held-back Dice and HD95 before -> after (HD95 in ``FinetuneResult.hd95_unit``;
    nan where no held-back slice defines it)."""

    name: str
    dice_before: float
    dice_after: float
    hd95_before: float
    hd95_after: float

    def to_dict(self) -> dict:
        """JSON-ready: undefined HD95 as None."""
        def finite(x: float) -> float | None:
            return None if np.isnan(x) else round(float(x), 4)

        return {"dice_before": round(self.dice_before, 4), "dice_after": round(self.dice_after, 4),
                "hd95_before": finite(self.hd95_before), "hd95_after": finite(self.hd95_after)}  # fmt: skip


@dataclass
class FinetuneResult:
    model: BRAUNet  # the fine-tuned copy if accepted, else the parent (unchanged)
    card: ModelCard  # the new version's card if accepted, else the parent's
    dice_before: float
    dice_after: float
    accepted: bool
    losses: list[float]
    train_indices: list[int]
    heldout_indices: list[int]
    message: str
    anchor_dice_before: float | None = None
    anchor_dice_after: float | None = None
    steps: int = 0
    elapsed_s: float = 0.0
    details: dict = field(default_factory=dict)
    per_class: list[ClassChange] = field(default_factory=list)  # the classes in dice_before/after's mean
    hd95_unit: str = "px"  # "mm" when the slices' pixel spacing was given
    candidate: BRAUNet | None = None  # with keep_candidate: the blended copy, kept or not (what a rejected round gave)


def _pooled_dice(pred: np.ndarray, truth: np.ndarray, binary: bool, extra: Sequence[np.ndarray] = ()) -> float:
    """Mean over classes of the pooled Dice; classes = those in the truth or in any prediction.

    Counting classes that only a prediction contains penalises an organ painted where the annotator
    erased it. Binary models score the foreground only. Returns 1.0 if no class occurs anywhere.
    """
    if binary:
        return dice(pred == 1, truth == 1)
    classes: set[int] = set(np.unique(truth).tolist()) | set(np.unique(pred).tolist())
    for other in extra:
        classes |= set(np.unique(other).tolist())
    classes.discard(0)
    if not classes:
        return 1.0
    return float(np.mean([dice(pred == c, truth == c) for c in sorted(classes)]))


def _class_changes(before: np.ndarray, after: np.ndarray, truth: np.ndarray, binary: bool,
                   names: Sequence[str], spacing: Sequence[tuple[float, float]]) -> list[ClassChange]:
    """Per class: pooled Dice and mean per-slice HD95 of the held-back pixels, before and after.

    ``before``, ``after``, ``truth``: (N, S, S) class ids at the network's resolution; ``spacing``:
    per slice, the size of one of those pixels (rows, cols). The classes are those of
    :func:`_pooled_dice`, so the mean of the Dice column is ``dice_before``/``dice_after``.
    """
    if binary:
        classes = [1]
    else:
        found = set(np.unique(truth).tolist()) | set(np.unique(before).tolist()) | set(np.unique(after).tolist())
        classes = sorted(found - {0})

    def mean_hd95(pred: np.ndarray, c: int) -> float:
        values = [hd95(p == c, t == c, s) for p, t, s in zip(pred, truth, spacing, strict=True)
                  if (p == c).any() or (t == c).any()]  # fmt: skip
        defined = [v for v in values if not np.isnan(v)]
        return float(np.mean(defined)) if defined else float("nan")

    changes = []
    for c in classes:
        name = names[c] if c < len(names) else f"class {c}"
        changes.append(ClassChange(name=name, dice_before=dice(before == c, truth == c),
                                   dice_after=dice(after == c, truth == c), hd95_before=mean_hd95(before, c),
                                   hd95_after=mean_hd95(after, c)))  # fmt: skip
    return changes


def _labels_for(model: BRAUNet, labels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Corrected label maps -> class ids of this model (binary: any non-zero label is foreground)."""
    out = []
    classes = model.config.num_classes
    for i, label in enumerate(labels):
        label = np.asarray(label)
        if label.ndim != 2:
            raise InputError(f"label slice {i}: expected (H, W), got shape {label.shape}")
        if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
            raise InputError(f"label slice {i}: expected integer labels, got dtype {label.dtype}")
        if classes == 1:
            out.append((label != 0).astype(np.int64))
            continue
        if label.size and (label.min() < 0 or label.max() >= classes):
            raise InputError(
                f"label slice {i}: values {label.min()}..{label.max()} are not classes of this model (0..{classes - 1})"
            )
        out.append(label.astype(np.int64))
    return out


def _split(n: int, holdback: float, seed: int) -> tuple[list[int], list[int]]:
    held = min(n - 1, max(1, round(holdback * n)))
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[held:]), sorted(order[:held])


def _grid(shape: tuple[int, ...]) -> list[tuple[slice, slice]]:
    """The REGION_GRID x REGION_GRID blocks of an (H, W) slice, row by row."""
    rows = np.linspace(0, shape[0], REGION_GRID + 1).round().astype(int)
    cols = np.linspace(0, shape[1], REGION_GRID + 1).round().astype(int)
    return [(slice(rows[r], rows[r + 1]), slice(cols[c], cols[c + 1]))
            for r in range(REGION_GRID) for c in range(REGION_GRID)]  # fmt: skip


def _labelled_block_ids(labels: np.ndarray) -> list[int]:
    """(N, S, S) labels -> ids ``slice * REGION_GRID**2 + block`` of the blocks that hold a label."""
    blocks = _grid(labels.shape[1:])
    return [i * len(blocks) + b for i in range(labels.shape[0]) for b, block in enumerate(blocks)
            if (labels[i][block] != 0).any()]  # fmt: skip


def _block_split(labels: np.ndarray, holdback: float, seed: int, labelled: list[int] | None = None) -> np.ndarray:
    """Hold back part of every corrected slice: (N, S, S) labels -> (N, S, S) bool, True where held back.

    Why: a round must be judged on pixels it did not train on, but whole held-back slices are
    costly when there are few: with one slice there is nothing else to measure on, and when the
    slices come from different patients or videos a held-back slice asks whether the model
    generalised to a case it was given no correction of, not whether it learned the corrections.
    Each slice is cut into REGION_GRID x REGION_GRID blocks; ``holdback`` of all the blocks that hold
    labels and of those that do not are held back (the two kinds drawn separately, pooled over the
    slices), at least one and never all of the labelled ones, so both parts contain the structures
    the annotator corrected. ``labelled``: :func:`_labelled_block_ids` of ``labels``, if the caller has them.
    """
    count = labels.shape[0]
    blocks = _grid(labels.shape[1:])
    per_slice = len(blocks)
    labelled = _labelled_block_ids(labels) if labelled is None else labelled
    empty = sorted(set(range(count * per_slice)) - set(labelled))
    if len(labelled) < 2:
        which = "slice has" if count == 1 else f"{count} slices have"
        raise InputError(
            f"the corrected {which} labels in {len(labelled)} of {'its' if count == 1 else 'their'} "
            f"{count * per_slice} blocks: too little to hold part of {'it' if count == 1 else 'them'} back and "
            "still train on the rest; "
            f"correct {'a second' if count == 1 else 'another'} slice"
        )
    rng = np.random.default_rng(seed)
    held = list(rng.permutation(labelled)[: min(len(labelled) - 1, max(1, round(holdback * len(labelled))))])
    held += list(rng.permutation(empty)[: round(holdback * len(empty))])
    mask = np.zeros(labels.shape, dtype=bool)
    for i in held:
        row, col = blocks[int(i) % per_slice]
        mask[int(i) // per_slice, row, col] = True
    return mask


def _set_trainable(model: BRAUNet, mode: str) -> list[nn.Parameter]:
    """The parameters a round trains: the decoder (``"decoder"``) or all that the forward uses."""
    encoder = {id(p) for part in (model.downsample_layers, model.stages) for p in part.parameters()}
    return [p for p in used_parameters(model) if mode == "full" or id(p) not in encoder]


def _train_mode(model: BRAUNet, mode: str) -> None:
    """Dropout/drop-path on in the trained parts; BatchNorm (and a frozen encoder) in eval mode."""
    model.train()
    if mode == "decoder":
        model.downsample_layers.eval()
        model.stages.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class _Replay(torch.utils.data.Dataset):
    """The augmented corrected slices, then the augmented anchor slices: items ``(x, y, known)``."""

    def __init__(self, corrected: AugmentedSlices, anchors: AugmentedSlices | None) -> None:
        self.corrected, self.anchors = corrected, anchors

    def set_epoch(self, epoch: int) -> None:
        self.corrected.set_epoch(epoch)
        if self.anchors is not None:
            self.anchors.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.corrected) + (len(self.anchors) if self.anchors is not None else 0)

    def __getitem__(self, index: int):
        n = len(self.corrected)
        return self.corrected[index] if index < n else self.anchors[index - n]


def _resolve_anchors(anchors: SliceSet | str | os.PathLike | None) -> SliceSet | None:
    """The replay set the caller passed: a SliceSet, an ``anchors.npz``, or a model folder (None if it has none).

    reason: anchors always come from the model's own source (``ModelSource.anchors``); looking
    them up by card name missed copied or renamed models.
    """
    if isinstance(anchors, SliceSet):
        return anchors if len(anchors) else None
    if anchors is None:
        return None
    path = Path(anchors)
    if path.is_dir() and not (path / ANCHORS_FILE).is_file():
        return None
    return load_anchors(path)


def _train_copy(
    model: BRAUNet,
    card: ModelCard,
    train_data,
    anchor_data,
    *,
    mode: str,
    lr: float | None,
    batch_size: int,
    anchors_per_batch: int,
    seed: int,
    start: float,
    deadline: float,
    max_steps: int | None,
    progress: Callable[[FinetuneProgress], None] | None,
    should_stop: Callable[[], bool] | None,
    l2sp: float = 0.0,
) -> tuple[BRAUNet, list[float], int, float]:
    """Train a deep copy of ``model`` until ``deadline`` seconds after ``start`` (or ``max_steps``).

    Returns ``(tuned, losses, steps, base_lr)``. Each step is one :func:`fit` epoch of one batch:
    ``batch_size`` augmented corrected slices plus ``anchors_per_batch`` augmented anchor slices,
    drawn by ``(seed, step)``; AdamW with cosine decay over the budget. ``l2sp`` weighs an L2 pull
    of the trained weights towards the parent's (L2-SP, Li et al. 2018), a second guard against
    drifting away from what the parent knew.
    """
    device = next(model.parameters()).device
    tuned = copy.deepcopy(model).to(device)
    params = _set_trainable(tuned, mode)
    origin = [p.detach().clone() for p in params] if l2sp else []
    base_lr = lr or (2e-4 if mode == "decoder" else 1e-4)
    criterion = make_loss(model.config.num_classes)
    kind = card.recipe.kind
    corrected = AugmentedSlices(train_data, kind, seed=seed)
    replay = None
    if anchor_data is not None and anchors_per_batch:
        replay = AugmentedSlices(anchor_data, kind, seed=seed + 1)
    n = len(corrected)

    def batches(step: int) -> list[list[int]]:
        rng = np.random.default_rng((seed, step))
        picks = rng.choice(n, size=batch_size, replace=n < batch_size).tolist()
        if replay is not None:
            picks += (n + rng.choice(len(replay), size=min(anchors_per_batch, len(replay)), replace=False)).tolist()
        return [picks]

    def loss(logits: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        y = batch[1]
        valid = y != IGNORED
        value = criterion(logits, y.clamp_min(0), None if bool(valid.all()) else valid)
        if l2sp:
            value = value + l2sp * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, origin, strict=True))
        return value

    def cosine(at: Step) -> float:
        """Cosine decay over the budget: the share of time (or of ``max_steps``) used."""
        done = min(1.0, at.elapsed_s / max(deadline, 1e-6))
        if max_steps is not None:
            done = max(done, at.step / max_steps)
        return base_lr * 0.5 * (1 + np.cos(np.pi * done))

    done_steps = [0]

    def on_step(at: Step) -> None:
        done_steps[0] = at.step
        if progress:
            progress(FinetuneProgress(at.step, None, at.elapsed_s, at.loss or 0.0))

    config = FitConfig(epochs=None, batch_size=batch_size, max_steps=max_steps, max_time_s=deadline, started_at=start,
                       grad_clip=5.0, seed=seed, restore_best=False)
    hooks = FitHooks(on_step=on_step, should_stop=should_stop, train_mode=lambda m: _train_mode(m, mode))
    try:
        result = fit(tuned, params, _Replay(corrected, replay), loss=loss,
                     optimizer=lambda trained: torch.optim.AdamW(trained, lr=base_lr, weight_decay=1e-4), lr=cosine,
                     config=config, hooks=hooks, batches=batches)
    except Cancelled:
        raise Cancelled(f"fine-tuning cancelled after {done_steps[0]} steps; the model is unchanged") from None
    for p in tuned.parameters():
        p.requires_grad_(True)
    return tuned, result.losses, result.state.step, base_lr


def _blend(parent: BRAUNet, tuned: BRAUNet, keep: float) -> None:
    """Move ``tuned``'s weights in place to ``parent + keep * (tuned - parent)`` (WiSE-FT).

    Why: averaging in weight space between a model and its fine-tuned copy keeps most of the
    adaptation while cancelling part of the noise the few corrected slices and small batches put
    into the update; both share one pre-trained basin, so the interpolation stays a good network.
    Only floating-point tensors are blended; integer buffers (e.g. BatchNorm's step counter) are
    the tuned copy's, which equal the parent's since BatchNorm is frozen while fine-tuning.
    """
    if keep == 1.0:
        return
    reference = parent.state_dict()
    with torch.no_grad():
        for name, tensor in tuned.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.lerp(reference[name].to(tensor.device, tensor.dtype), tensor, keep))


def finetune(
    model: BRAUNet,
    card: ModelCard,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    mode: str = "decoder",
    time_budget_s: float = 30.0,
    holdback: float = 0.25,
    holdback_by: str = DEFAULT_HOLDBACK_BY,
    progress: Callable[[FinetuneProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    seed: int = 0,
    anchors: SliceSet | str | os.PathLike | None = None,
    lr: float | None = None,
    batch_size: int = 4,
    anchors_per_batch: int = 2,
    max_anchor_drop: float = 0.05,
    max_steps: int | None = None,
    l2sp: float = 0.1,
    blend: float = 0.7,
    spacing: Sequence[tuple[float, float]] | None = None,
    keep_candidate: bool = False,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` on corrected slices; keep it only if held-back Dice improves.

    Args:
        model: the parent model; never modified.
        card: its card (preprocessing recipe, name, version).
        images: raw 2-D slices: CT in HU (H, W) or RGB (H, W, 3) uint8, as shown in the viewer.
        labels: corrected (H, W) integer label maps on the slices' grids; for a binary model any
            non-zero label is foreground.
        mode: "decoder" (encoder frozen; default, safest with few slices) or "full".
        time_budget_s: wall-clock budget of the whole round, evaluations included.
        holdback: share held back for the before/after Dice: of the slices (at least 1 held back,
            at least 1 trained on) or, by blocks, of each slice's 8 x 8 blocks.
        holdback_by: "slices" holds whole slices back; "blocks" trains on every corrected slice
            and holds back that share of their blocks (always so for a single slice). See
            :func:`_block_split` for when blocks judge a round better.
        progress: called after every step.
        should_stop: polled after every step; True raises :class:`braunet.errors.Cancelled` (the
            parent stays as it was).
        seed: split, sampling and augmentation seed.
        anchors: the replay set: a SliceSet, an ``anchors.npz`` or the model's folder (its
            ``anchors.npz``, if any): pass ``resolve_model(ref).anchors``. None or an empty
            SliceSet: no replay.
        lr: AdamW learning rate (default 2e-4 for "decoder", 1e-4 for "full"; higher rates fitted
            the corrected frames faster but cost more on the validation split in bench_finetune).
        batch_size: corrected slices per step; ``anchors_per_batch`` anchor slices are added.
        max_anchor_drop: reject the result if Dice on the anchors drops more than this.
        max_steps: also stop after this many steps (reproducible rounds, e.g. in tests).
        l2sp: weight of the L2 pull towards the parent's weights (0 disables it). In a 2-seed probe
            on the bench_finetune setting it halved the validation-split cost of decoder rounds;
            replay matters more (models/README.md).
        blend: share of the fine-tuning update kept: the result's weights are
            ``parent + blend * (trained - parent)`` (WiSE-FT weight-space interpolation), scored and
            accepted or rejected as such. 1 keeps the trained copy as it is. Over 3 seeds and two
            learning rates of bench_finetune, 0.7 and 0.5 both beat 1 on the unseen frames and on
            the validation split; 0.7 cost less on the validation split (models/README.md).
        spacing: per slice, its pixel size (rows, cols) in mm, for HD95 in mm; None: HD95 in
            pixels of the slices as given. Required by a model whose recipe resamples slices to
            fixed-size pixels (``spacing_mm``): the corrected slices are prepared exactly as
            ``predict`` prepares them.
        keep_candidate: also return the blended copy when it is rejected (``result.candidate``),
            to measure what the accept rule turned down (bench/bench_finetune.py); off by default
            so a rejected copy is not kept in memory.

    Raises:
        InputError: no slices, a single slice with labels in fewer than 2 blocks, mismatched
            shapes, labels that are not classes of the model.
        Cancelled: ``should_stop()`` returned True.
    """
    start = time.perf_counter()
    if mode not in MODES:
        raise InputError(f"fine-tune mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not time_budget_s > 0:
        raise InputError(f"time budget must be positive, got {time_budget_s}")
    if not 0 < holdback < 1:
        raise InputError(f"holdback must be between 0 and 1, got {holdback}")
    if holdback_by not in HOLDBACK_UNITS:
        raise InputError(f"holdback_by must be one of {', '.join(HOLDBACK_UNITS)}, got {holdback_by!r}")
    if not 0 < blend <= 1:
        raise InputError(f"blend must be in (0, 1], got {blend}")
    if len(images) != len(labels):
        raise InputError(f"{len(images)} image slices but {len(labels)} label slices")
    if spacing is not None and len(spacing) != len(images):
        raise InputError(f"{len(images)} image slices but {len(spacing)} pixel spacings")
    if not images:
        raise InputError("fine-tuning needs at least 1 corrected slice, got none")
    network_mm = card.recipe.spacing_mm
    if network_mm and spacing is None:
        raise InputError(f"model {card.name!r} resamples slices to {network_mm:g} mm pixels: fine-tuning needs the "
                         "corrected slices' pixel spacing (rows, cols) in mm")  # fmt: skip
    config = model.config
    binary = config.num_classes == 1
    slices = SliceSet.from_arrays(images, _labels_for(model, labels), group="corrected",
                                  spacing=spacing if spacing is not None else (1.0, 1.0))  # fmt: skip
    data = prepare(slices, card.preprocessing, config.img_size, config.num_classes)
    held_region = None  # (N, S, S) bool where the slices are split by blocks
    labelled = _labelled_block_ids(data.y.numpy()) if len(slices) == 1 or holdback_by == "blocks" else []
    if len(slices) == 1 or len(labelled) >= 2:
        train_idx = held_idx = list(range(len(slices)))
        held_region = _block_split(data.y.numpy(), holdback, seed, labelled)
        hidden = data.y.masked_fill(torch.from_numpy(held_region), IGNORED)
        train_data, held_data = dataclasses.replace(data, y=hidden), data
    else:  # reason: several slices with labels in fewer than 2 blocks (e.g. false organs erased) still split by slice
        train_idx, held_idx = _split(len(slices), holdback, seed)
        train_data, held_data = data.subset(train_idx), data.subset(held_idx)
    anchor_set = _resolve_anchors(anchors)
    anchor_data = (
        prepare(anchor_set, card.preprocessing, config.img_size, config.num_classes) if anchor_set is not None else None
    )

    was_training = model.training
    model.eval()
    t_eval = time.perf_counter()
    pred_before = predict_prepared(model, held_data.x).numpy()
    anchor_before = predict_prepared(model, anchor_data.x).numpy() if anchor_data is not None else None
    eval_cost = time.perf_counter() - t_eval
    model.train(was_training)

    with torch.random.fork_rng(devices=[]):  # reason: seeded drop-path without touching the caller's RNG
        torch.manual_seed(seed)
        tuned, losses, step, base_lr = _train_copy(
            model, card, train_data, anchor_data, mode=mode, lr=lr, batch_size=batch_size,
            anchors_per_batch=anchors_per_batch, seed=seed, start=start,
            deadline=time_budget_s - 1.5 * eval_cost,  # reason: leave time to score the result
            max_steps=max_steps, progress=progress, should_stop=should_stop, l2sp=l2sp,
        )
    _blend(model, tuned, blend)
    pred_after = predict_prepared(tuned, held_data.x).numpy()
    truth = held_data.y.numpy()
    if held_region is not None:  # score the held-back blocks only
        pred_before, pred_after, truth = (np.where(held_region, a, 0) for a in (pred_before, pred_after, truth))
    dice_before = _pooled_dice(pred_before, truth, binary, [pred_after])
    dice_after = _pooled_dice(pred_after, truth, binary, [pred_before])
    size = config.img_size
    # The network grid's pixel size: fixed by a spacing_mm recipe, else the slice stretched to S x S.
    held_spacing = [(float(network_mm), float(network_mm)) if network_mm else
                    tuple(float(mm) * n / size for mm, n in
                          zip(spacing[i] if spacing is not None else (1.0, 1.0), np.shape(images[i])[:2], strict=True))
                    for i in held_idx]  # fmt: skip
    per_class = _class_changes(pred_before, pred_after, truth, binary, card.class_names, held_spacing)
    anchor_dice_before = anchor_dice_after = None
    if anchor_data is not None:
        anchor_after = predict_prepared(tuned, anchor_data.x).numpy()
        anchor_truth = anchor_data.y.numpy()
        anchor_dice_before = _pooled_dice(anchor_before, anchor_truth, binary, [anchor_after])
        anchor_dice_after = _pooled_dice(anchor_after, anchor_truth, binary, [anchor_before])
    elapsed = time.perf_counter() - start

    improved = dice_after > dice_before
    forgot = anchor_dice_before is not None and anchor_dice_after < anchor_dice_before - max_anchor_drop
    accepted = improved and not forgot
    where = (f"{len(held_idx)} slice(s)" if held_region is None else
             f"{held_region.mean():.0%} of the slice (blocks)" if len(held_idx) == 1 else
             f"{held_region.mean():.0%} of {len(held_idx)} slices (blocks)")  # fmt: skip
    summary = f"held-back Dice {dice_before:.3f} -> {dice_after:.3f} on {where}"
    if anchor_dice_before is not None:
        summary += f", anchor Dice {anchor_dice_before:.3f} -> {anchor_dice_after:.3f}"
    if accepted:
        message = f"accepted as {card.name} v{card.version + 1}: {summary}"
    elif not improved:
        message = f"kept {card.name} v{card.version}: the fine-tuned copy did not improve ({summary})"
    else:
        message = (
            f"kept {card.name} v{card.version}: the fine-tuned copy forgot its training data "
            f"(anchor Dice fell by more than {max_anchor_drop}; {summary})"
        )
    details = {
        "mode": mode, "steps": step, "elapsed_s": round(elapsed, 2), "time_budget_s": time_budget_s,
        "n_train": len(train_idx), "n_heldout": len(held_idx), "n_anchors": len(anchor_data) if anchor_data else 0,
        "seed": seed, "lr": base_lr, "batch_size": batch_size, "anchors_per_batch": anchors_per_batch,
        "l2sp": l2sp, "blend": blend,
        "heldout": "slices" if held_region is None else "blocks",
    }
    if held_region is not None:
        details["heldout_share_of_slice"] = round(float(held_region.mean()), 4)  # of each slice, on average
    if accepted:
        new_card = copy.deepcopy(card)
        new_card.version = card.version + 1
        new_card.parent = f"{card.name}@{card.version}"
        new_card.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        new_card.training = {**card.training, "finetune": details}
        new_card.metrics = {
            "finetune": {
                "heldout_dice_before": dice_before, "heldout_dice_after": dice_after,
                "anchor_dice_before": anchor_dice_before, "anchor_dice_after": anchor_dice_after,
                "note": ("Dice at the network resolution on the corrected pixels held back from fine-tuning "
                         f"({'blocks of the corrected slices' if held_region is not None else 'whole slices'})"),
            },
            "parent_metrics": card.metrics,
        }
        result_model, result_card = tuned, new_card
    else:
        result_model, result_card = model, card
    return FinetuneResult(
        model=result_model, card=result_card, dice_before=dice_before, dice_after=dice_after, accepted=accepted,
        losses=losses, train_indices=train_idx, heldout_indices=held_idx, message=message,
        anchor_dice_before=anchor_dice_before, anchor_dice_after=anchor_dice_after, steps=step,
        elapsed_s=elapsed, details=details, per_class=per_class, hd95_unit="px" if spacing is None else "mm",
        candidate=tuned if keep_candidate else None,
    )

