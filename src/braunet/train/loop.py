"""The one training loop, :func:`fit`: DDP, AMP, resume state, budgets, cancellation and keep-best.

:func:`braunet.train.trainer.train` (our defaults), :func:`braunet.repro.runner.run_recipe` (the
paper's protocols) and :func:`braunet.train.finetune.finetune` (a few corrected slices) are policies
over it: each chooses the loss, the optimizer, the learning-rate schedule, the trainable parameters,
the data and the validation, and :func:`fit` runs them. It knows nothing about model cards,
recipes or fine-tuning.

What the loop owns:

* **DDP.** Under ``torchrun`` (``info`` from :func:`setup_distributed` with ``world_size > 1``) the
  model is wrapped in ``DistributedDataParallel``, each rank draws its shard of every epoch from a
  ``DistributedSampler``, BatchNorm buffers are averaged over ranks after every epoch, and elapsed
  time, the stop flag and validation scores are agreed (every rank takes rank 0's score and the
  maximum elapsed time), so all ranks take the same decisions and keep identical weights.
* **Mixed precision** on CUDA (float16 autocast around the forward pass, ``GradScaler``).
* **Resume.** :class:`FitState` (epoch, step, position inside the epoch, elapsed time, best score,
  history) is written with the model, optimizer, scaler and RNG states to ``FitConfig.state_file``
  (``train_state.pt``): after every epoch at most every ``state_every_s`` seconds, at the end and on
  cancellation. ``resume=True`` continues at the next batch, so an interrupted run ends with the
  weights of an uninterrupted one. The file holds plain tensors and numbers only
  (``torch.load(weights_only=True)``); a truncated, corrupt or foreign file, or one of another
  type, is refused in one :class:`~braunet.errors.CheckpointError` line before anything is applied.
* **Budgets**: ``epochs``, ``max_steps`` and ``max_time_s`` (counted from ``started_at``, across
  resumes); a budget that ends inside an epoch closes that epoch as the last one.
* **Cancellation**: ``should_stop()`` is polled after every step; True saves the state and raises
  :class:`braunet.errors.Cancelled`.
* **Keep-best**: ``validate()`` every ``val_every`` epochs (and after the last); ``is_better(new,
  best)`` decides; the best weights are kept (and restored at the end with ``restore_best``).

Example::

    info = setup_distributed("cpu")
    result = fit(model, used_parameters(model), dataset, loss=lambda logits, batch: criterion(logits, batch[1]),
                 optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3), lr=lambda at: 1e-3,
                 config=FitConfig(epochs=10, batch_size=8, state_file=Path("run/train_state.pt")), info=info)
"""

from __future__ import annotations

import math
import operator
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from braunet.errors import Cancelled, CheckpointError

__all__ = [
    "STATE_FILE",
    "DistInfo",
    "EpochShuffle",
    "FitConfig",
    "FitHooks",
    "FitResult",
    "finish_distributed",
    "FitState",
    "Step",
    "describe_hardware",
    "fit",
    "setup_distributed",
    "used_parameters",
]

STATE_FILE = "train_state.pt"

Batch = tuple[Tensor, ...]  # (x (B, C, S, S), targets ...) as the DataLoader collates a dataset's items


# ----------------------------------------------------------------------------------------------
# Processes and hardware


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


def finish_distributed(world_size: int) -> bool:
    """Close the process group of a ``torchrun`` job; True where this process reports (rank 0 or no DDP).

    reason: every rank returns from training with the same result; only one should print it.
    """
    if world_size <= 1:
        return True
    import torch.distributed as dist

    rank = dist.get_rank()
    dist.destroy_process_group()
    return rank == 0


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


