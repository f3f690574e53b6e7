"""Run a recipe (:mod:`braunet.repro.recipes`): the official training loop, evaluations and outputs.

The loop is the official one, step for step: per-iteration polynomial decay set after each
optimizer step (Synapse) or a cosine schedule stepped per epoch (ISIC / CVC), the recipe's loss and
augmentation, the official evaluation schedule. It reuses the training backend's building blocks
(:func:`braunet.train.trainer.setup_distributed` for ``torchrun``/DDP, the losses, the data
readers, checkpoints) but not its loop, whose warm-up, gradient clipping, AdamW and best-by-Dice
selection are our defaults, not the paper's.

Two tasks:

* ``transunet`` data (Synapse): training slices of ``train.txt`` augmented at their own size and
  zoomed to the network (:class:`braunet.repro.transunet.TransUNetSlices`); the test volumes are
  scored with the official protocol (:func:`braunet.repro.official_eval.evaluate_transunet`) after
  every ``evaluation.every_epochs``-th epoch in the second half and after the last one.
* ``folders`` data (ISIC / CVC): image/mask folders split as the official scripts
  (:func:`braunet.repro.splits.official_split`); validation loss every epoch (the lowest is saved
  to ``OUT/best_val_loss/``), the official test metrics on the test share at the end.

Output folder ``OUT``: the last epoch's model (``model.safetensors`` + ``card.json``, whose
``training`` holds the recipe, deviations, history and hardware and whose ``metrics`` the last
evaluation), ``train_state.pt`` for ``resume=True``, ``evaluations/epoch_<e>/`` (Synapse) or
``best_val_loss/`` (ISIC / CVC).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from braunet.errors import Cancelled, CheckpointError, InputError
from braunet.model import BRAUNet, ModelCard, save_checkpoint
from braunet.repro.recipes import Recipe
from braunet.train.trainer import EpochShuffle

__all__ = ["RecipeProgress", "RecipeResult", "learning_rate", "make_recipe_loss", "parse_data_spec", "run_recipe"]

STATE_FILE = "train_state.pt"


@dataclass
class RecipeProgress:
    """Reported after every optimizer step on rank 0 (``evaluation`` after an evaluation)."""

    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    lr: float
    elapsed_s: float
    evaluation: dict[str, Any] | None = None


@dataclass
class RecipeResult:
    model: BRAUNet  # the last epoch's weights, eval mode
    card: ModelCard
    out_dir: Path
    epochs_run: int
    steps: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, Any] | None = None  # final official + default metrics
    init_report: dict[str, Any] | None = None
    world_size: int = 1


# ----------------------------------------------------------------------------------------------
# Schedule, loss, optimizer


def learning_rate(recipe: Recipe, step: int, epoch: int, max_steps: int) -> float:
    """The learning rate used for optimizer step ``step`` (0-based) in epoch ``epoch``.

    ``poly`` (official Synapse): the official loop sets ``lr * (1 - i / max) ** 0.9`` *after* step
    ``i``, so step 0 runs at ``lr`` and step ``s >= 1`` at ``lr * (1 - (s - 1) / max) ** power``.
    ``cosine`` (official ISIC / CVC): ``CosineAnnealingLR(T_max, eta_min)`` stepped once per epoch,
    ``eta_min + (lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.
    """
    base = float(recipe["optimizer.lr"])
    schedule = recipe["schedule"]
    if schedule["name"] == "poly":
        done = max(step - 1, 0) / max(max_steps, 1)
        return base * max(0.0, 1.0 - done) ** float(schedule.get("power", 0.9))
    t_max = float(schedule.get("t_max_epochs") or recipe["epochs"])
    eta_min = float(schedule.get("eta_min", 0.0))
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2


def make_recipe_loss(recipe: Recipe) -> nn.Module:
    from braunet.train.losses import DiceCELoss, SoftDiceLoss

    loss = recipe["loss"]
    if loss["name"] == "dice_ce":
        return DiceCELoss(float(loss["ce_weight"]), float(loss["dice_weight"]))
    return SoftDiceLoss(float(loss.get("smooth", 1.0)))


def _optimizer(recipe: Recipe, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    opt = recipe["optimizer"]
    if opt["name"] == "sgd":
        return torch.optim.SGD(params, lr=opt["lr"], momentum=opt.get("momentum", 0.0),
                               weight_decay=opt.get("weight_decay", 0.0))
    return torch.optim.Adam(params, lr=opt["lr"], weight_decay=opt.get("weight_decay", 0.0))


def parse_data_spec(spec: str) -> tuple[str, Path]:
    """``"transunet:PATH"`` -> ("transunet", PATH). Raises InputError for other forms."""
    kind, sep, path = spec.partition(":")
    if not sep or kind != "transunet" or not path:
        raise InputError(f"--data {spec!r}: expected transunet:PATH (a TransUNet-format Synapse folder)")
    return kind, Path(path).expanduser()


# ----------------------------------------------------------------------------------------------
# Tasks: data, evaluation schedule, final test


class _SynapseTask:
    """TransUNet folder: augmented training slices; official test every N epochs in the 2nd half."""

    def __init__(self, recipe: Recipe, root: Path, class_names: list[str]) -> None:
        from braunet.repro.transunet import TransUNetFolder

        self.recipe, self.folder, self.class_names = recipe, TransUNetFolder(root), class_names
        if not self.folder.train_names:
            raise InputError(f"{root}: train.txt lists no training slices")
        self.description = {"format": "transunet", "root": str(root), "n_train_slices": len(self.folder.train_names),
                            "test_volumes": list(self.folder.test_names)}

    def dataset(self, img_size: int, seed: int):
        from braunet.repro.augment import missformer_augment, transunet_augment
        from braunet.repro.transunet import TransUNetSlices

        name = self.recipe["augmentation.name"]
        choices = {"missformer": missformer_augment, "transunet": transunet_augment, "none": None}
        if name not in choices:
            raise InputError(f"{self.recipe.source}: augmentation {name!r} does not apply to CT slices")
        augment = choices[name]
        return _Pairs(TransUNetSlices(self.folder, img_size, augment, seed=seed))

    def due(self, epoch: int, epochs: int) -> bool:
        ev = self.recipe["evaluation"]
        every = int(ev.get("every_epochs", 20))
        start = int(epochs * float(ev.get("start_fraction", 0.5)))
        return bool(self.folder.test_names) and (
            (epoch >= start and (epoch + 1) % every == 0) or epoch == epochs - 1
        )

    def evaluate(self, model: BRAUNet) -> dict[str, Any]:
        from braunet.repro.official_eval import evaluate_transunet

        report = evaluate_transunet(model, self.folder, self.class_names)
        return report.to_json_dict()

    @staticmethod
    def headline(result: dict[str, Any]) -> dict[str, float]:
        official = result["official"]
        out = {"official_dice": official["mean_dice"], "official_hd95_voxels": official["mean_hd95_voxels"]}
        if result.get("ours"):
            out.update(dice=result["ours"]["mean_dice"], hd95_mm=result["ours"]["mean_hd95_mm"])
        return out


class _Pairs(torch.utils.data.Dataset):
    """Adapter giving ``(x, y)`` items and ``set_epoch``."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        return self.inner[index][:2]


class _BinaryAugmented(torch.utils.data.Dataset):
    """Prepared (resized, normalised) images with the official ISIC / CVC augmentation per item."""

    def __init__(self, data, params: dict[str, Any], fill: np.ndarray, seed: int, enabled: bool) -> None:
        self.data, self.params, self.fill, self.seed, self.enabled, self.epoch = data, params, fill, seed, enabled, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from braunet.repro.augment import albumentations_isic_augment

        x, y = self.data.x[index], self.data.y[index]
        if not self.enabled:
            return x, y
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image, label = albumentations_isic_augment(
            x.numpy().transpose(1, 2, 0), y.numpy(), rng, self.params, fill=self.fill
        )
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(label)


class _BinaryTask:
    """Image/mask folders: official split, validation loss per epoch, official test at the end."""

    def __init__(
        self, recipe: Recipe, images: Sequence[str], labels: Sequence[str], groups_csv: str | None,
        preprocessing: dict[str, Any], img_size: int,
    ) -> None:
        from braunet.repro.splits import official_split
        from braunet.io import file_stem
        from braunet.train.pairs import collect_pairs
        from braunet.train.slices import load_pairs

        self.recipe, self.preprocessing = recipe, preprocessing
        pairs = collect_pairs(images, labels)
        ids = [file_stem(p[0]) for p in pairs]
        split = recipe["split"]
        groups_file = groups_csv or split.get("groups")
        groups = _read_groups(groups_file, ids) if groups_file else None
        train, val, test = official_split(
            ids, groups, test_fraction=float(split.get("test_fraction", 0.1)), seed=int(split.get("seed", 42)),
            folds=int(split.get("folds", 5)), val_fold=int(split.get("val_fold", 0)),
        )
        self.train_data = _prepare_in_chunks([pairs[i] for i in train], preprocessing, img_size)
        self.val_data = _prepare_in_chunks([pairs[i] for i in val], preprocessing, img_size)
        # reason: only the test share is kept at native resolution (for our full-resolution metrics)
        self.test_slices = load_pairs([pairs[i] for i in test], num_classes=1) if test else None
        self.description = {
            "format": "folders", "images": [str(p) for p in images], "labels": [str(p) for p in labels],
            "grouping": "groups CSV" if groups else "image id (official)",
            "train": [ids[i] for i in train], "validation": [ids[i] for i in val], "test": [ids[i] for i in test],
        }

    def dataset(self, img_size: int, seed: int):
        mean = np.asarray(self.preprocessing["mean"], dtype=np.float32)
        std = np.asarray(self.preprocessing["std"], dtype=np.float32)
        params = self.recipe["augmentation"]
        enabled = params["name"] == "albumentations_isic"
        if params["name"] not in ("albumentations_isic", "none"):
            raise InputError(f"{self.recipe.source}: augmentation {params['name']!r} does not apply to RGB images")
        return _BinaryAugmented(self.train_data, params, -mean / std, seed, enabled)

    @torch.no_grad()
    def validation_loss(self, model: BRAUNet, criterion: nn.Module, batch: int) -> float:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            losses = [
                float(criterion(model(self.val_data.x[i : i + batch].to(device)).float(),
                                self.val_data.y[i : i + batch].to(device)))
                for i in range(0, len(self.val_data), batch)
            ]
        finally:
            model.train(was_training)
        return float(np.mean(losses))

    def test(self, model: BRAUNet, card: ModelCard) -> dict[str, Any] | None:
        from braunet.repro.official_eval import evaluate_binary_official

        if self.test_slices is None:
            return None
        return evaluate_binary_official(model, card, self.test_slices).to_json_dict()


def _prepare_in_chunks(pairs: Sequence[tuple[Path, Path]], preprocessing: dict[str, Any], img_size: int, chunk: int = 64):
    """Read and preprocess image/mask pairs a chunk at a time, so native-size images never pile up."""
    from braunet.train.datasets import PreparedSlices, prepare
    from braunet.train.slices import load_pairs

    parts = [prepare(load_pairs(pairs[i : i + chunk], num_classes=1), preprocessing, img_size, 1)
             for i in range(0, len(pairs), chunk)]
    if not parts:
        raise InputError("the split left no images for training or validation; add images or change split")
    return PreparedSlices(
        x=torch.cat([p.x for p in parts]), y=torch.cat([p.y for p in parts]), known=torch.cat([p.known for p in parts]),
        groups=[g for p in parts for g in p.groups], names=[n for p in parts for n in p.names],
    )


def _read_groups(path: str, ids: Sequence[str]) -> list[str]:
    """CSV with columns image,group (header optional); ids are file stems or names."""
    import csv

    from braunet.io import file_stem

    mapping: dict[str, str] = {}
    try:
        with open(path, newline="") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[0].strip() and row[0].strip().lower() not in ("image", "image_id", "id"):
                    mapping[file_stem(row[0].strip())] = row[1].strip()
    except OSError as error:
        raise InputError(f"{path}: cannot read the groups CSV ({error})") from None
    missing = [i for i in ids if i not in mapping]
    if missing:
        raise InputError(f"{path}: no group for {len(missing)} image(s), e.g. {missing[:3]}")
    return [mapping[i] for i in ids]


# ----------------------------------------------------------------------------------------------
# The loop


def _card(recipe: Recipe, config, name: str, training: dict[str, Any]) -> ModelCard:
    from braunet.classes import SYNAPSE8_CLASSES, SYNAPSE8_COLORS

    names = list(recipe["data.class_names"])
    return ModelCard(
        name=name, config=config, class_names=names, preprocessing=recipe.preprocessing(),
        class_colors=list(SYNAPSE8_COLORS) if names == list(SYNAPSE8_CLASSES) else [],
        description=f"Trained with the {recipe.name!r} recipe: {recipe.get('description', '')}",
        training=training,
    )


def _save_state(path: Path, payload: dict[str, Any]) -> None:
    from braunet._atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def run_recipe(
    recipe: Recipe,
    out_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    images: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    groups: str | None = None,
    init_encoder: str | os.PathLike | dict | None = None,
    resume: bool = False,
    device: str | None = None,
    amp: bool | None = None,
    num_workers: int = 0,
    name: str | None = None,
    command: str | None = None,
    progress: Callable[[RecipeProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RecipeResult:
    """Train a BRAU-Net++ with ``recipe`` and write ``out_dir`` (see the module docstring).

    Args:
        recipe: a loaded recipe (possibly with overrides).
        out_dir: output folder (created).
        data: a TransUNet folder (``transunet`` recipes).
        images, labels, groups: image and mask folders and an optional groups CSV (``folders`` recipes).
        init_encoder: BiFormer ImageNet checkpoint (path or loaded dict) for the encoder, as the
            official ``load_from()``; None starts from random init.
        resume: continue from ``out_dir/train_state.pt``.
        device: "cpu", "cuda", "cuda:N"; default CUDA when available (the LOCAL_RANK GPU under torchrun).
        amp: mixed precision on CUDA (default: the recipe's ``amp``).
        num_workers: DataLoader worker processes.
        progress: called after each step on rank 0.
        should_stop: polled after each step; True saves the state and raises :class:`Cancelled`.
    Raises:
        InputError, CheckpointError, Cancelled.
    """
    from braunet.train.trainer import describe_hardware, setup_distributed

    start_time = time.perf_counter()
    config = recipe.model_config()
    seed = int(recipe["seed"])
    torch.manual_seed(seed)
    model = BRAUNet(config)
    init_report = None
    if init_encoder is not None:
        from braunet.repro.biformer_init import init_encoder_from_biformer

        report = init_encoder_from_biformer(model, init_encoder)
        init_report = report.to_dict()

    if recipe["data.kind"] == "transunet":
        if data is None:
            raise InputError(f"recipe {recipe.name!r} trains on a TransUNet folder: give --data transunet:PATH")
        task: Any = _SynapseTask(recipe, Path(data).expanduser(), list(recipe["data.class_names"]))
    else:
        if not images or not labels:
            raise InputError(f"recipe {recipe.name!r} trains on image/mask folders: give --images and --labels")
        task = _BinaryTask(recipe, images, labels, groups, recipe.preprocessing(), config.img_size)

    info = setup_distributed(device)
    out = Path(out_dir).expanduser()
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if info.device.type == "cuda" and recipe.get("deterministic", False):
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    model = model.to(info.device)
    if not config.bottleneck_blocks:  # reason: never run; DDP would wait for their gradients
        for p in model.stages[3].parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(recipe, params)
    use_amp = info.device.type == "cuda" and (recipe.get("amp", False) if amp is None else amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = make_recipe_loss(recipe)

    dataset = task.dataset(config.img_size, seed)
    if info.world_size > 1:
        sampler: Any = torch.utils.data.DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=seed)
    else:
        sampler = EpochShuffle(len(dataset), seed)
    batch = int(recipe["batch_size"])
    drop_last = bool(recipe.get("drop_last", False)) and math.ceil(len(dataset) / info.world_size) > batch
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=num_workers,
                                         drop_last=drop_last, pin_memory=info.device.type == "cuda")
    epochs = int(recipe["epochs"])
    steps_per_epoch = len(loader)
    max_steps = epochs * steps_per_epoch

    state: dict[str, Any] = {"epoch": 0, "step": 0, "elapsed": 0.0, "history": [], "evaluations": [],
                             "best_val_loss": None}
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        saved = torch.load(state_path, map_location=info.device, weights_only=True)
        if saved.get("model_config") != config.to_dict() or saved.get("recipe") != recipe.name:
            raise CheckpointError(f"{state_path}: saved for another recipe or model; cannot resume")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if use_amp and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state.update({k: saved[k] for k in state})
        init_report = saved.get("init_report") or init_report

    net: nn.Module = model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)

    command_text = command
    training = {
        "recipe": recipe.name, "recipe_file": Path(recipe.source).name, "overrides": recipe.get("overrides", {}),
        "settings": {k: recipe.data[k] for k in ("optimizer", "schedule", "batch_size", "epochs", "loss",
                                                 "augmentation", "evaluation", "seed") if k in recipe.data},
        "deviations": [d["topic"] for d in recipe["deviations"]],
        "data": task.description, "init_encoder": init_report or "random init",
        "hardware": describe_hardware(info.device), "world_size": info.world_size,
        **({"command": command_text} if command_text else {}),
    }
    card_name = name or out.resolve().name

    def card_now(metrics: dict[str, Any] | None = None) -> ModelCard:
        card = _card(recipe, config, card_name, {
            **training, "epochs_run": state["epoch"], "steps": state["step"], "train_wall_s": round(state["elapsed"], 1),
            "history": state["history"], "evaluations": state["evaluations"],
        })
        card.metrics = metrics or {}
        return card

    def save_state() -> None:
        if info.is_main:
            _save_state(state_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if use_amp else {}, "model_config": config.to_dict(),
                "recipe": recipe.name, "init_report": init_report, **state,
            })

    def evaluate_main(epoch: int) -> dict[str, Any] | None:
        """Official test on rank 0 (the others wait); the evaluated model is saved beside OUT."""
        result = None
        if info.is_main:
            result = task.evaluate(model)
            record = {"epoch": epoch, **task.headline(result)}
            state["evaluations"].append(record)
            if recipe.get("evaluation.save_checkpoints", False):
                save_checkpoint(model, card_now({"official_test": result}), out / "evaluations" / f"epoch_{epoch:03d}")
        if info.world_size > 1:
            dist.barrier()
        return result

    last_result: dict[str, Any] | None = None
    start = time.perf_counter() - state["elapsed"]
    cancelled = False
    net.train()
    while state["epoch"] < epochs:
        epoch = state["epoch"]
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        losses = []
        for x, y in loader:
            x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
            lr = learning_rate(recipe, state["step"], epoch, max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=info.device.type, dtype=torch.float16, enabled=use_amp):
                logits = net(x)
            loss = criterion(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            losses.append(float(loss.detach()))
            state["elapsed"] = time.perf_counter() - start
            if progress and info.is_main:
                progress(RecipeProgress(epoch, epochs, state["step"], max_steps, losses[-1], lr, state["elapsed"]))
            stop = torch.tensor([float(bool(should_stop and should_stop()))], device=info.device)
            if info.world_size > 1:
                dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            if stop.item():
                cancelled = True
                break
        if cancelled:
            break
        record: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                                  "lr": lr if losses else None, "elapsed_s": round(state["elapsed"], 1)}
        if isinstance(task, _BinaryTask):
            val_loss = task.validation_loss(model, criterion, max(1, batch // int(recipe.get("evaluation.val_batch_divisor", 4))))
            record["val_loss"] = val_loss
            if state["best_val_loss"] is None or val_loss <= state["best_val_loss"]:
                state["best_val_loss"] = val_loss
                if epoch > 0 and info.is_main:  # reason: the official script saves snapshots from epoch 1 on
                    save_checkpoint(model, card_now({"val_loss": val_loss, "epoch": epoch}), out / "best_val_loss")
        elif task.due(epoch, epochs):
            last_result = evaluate_main(epoch)
            if last_result is not None:
                record.update(task.headline(last_result))
                if progress:
                    progress(RecipeProgress(epoch, epochs, state["step"], max_steps, record["loss"] or float("nan"),
                                            record["lr"] or 0.0, state["elapsed"], last_result))
        state["history"].append(record)
        state["epoch"] = epoch + 1
        net.train()
        save_state()
    if cancelled:
        save_state()
        if info.world_size > 1:
            dist.barrier()
        raise Cancelled(f"training stopped in epoch {state['epoch']}; continue with resume in {out}")

    model.eval()
    test = None
    metrics: dict[str, Any] = {}
    if isinstance(task, _BinaryTask):
        if info.is_main:
            test = task.test(model, card_now())
            if test is not None:
                metrics = {"official_test": test}
    elif last_result is not None:
        test = last_result
        metrics = {"official_test": last_result}
    final_card = card_now(metrics)
    if info.is_main:
        save_checkpoint(model, final_card, out)
    if info.world_size > 1:
        dist.barrier()
    return RecipeResult(
        model=model, card=final_card, out_dir=out, epochs_run=state["epoch"], steps=state["step"],
        wall_s=time.perf_counter() - start_time, history=state["history"], evaluations=state["evaluations"],
        test=test, init_report=init_report, world_size=info.world_size,
    )
