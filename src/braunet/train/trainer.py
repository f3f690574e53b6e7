"""The training loop: validation, best checkpoint by validation Dice, resume, AMP on GPU, DDP via torchrun.

One function, :func:`train`, runs in a single process or in each process that ``torchrun`` starts
(``torchrun --nproc_per_node N -m braunet train ...``): it reads ``WORLD_SIZE`` / ``RANK`` /
``LOCAL_RANK`` from the environment, joins a process group (``gloo`` on CPU, ``nccl`` on GPU), shards
the training slices with a ``DistributedSampler`` (each rank takes ``batch_size`` slices per step, so
the global batch is ``batch_size * world_size``) and averages gradients with
``DistributedDataParallel``. All ranks run the same validation and take the same decisions (stop,
learning rate, best epoch), so their weights stay identical; only rank 0 writes files.

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
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from braunet.errors import Cancelled, CheckpointError, InputError
from braunet.model import BRAUNet, ModelCard, save_checkpoint
from braunet.train.data import AugmentedSlices, PreparedSlices
from braunet.train.losses import DiceCELoss, make_loss
from braunet.train.validation import DiceReport, validation_dice

__all__ = [
    "EpochShuffle",
    "STATE_FILE",
    "DistInfo",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "describe_hardware",
    "setup_distributed",
    "train",
]

STATE_FILE = "train_state.pt"


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
        augment: "auto" (from the card's preprocessing kind), "ct", "rgb" or "none";
            see :class:`braunet.train.data.AugmentedSlices`.
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
        if self.augment not in ("auto", "ct", "rgb", "none"):
            raise ValueError(f"augment must be auto, ct, rgb or none, got {self.augment!r}")
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


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Backend ``nccl`` when CUDA is used, ``gloo`` on CPU. With ``WORLD_SIZE`` unset or 1 nothing is
    initialised. On CPU each process gets ``cores / local processes`` threads.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if world <= 1:
        return DistInfo(device=torch.device(device or ("cuda" if use_cuda else "cpu")))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev)


def describe_hardware(device: torch.device) -> str:
    """One line: the CPU (or GPU) and thread count, for the model card."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


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


def _lr_at(config: TrainConfig, step: int, total_steps: int, elapsed: float) -> float:
    done = step / max(total_steps, 1)
    if config.max_time_s:
        done = max(done, elapsed / config.max_time_s)
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return config.lr * warm * max(0.0, 1.0 - done) ** config.poly_power


def _make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _freeze_unused(model: BRAUNet) -> None:
    """The official forward never runs ``stages[3]``; DDP would wait forever for its gradients."""
    if not model.config.bottleneck_blocks:
        for p in model.stages[3].parameters():
            p.requires_grad_(False)