def used_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the forward pass uses: all but ``stages[3]`` of a BRAUNet without bottleneck blocks.

    Why: the official forward never runs ``stages[3]``; DDP would wait forever for its gradients.
    """
    config = getattr(model, "config", None)
    unused = set()
    if config is not None and not getattr(config, "bottleneck_blocks", 1):
        unused = {id(p) for p in model.stages[3].parameters()}
    return [p for p in model.parameters() if id(p) not in unused]


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


# ----------------------------------------------------------------------------------------------
# Settings, hooks, state


@dataclass
class FitConfig:
    """How :func:`fit` runs; what it optimises comes in as functions.

    Attributes:
        epochs: passes over the data; None: until ``max_steps`` or ``max_time_s`` ends the run.
        batch_size: items per step and per process.
        max_steps, max_time_s: step and wall-clock budgets (None: none).
        started_at: ``time.perf_counter()`` from which ``max_time_s`` and ``elapsed_s`` count
            (default: the start of :func:`fit`; a resumed run adds the time already spent).
        grad_clip: clip the gradient norm of the trained parameters (None: no clipping).
        amp: float16 autocast and gradient scaling; used on CUDA only.
        seed: seeds the epoch shuffle.
        drop_last: drop a short last batch of an epoch (only when a rank has more than one batch).
        num_workers: DataLoader worker processes.
        val_every: validate every this many epochs (and after the last).
        metric: key of the validation score in the history records.
        restore_best: end with the best validation weights (else with the last ones).
        state_file: where the resume state goes (None: nowhere; cancelling cannot be resumed).
        state_every_s: write the state after an epoch at most this often (0: every epoch).
        resume: continue from ``state_file`` if it exists.
        resume_mid_epoch: continue an interrupted epoch at its next batch; False re-runs it from
            its first batch (the weights keep the steps already done).
    """

    epochs: int | None
    batch_size: int
    max_steps: int | None = None
    max_time_s: float | None = None
    started_at: float | None = None
    grad_clip: float | None = None
    amp: bool = False
    seed: int = 0
    drop_last: bool = False
    num_workers: int = 0
    val_every: int = 1
    metric: str = "val_score"
    restore_best: bool = True
    state_file: Path | None = None
    state_every_s: float = 0.0
    resume: bool = False
    resume_mid_epoch: bool = True

    def __post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None and self.max_time_s is None:
            raise ValueError("give epochs, max_steps or max_time_s: the run needs an end")
        if (self.epochs is not None and self.epochs < 1) or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("epochs, batch_size and val_every must be >= 1")


@dataclass(frozen=True)
class Step:
    """Where the loop is: given to the learning-rate function before a step (``loss`` None) and to
    ``FitHooks.on_step`` after it. ``step`` counts the optimizer steps done so far."""

    epoch: int
    step: int
    total_steps: int | None  # None: the run ends by time only
    elapsed_s: float
    loss: float | None = None
    lr: float | None = None
    best_score: float | None = None


@dataclass
class FitState:
    """The loop's counters, saved in the state file; hooks may read it (``FitHooks`` get it)."""

    epoch: int = 0  # epochs completed
    step: int = 0
    batch: int = 0  # batches done in the current epoch
    elapsed: float = 0.0
    best_score: float | None = None
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per completed epoch
    epoch_losses: list[float] = field(default_factory=list)  # the current epoch's step losses
    total_steps: int | None = None  # the run's step budget (None: by time only); recomputed on every start


