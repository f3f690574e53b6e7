"""Our training policy over :func:`braunet.train.loop.fit`: best checkpoint by validation Dice, AdamW
or SGD with warm-up and polynomial decay, augmentation by image kind, partially annotated slices.

:func:`train` runs in a single process or in each process that ``torchrun`` starts
(``torchrun --nproc_per_node N -m braunet train ...``): the loop joins the process group, shards
the training slices (each rank takes ``batch_size`` slices per step, so the global batch is
``batch_size * world_size``) and keeps the ranks' weights identical; only rank 0 writes files.

Output folder (``out_dir``):

* ``model.safetensors`` + ``card.json``: the best checkpoint by validation Dice (the last one when
  there is no validation set), loadable with :func:`braunet.model.load_checkpoint`;
* ``train_state.pt``: model, optimizer and loop state for ``resume=True`` (plain tensors and numbers,
  read back with ``torch.load(weights_only=True)``).

Learning rate: linear warm-up, then the official polynomial decay ``lr * (1 - f) ** 0.9`` where ``f``
is the fraction of training done, by steps or, with a time budget, by elapsed time (whichever is
further), so a time-limited run still anneals to zero at its end.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from braunet.errors import CheckpointError, InputError
from braunet.model import BRAUNet, ModelCard, save_checkpoint
from braunet.train.datasets import AugmentedSlices, PreparedSlices
from braunet.train.loop import (
    STATE_FILE,
    FitConfig,
    FitHooks,
    FitState,
    Step,
    describe_hardware,
    fit,
    setup_distributed,
    used_parameters,
)
from braunet.train.losses import DiceCELoss, make_loss
from braunet.train.validation import DiceReport, validation_dice

__all__ = ["TrainConfig", "TrainProgress", "TrainResult", "train"]


@dataclass
class TrainConfig:
    """Optimisation settings. ``to_dict``/``from_dict`` make it a config file (recipes build on it).

    Attributes:
        epochs: passes over the training slices (upper bound when ``max_steps`` or ``max_time_s``
            is set).
        max_steps: stop after this many optimizer steps (None: ``epochs`` decides).
        max_time_s: stop after this many seconds of training (None: no limit).
        batch_size: slices per step and per process.
        lr, weight_decay, optimizer ("adamw" or "sgd"), momentum (SGD): as in PyTorch.
        warmup_steps: linear learning-rate warm-up, then polynomial decay with ``poly_power``.
        augment: "auto" (from the card's preprocessing kind), "ct", "rgb", "none", or "site": the
            site-variation policy of the card's kind (:func:`braunet.train.augment.site_augment`) at
            ``augment_strength``; see :class:`braunet.train.datasets.AugmentedSlices`.
        augment_strength: scales the "site" policy's ranges (1: its defaults).
        val_every: validate every this many epochs (and after the last).
        amp: mixed precision; None = on for CUDA, off on CPU (CPU autocast does not speed this
            model up on 2 cores).
        grad_clip: clip the gradient norm (None: no clipping).
        state_every_s: write ``train_state.pt`` at most this often (and at the end).
        half: store the checkpoint's weights as float16 (bundled models).
        seed: seeds weights-independent randomness (sampling and augmentation).
    """

    epochs: int = 50
    max_steps: int | None = None
    max_time_s: float | None = None
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    warmup_steps: int = 20
    poly_power: float = 0.9
    augment: str = "auto"
    augment_strength: float = 1.0
    val_every: int = 1
    amp: bool | None = None
    grad_clip: float | None = 5.0
    num_workers: int = 0
    state_every_s: float = 60.0
    half: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("epochs, batch_size and val_every must be >= 1")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.augment not in ("auto", "ct", "rgb", "none", "site"):
            raise ValueError(f"augment must be auto, ct, rgb, none or site, got {self.augment!r}")
        if self.max_time_s is not None and self.max_time_s <= 0:
            raise ValueError("max_time_s must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown settings {unknown}")
        return cls(**data)


@dataclass
class TrainProgress:
    """Reported after every step (``val_dice`` after validations)."""

    epoch: int
    epochs: int
    step: int
    total_steps: int
    elapsed_s: float
    loss: float
    lr: float
    val_dice: float | None = None
    best_dice: float | None = None


@dataclass
class TrainResult:
    model: BRAUNet  # the best weights, in eval mode
    card: ModelCard
    out_dir: Path
    best_dice: float | None
    best_epoch: int
    epochs_run: int
    steps: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1


def _partial_loss(logits: Tensor, target: Tensor, known: Tensor) -> Tensor:
    """0.4 CE + 0.6 Dice for slices that annotate only some classes (e.g. a liver-only label).

    The probabilities of the unannotated classes are merged into background (log-sum-exp of their
    logits): a pixel labelled 0 there means "not an annotated organ", which may still be another
    organ. Every slice in the batch has the same ``known`` row (the caller groups them).
    logits (B, K, S, S), target (B, S, S), known (K,) bool -> scalar.
    """
    kept = [c for c in range(1, logits.shape[1]) if bool(known[c])]
    merged = [c for c in range(logits.shape[1]) if c not in kept]
    background = torch.logsumexp(logits[:, merged].float(), dim=1, keepdim=True)
    reduced = torch.cat([background, logits[:, kept].float()], dim=1)
    remap = torch.zeros(logits.shape[1], dtype=torch.long, device=target.device)
    remap[kept] = torch.arange(1, len(kept) + 1, device=target.device)
    return DiceCELoss(num_classes=len(kept) + 1)(reduced, remap[target])


def _batch_loss(criterion: nn.Module, logits: Tensor, y: Tensor, known: Tensor) -> Tensor:
    """Loss of a batch; binary models take 0/1 targets, partially annotated slices go through
    :func:`_partial_loss` (weighted by their share of the batch)."""
    if logits.shape[1] == 1:
        return criterion(logits, y)
    full = known.all(dim=1)
    if bool(full.all()):
        return criterion(logits, y)
    total = logits.new_zeros((), dtype=torch.float32)
    if bool(full.any()):
        total = total + criterion(logits[full], y[full]) * full.sum() / len(full)
    rows = known[~full]
    for row in torch.unique(rows, dim=0):
        pick = (~full).nonzero()[:, 0][(rows == row).all(dim=1)]
        total = total + _partial_loss(logits[pick], y[pick], row) * len(pick) / len(full)
    return total


def _augment_kind(config: TrainConfig, card: ModelCard) -> str:
    if config.augment != "auto":
        return config.augment
    return card.recipe.kind


def _lr_at(config: TrainConfig, at: Step) -> float:
    """Linear warm-up, then ``lr * (1 - f) ** poly_power``, ``f`` the share of steps or time done."""
    done = at.step / max(at.total_steps or 1, 1)
    if config.max_time_s:
        done = max(done, at.elapsed_s / config.max_time_s)
    warm = min(1.0, (at.step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return config.lr * warm * max(0.0, 1.0 - done) ** config.poly_power


def _make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _card_with(card: ModelCard, **updates: Any) -> ModelCard:
    new = copy.deepcopy(card)
    for key, value in updates.items():
        getattr(new, key).update(value)
    return new


def train(
    model: BRAUNet,
    card: ModelCard,
    train_data: PreparedSlices,
    val_data: PreparedSlices | None,
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_data``; keep the weights with the best validation Dice.

    Args:
        model: a BRAUNet whose config equals ``card.config`` (fresh or pre-trained).
        card: written beside the weights; ``metrics["validation"]`` and ``training`` (epochs, steps,
            wall time, hardware, settings) are filled in, other fields kept.
        train_data, val_data: from :func:`braunet.train.datasets.prepare` with the card's recipe.
            ``val_data`` None: no validation, the last weights are kept.
        out_dir: output folder (created); see the module docstring.
        resume: continue from ``out_dir/train_state.pt`` (same model config), including the
            elapsed time counted against ``max_time_s``.
        progress: called after each step on rank 0.
        should_stop: polled after each step; True stops training, saves the state (resumable) and
            raises :class:`braunet.errors.Cancelled`.
        device: "cpu", "cuda" or "cuda:N"; default CUDA when available. Under torchrun each
            process uses its LOCAL_RANK GPU.

    Returns:
        :class:`TrainResult` with the best model (eval mode) and its card.
    """
    config = config or TrainConfig()
    if card.config != model.config:
        raise CheckpointError(f"card {card.name!r}: config differs from the model's config")
    if len(train_data) == 0:
        raise InputError("no training slices")
    info = setup_distributed(device)
    out = Path(out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = model.to(info.device)
    criterion = make_loss(model.config.num_classes)
    reports: dict[str, DiceReport] = {}  # the "latest" and the "best" validation, for the cards

    def current_card(state: FitState, report: DiceReport | None) -> ModelCard:
        training = {
            "settings": config.to_dict(), "epochs_run": state.epoch, "steps": state.step,
            "train_wall_s": round(state.elapsed, 1), "best_epoch": state.best_epoch,
            "hardware": describe_hardware(info.device), "world_size": info.world_size,
            "n_train_slices": len(train_data), "n_val_slices": len(val_data) if val_data is not None else 0,
        }
        metrics = {"validation": report.to_dict(card.class_names)} if report is not None else {}
        return _card_with(card, training=training, metrics=metrics)

    def validate() -> float:
        reports["latest"] = validation_dice(model, val_data)
        return reports["latest"].mean

    def on_best(state: FitState) -> None:
        reports["best"] = reports["latest"]
        if info.is_main:
            save_checkpoint(model, current_card(state, reports["best"]), out, half=config.half)

    def on_step(at: Step) -> None:
        if progress:
            progress(TrainProgress(at.epoch, config.epochs, at.step, at.total_steps or 0, at.elapsed_s, at.loss or 0.0,
                                   at.lr or 0.0, best_dice=at.best_score))

    def on_epoch_end(state: FitState, record: dict[str, Any], last: bool) -> None:
        if progress and info.is_main and "val_dice" in record:
            progress(TrainProgress(record["epoch"], config.epochs, state.step, state.total_steps or 0, state.elapsed,
                                   record["loss"] or float("nan"), record["lr"] or 0.0, record["val_dice"],
                                   state.best_score))

    def saved_best() -> dict[str, Tensor]:
        from safetensors.torch import load_file

        current = model.state_dict()
        return {k: v.to(info.device, dtype=current[k].dtype) for k, v in load_file(out / "model.safetensors").items()}

    kind = _augment_kind(config, card)
    policy = None
    if kind == "site":
        from braunet.train.augment import site_augment

        recipe = card.recipe
        policy = site_augment(recipe.kind, config.augment_strength, mean=recipe.mean, std=recipe.std)
    dataset = AugmentedSlices(train_data, kind, seed=config.seed, policy=policy)
    fit_config = FitConfig(
        epochs=config.epochs, batch_size=config.batch_size, max_steps=config.max_steps, max_time_s=config.max_time_s,
        grad_clip=config.grad_clip, amp=config.amp is not False, seed=config.seed, drop_last=True,
        num_workers=config.num_workers, val_every=config.val_every, metric="val_dice", state_file=out / STATE_FILE,
        state_every_s=config.state_every_s, resume=resume,
    )
    hooks = FitHooks(
        on_step=on_step, should_stop=should_stop, validate=validate if val_data is not None else None,
        on_best=on_best, on_epoch_end=on_epoch_end,
        load_best=saved_best if (out / "model.safetensors").is_file() else None,
    )
    result = fit(
        model, used_parameters(model), dataset,
        loss=lambda logits, batch: _batch_loss(criterion, logits, batch[1], batch[2]),
        optimizer=lambda params: _make_optimizer(config, params), lr=lambda at: _lr_at(config, at),
        config=fit_config, hooks=hooks, info=info, state_check={"model_config": model.config.to_dict()},
    )
    state = result.state
    if val_data is None:
        state.best_epoch = state.epoch - 1
    report = reports.get("best")
    if report is None and val_data is not None and state.best_score is not None:
        report = validation_dice(model, val_data)  # resumed run whose best came from before
    final_card = current_card(state, report)
    if info.is_main:
        save_checkpoint(model, final_card, out, half=config.half)
    if info.world_size > 1:
        torch.distributed.barrier()
    return TrainResult(
        model=model, card=final_card, out_dir=out, best_dice=state.best_score, best_epoch=state.best_epoch,
        epochs_run=state.epoch, steps=state.step, wall_s=state.elapsed, history=state.history,
        world_size=info.world_size,
    )