def _agree(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise maximum over ranks (elapsed time, stop flags), so every rank decides alike."""
    if info.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def _sync_buffers(model: nn.Module, info: DistInfo) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks.

    DDP broadcasts rank 0's buffers before each forward, but the last forward of an epoch updates
    each rank's statistics from its own shard; averaging makes the ranks identical again (and the
    statistics cover every shard) before validation and saving.
    """
    if info.world_size == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(info.world_size)


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
        train_data, val_data: from :func:`braunet.train.data.prepare` with the card's recipe.
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
    _freeze_unused(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(config, params)
    use_amp = info.device.type == "cuda" and config.amp is not False
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = make_loss(model.config.num_classes)

    state: dict[str, Any] = {"epoch": 0, "step": 0, "elapsed": 0.0, "best_dice": None, "best_epoch": -1, "history": []}
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        saved = torch.load(state_path, map_location=info.device, weights_only=True)
        if saved.get("model_config") != model.config.to_dict():
            raise CheckpointError(f"{state_path}: saved for a different model config; cannot resume")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if use_amp and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state.update({k: saved[k] for k in ("epoch", "step", "elapsed", "best_dice", "best_epoch", "history")})
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if resume and (out / "model.safetensors").is_file() and state["best_epoch"] >= 0:
        from safetensors.torch import load_file

        best_state = {k: v.to(info.device, dtype=best_state[k].dtype) for k, v in load_file(out / "model.safetensors").items()}

    net: nn.Module = model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None
        )
    dataset = AugmentedSlices(train_data, _augment_kind(config, card), seed=config.seed)
    sampler: torch.utils.data.Sampler
    if info.world_size > 1:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed
        )
    else:
        sampler = EpochShuffle(len(dataset), config.seed)
    per_rank = math.ceil(len(dataset) / info.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
        drop_last=per_rank > config.batch_size,  # reason: a 1-slice last batch gives noisy BatchNorm stats
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    classes = max(model.config.num_classes, 2)

    def save_state() -> None:
        if not info.is_main:
            return
        payload = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {}, "model_config": model.config.to_dict(),
            "train_config": config.to_dict(), **state,
        }
        from braunet._atomic import atomic_path

        with atomic_path(state_path) as tmp:
            torch.save(payload, tmp)

    def current_card(report: DiceReport | None) -> ModelCard:
        training = {
            "settings": config.to_dict(), "epochs_run": state["epoch"], "steps": state["step"],
            "train_wall_s": round(state["elapsed"], 1), "best_epoch": state["best_epoch"],
            "hardware": describe_hardware(info.device), "world_size": info.world_size,
            "n_train_slices": len(train_data), "n_val_slices": len(val_data) if val_data is not None else 0,
        }
        metrics = {"validation": report.to_dict(card.class_names)} if report is not None else {}
        return _card_with(card, training=training, metrics=metrics)

    best_report: DiceReport | None = None
    start = time.perf_counter() - state["elapsed"]
    last_state_save = time.perf_counter()
    stopped = cancelled = False
    net.train()
    while state["epoch"] < config.epochs and not stopped:
        epoch = state["epoch"]
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        losses = []
        for x, y, known in loader:
            x, y, known = x.to(info.device), y.to(info.device), known.to(info.device)
            lr = _lr_at(config, state["step"], total_steps, state["elapsed"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=info.device.type, dtype=torch.float16, enabled=use_amp):
                logits = net(x)
            loss = _batch_loss(criterion, logits.float(), y, known)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            losses.append(float(loss.detach()))
            local_stop = bool(should_stop and should_stop())
            elapsed, stop_flag = _agree([time.perf_counter() - start, float(local_stop)], info)
            state["elapsed"] = elapsed
            if progress and info.is_main:
                progress(TrainProgress(epoch, config.epochs, state["step"], total_steps, elapsed, losses[-1], lr,
                                       best_dice=state["best_dice"]))
            if stop_flag:
                stopped = cancelled = True
                break
            if (config.max_time_s and elapsed >= config.max_time_s) or state["step"] >= total_steps:
                stopped = True
                break
        state["epoch"] = epoch + 1
        _sync_buffers(model, info)
        last = state["epoch"] >= config.epochs or stopped
        record: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                                  "elapsed_s": round(state["elapsed"], 1)}
        if val_data is not None and (state["epoch"] % config.val_every == 0 or last) and not cancelled:
            report = validation_dice(model, val_data)
            record["val_dice"] = report.mean
            if state["best_dice"] is None or report.mean > state["best_dice"]:
                state["best_dice"], state["best_epoch"], best_report = report.mean, epoch, report
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if info.is_main:
                    save_checkpoint(model, current_card(report), out, half=config.half)
            if progress and info.is_main:
                progress(TrainProgress(epoch, config.epochs, state["step"], total_steps, state["elapsed"],
                                       record["loss"] or float("nan"), lr, report.mean, state["best_dice"]))
        state["history"].append(record)
        net.train()
        if time.perf_counter() - last_state_save >= config.state_every_s or last:
            save_state()
            last_state_save = time.perf_counter()
    if cancelled:
        save_state()
        if info.world_size > 1:
            dist.barrier()
        raise Cancelled(f"training stopped at epoch {state['epoch']}; resume it with resume=True in {out}")
    if val_data is None:
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state["best_epoch"] = state["epoch"] - 1
    model.load_state_dict(best_state)
    model.eval()
    if best_report is None and val_data is not None and state["best_dice"] is not None:
        best_report = validation_dice(model, val_data)  # resumed run whose best came from before
    final_card = current_card(best_report)
    if info.is_main:
        save_checkpoint(model, final_card, out, half=config.half)
    if info.world_size > 1:
        dist.barrier()
    return TrainResult(
        model=model, card=final_card, out_dir=out, best_dice=state["best_dice"], best_epoch=state["best_epoch"],
        epochs_run=state["epoch"], steps=state["step"], wall_s=state["elapsed"], history=state["history"],
        world_size=info.world_size,
    )


class EpochShuffle(torch.utils.data.Sampler):
    """A random permutation per epoch from ``(seed, epoch)``: reproducible and resumable."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng((self.seed, self.epoch)).permutation(self.n).tolist())