@dataclass
class FitHooks:
    """What a policy does around the loop. Every hook is optional.

    Attributes:
        on_step: after every step, on rank 0 only.
        should_stop: polled after every step on every rank; any rank's True stops all of them.
        validate: the validation score of the current weights (called on every rank after the
            BatchNorm sync; rank 0's score is used by all). None: no validation.
        is_better: ``is_better(new, best)``: whether ``new`` replaces the best score (default: higher).
        on_best: after a new best score, on every rank (write files on rank 0 only).
        on_epoch_end: ``on_epoch_end(state, record, last)`` after every completed epoch on every
            rank, before the record (``{"epoch", "loss", "lr", "elapsed_s"}`` and the score under
            ``FitConfig.metric``) joins the history; it may add fields. Ranks wait for each other
            afterwards, so rank-0-only work (an evaluation, a checkpoint) is safe here.
        load_best: the best weights of a resumed run whose state file lacks them (files written
            before this loop kept them only in the trainer's checkpoint).
        train_mode: puts the model in training mode at the start and after every epoch (default
            ``model.train()``; fine-tuning keeps BatchNorm in eval mode).
    """

    on_step: Callable[[Step], None] | None = None
    should_stop: Callable[[], bool] | None = None
    validate: Callable[[], float] | None = None
    is_better: Callable[[float, float], bool] = operator.gt
    on_best: Callable[[FitState], None] | None = None
    on_epoch_end: Callable[[FitState, dict[str, Any], bool], None] | None = None
    load_best: Callable[[], dict[str, Tensor]] | None = None
    train_mode: Callable[[nn.Module], None] = nn.Module.train


@dataclass
class FitResult:
    state: FitState  # the final counters and history
    world_size: int = 1

    @property
    def losses(self) -> list[float]:
        """Mean step loss of every epoch (None for an epoch without steps)."""
        return [h["loss"] for h in self.state.history]


# ----------------------------------------------------------------------------------------------
# The loop


def _agree_max(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise maximum over ranks (elapsed time, stop flags), so every rank decides alike."""
    if info.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def _agree_rank0(value: float, info: DistInfo) -> float:
    """Rank 0's value on every rank (a validation score computed on each)."""
    if info.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


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


def _barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


# Types of the state file's entries that the loop reads back (others are the policy's extra_state).
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "model": (dict,), "optimizer": (dict,), "scaler": (dict,), "rng": (dict,), "best_model": (dict, type(None)),
    "epoch": (int,), "step": (int,), "batch": (int,), "best_epoch": (int,), "elapsed": (int, float),
    "history": (list,), "epoch_losses": (list,), "best_score": (int, float, type(None)),
    "best_dice": (int, float, type(None)), "best_val_loss": (int, float, type(None)),
}


def _read_state(path: Path, state_check: dict[str, Any]) -> dict[str, Any]:
    """The resume state in ``path``, read with ``weights_only=True`` and checked before any of it is applied.

    Raises:
        CheckpointError: one line naming the file: truncated or corrupt, pickled objects other than
            tensors and plain containers (refused, nothing executed), not a state dict of this loop
            (wrong type or mistyped entries), or saved for a different run (``state_check``).
    """
    from braunet.model.official import read_checkpoint_file

    saved = read_checkpoint_file(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict) or "optimizer" not in saved:
        got = f"a {type(saved).__name__}" if not isinstance(saved, dict) else f"keys {sorted(map(str, saved))[:6]}"
        raise CheckpointError(f"{path}: not a training state file (expected model and optimizer states, got {got})")
    for key, types in _STATE_TYPES.items():
        value = saved.get(key)
        if key in saved and (not isinstance(value, types) or isinstance(value, bool)):
            raise CheckpointError(f"{path}: not a training state file ({key} is a {type(value).__name__})")
    if not all(isinstance(v, Tensor) for v in saved["model"].values()):
        raise CheckpointError(f"{path}: not a training state file (the model state holds non-tensors)")
    if not all(isinstance(h, dict) for h in saved.get("history", [])) or not all(
        isinstance(v, (int, float)) for v in saved.get("epoch_losses", [])
    ):
        raise CheckpointError(f"{path}: not a training state file (history or epoch losses of the wrong type)")
    # reason: compare types first; a tensor where a config dict was saved must not reach `!=`
    differ = sorted(k for k, v in state_check.items() if type(saved.get(k)) is not type(v) or saved.get(k) != v)
    if differ:
        raise CheckpointError(f"{path}: saved for a different {', '.join(differ)}; cannot resume")
    return saved


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    if "cpu" in state:
        torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _copy_weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _EpochBatches:
    """The index batches of every epoch: shuffled by ``(seed, epoch)``, sharded under DDP."""

    def __init__(self, n: int, config: FitConfig, info: DistInfo) -> None:
        self.sampler: Any
        if info.world_size > 1:
            self.sampler = torch.utils.data.DistributedSampler(
                range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed
            )
        else:
            self.sampler = EpochShuffle(n, config.seed)
        per_rank = math.ceil(n / info.world_size)
        # reason: a 1-item last batch gives noisy BatchNorm statistics, but a rank's only batch stays
        self.drop_last = config.drop_last and per_rank > config.batch_size
        self.batch_size = config.batch_size

    def __call__(self, epoch: int) -> list[list[int]]:
        self.sampler.set_epoch(epoch)
        order = list(self.sampler)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches


def fit(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    dataset: torch.utils.data.Dataset,
    *,
    loss: Callable[[Tensor, Batch], Tensor],
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    lr: Callable[[Step], float],
    config: FitConfig,
    hooks: FitHooks | None = None,
    info: DistInfo | None = None,
    batches: Callable[[int], list[list[int]]] | None = None,
    state_check: dict[str, Any] | None = None,
    extra_state: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``params`` of ``model`` on ``dataset``; see the module docstring for what the loop does.

    Args:
        model: on ``info.device`` (or on its own device when ``info`` is None); trained in place.
            It ends in eval mode with the best (``restore_best``) or the last weights.
        params: the parameters to train; every other parameter is frozen (``requires_grad`` False).
        dataset: items are tuples of tensors whose first is the input ``x`` (C, S, S); it gets
            ``set_epoch(epoch)`` before every epoch if it has that method.
        loss: ``loss(logits (B, K, S, S) float32, batch) -> scalar``; ``batch`` is the collated
            tuple, on the device.
        optimizer: builds the optimizer from the trained parameters.
        lr: the learning rate of the next step (set on every parameter group before it).
        config: budgets, batch size, AMP, state file; see :class:`FitConfig`.
        hooks: validation, keep-best rule, progress and cancellation; see :class:`FitHooks`.
        info: from :func:`setup_distributed` (DDP when ``world_size > 1``); None: one process.
        batches: ``batches(epoch)`` -> the index lists of that epoch's steps, instead of the
            shuffled, sharded epochs (fine-tuning draws one batch per "epoch").
        state_check: values written to the state file that a resumed run must match
            (e.g. the model config); a mismatch raises CheckpointError.
        extra_state: the policy's own numbers and lists, saved in the state file and updated in
            place from it on resume.

    Returns:
        :class:`FitResult` with the final :class:`FitState`.

    Raises:
        Cancelled: ``should_stop()`` returned True (after saving the state, if there is a file).
        CheckpointError: the state file belongs to another run (``state_check``).
    """
    hooks = hooks or FitHooks()
    info = info or DistInfo(device=next(model.parameters()).device)
    state_check, extra_state = state_check or {}, extra_state if extra_state is not None else {}
    device = info.device
    trained = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    params = list(params)
    opt = optimizer(params)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = FitState()
    best_weights: dict[str, Tensor] | None = None
    path = config.state_file

    if config.resume and path is not None and path.is_file():
        saved = _read_state(path, state_check)
        try:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            if use_amp and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            if saved.get("rng"):
                _set_rng_state(saved["rng"], device)
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{path}: the saved state does not fit this run's model or optimizer ({detail}); "
                                  "cannot resume") from None  # fmt: skip
        for key in ("epoch", "step", "batch", "elapsed", "best_epoch", "history", "epoch_losses"):
            if key in saved:
                setattr(state, key, saved[key])
        # reason: files written before this loop named the best score best_dice (trainer) or best_val_loss (recipes)
        state.best_score = next((saved[k] for k in ("best_score", "best_dice", "best_val_loss") if k in saved), None)
        best_weights = saved.get("best_model") or None
        if best_weights is None and state.best_epoch >= 0 and config.restore_best and hooks.load_best:
            best_weights = hooks.load_best()
        extra_state.update({k: saved[k] for k in extra_state if k in saved})
        if not config.resume_mid_epoch:
            state.batch, state.epoch_losses = 0, []

    net: nn.Module = model
    if info.world_size > 1:
        ids = [info.local_rank] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    epoch_batches = batches or _EpochBatches(len(dataset), config, info)
    total_steps = len(epoch_batches(0)) * config.epochs if config.epochs is not None else None
    if config.max_steps is not None:
        total_steps = config.max_steps if total_steps is None else min(total_steps, config.max_steps)
    state.total_steps = total_steps
    started = (config.started_at if config.started_at is not None else time.perf_counter()) - state.elapsed
    state.elapsed = time.perf_counter() - started

    def save_state() -> None:
        if path is None or not info.is_main:
            return
        from braunet._atomic import atomic_path

        payload = {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {}, "rng": _rng_state(device),
            **({"best_model": best_weights} if best_weights and config.restore_best else {}),
            **state_check, **extra_state, **asdict(state),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    last_save = time.perf_counter()
    hooks.train_mode(model)
    last = False
    lr_now = None
    while not last and (config.epochs is None or state.epoch < config.epochs):
        epoch = state.epoch
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        todo = epoch_batches(epoch)[state.batch :]
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=todo, num_workers=config.num_workers, pin_memory=device.type == "cuda",
            # reason: the loader draws its workers' seed from this, not from the global RNG that
            # dropout and drop-path use, so a resumed epoch sees the same global RNG stream
            generator=torch.Generator().manual_seed(config.seed + epoch),
        )
        stop = False
        for batch in loader:
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
            lr_now = lr(Step(epoch, state.step, total_steps, state.elapsed))
            for group in opt.param_groups:
                group["lr"] = lr_now
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                logits = net(batch[0])
            value = loss(logits.float(), batch)
            scaler.scale(value).backward()
            if config.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(opt)
            scaler.update()
            state.step += 1
            state.batch += 1
            state.epoch_losses.append(float(value.detach()))
            local_stop = bool(hooks.should_stop and hooks.should_stop())
            elapsed, stop_flag = _agree_max([time.perf_counter() - started, float(local_stop)], info)
            state.elapsed = elapsed
            if hooks.on_step and info.is_main:
                loss_now = state.epoch_losses[-1]
                hooks.on_step(Step(epoch, state.step, total_steps, elapsed, loss_now, lr_now, state.best_score))
            if stop_flag:
                save_state()
                _barrier(info)
                where = f"epoch {epoch}, step {state.step}"
                resume = f"; resume it with resume=True from {path}" if path is not None else ""
                raise Cancelled(f"training stopped in {where}{resume}")
            if (config.max_time_s is not None and elapsed >= config.max_time_s) or (
                config.max_steps is not None and state.step >= config.max_steps
            ):
                stop = True
                break

        state.epoch, state.batch = epoch + 1, 0
        last = stop or (config.epochs is not None and state.epoch >= config.epochs)
        _sync_buffers(model, info)
        losses, state.epoch_losses = state.epoch_losses, []
        record: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                                  "lr": lr_now, "elapsed_s": round(state.elapsed, 1)}
        if hooks.validate is not None and (state.epoch % config.val_every == 0 or last):
            score = _agree_rank0(float(hooks.validate()), info)
            record[config.metric] = score
            if state.best_score is None or hooks.is_better(score, state.best_score):
                state.best_score, state.best_epoch = score, epoch
                if config.restore_best:
                    best_weights = _copy_weights(model)
                if hooks.on_best:
                    hooks.on_best(state)
        if hooks.on_epoch_end:
            hooks.on_epoch_end(state, record, last)
        _barrier(info)
        state.history.append(record)
        hooks.train_mode(model)
        if time.perf_counter() - last_save >= config.state_every_s or last:
            save_state()
            last_save = time.perf_counter()

    if config.restore_best and best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    return FitResult(state=state, world_size=info.world_size)
