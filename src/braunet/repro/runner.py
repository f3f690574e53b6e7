"""Run a recipe (:mod:`braunet.repro.recipes`): the official training protocol, evaluations and outputs.

A recipe compiles into the arguments of the one training loop, :func:`braunet.train.loop.fit`
(which brings ``torchrun``/DDP, AMP, resume and cancellation): the official optimizer, the
per-iteration polynomial decay set after each optimizer step (Synapse) or a cosine schedule stepped
per epoch (ISIC / CVC), the recipe's loss and augmentation, no warm-up or gradient clipping, the
official evaluation schedule and model selection (the last epoch; ISIC / CVC also keep the lowest
validation loss). An interrupted epoch is re-run from its first batch on resume.

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

from braunet.errors import InputError
from braunet.model import BRAUNet, ModelCard, save_checkpoint
from braunet.repro.recipes import TrainingProtocol
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

__all__ = ["RecipeProgress", "RecipeResult", "learning_rate", "make_recipe_loss", "parse_data_spec", "run_recipe"]


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


def learning_rate(recipe: TrainingProtocol, step: int, epoch: int, max_steps: int) -> float:
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


def make_recipe_loss(recipe: TrainingProtocol) -> nn.Module:
    from braunet.train.losses import DiceCELoss, SoftDiceLoss

    loss = recipe["loss"]
    if loss["name"] == "dice_ce":
        return DiceCELoss(float(loss["ce_weight"]), float(loss["dice_weight"]))
    return SoftDiceLoss(float(loss.get("smooth", 1.0)))


def _optimizer(recipe: TrainingProtocol, params: list[nn.Parameter]) -> torch.optim.Optimizer:
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

    def __init__(self, recipe: TrainingProtocol, root: Path, class_names: list[str]) -> None:
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
        self, recipe: TrainingProtocol, images: Sequence[str], labels: Sequence[str], groups_csv: str | None,
        preprocessing: dict[str, Any], img_size: int,
    ) -> None:
        from braunet.io import file_stem
        from braunet.repro.splits import official_split
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


def _card(recipe: TrainingProtocol, config, name: str, training: dict[str, Any]) -> ModelCard:
    from braunet.classes import SYNAPSE8_CLASSES, SYNAPSE8_COLORS

    names = list(recipe["data.class_names"])
    return ModelCard(
        name=name, config=config, class_names=names, preprocessing=recipe.preprocessing(),
        class_colors=list(SYNAPSE8_COLORS) if names == list(SYNAPSE8_CLASSES) else [],
        description=f"Trained with the {recipe.name!r} recipe: {recipe.get('description', '')}",
        training=training,
    )


def run_recipe(
    recipe: TrainingProtocol,
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
    criterion = make_recipe_loss(recipe)
    epochs = int(recipe["epochs"])
    batch = int(recipe["batch_size"])
    saved = {"evaluations": [], "init_report": init_report}  # resumed runs take these from the state file
    card_name = name or out.resolve().name

    def card_now(state: FitState, metrics: dict[str, Any] | None = None) -> ModelCard:
        card = _card(recipe, config, card_name, {
            "recipe": recipe.name, "recipe_file": Path(recipe.source).name, "overrides": recipe.get("overrides", {}),
            "settings": {k: recipe.data[k] for k in ("optimizer", "schedule", "batch_size", "epochs", "loss",
                                                     "augmentation", "evaluation", "seed") if k in recipe.data},
            "deviations": [d["topic"] for d in recipe["deviations"]],
            "data": task.description, "init_encoder": saved["init_report"] or "random init",
            "hardware": describe_hardware(info.device), "world_size": info.world_size,
            **({"command": command} if command else {}),
            "epochs_run": state.epoch, "steps": state.step, "train_wall_s": round(state.elapsed, 1),
            "history": state.history, "evaluations": saved["evaluations"],
        })
        card.metrics = metrics or {}
        return card

    def on_step(at: Step) -> None:
        if progress:
            progress(RecipeProgress(at.epoch, epochs, at.step, at.total_steps or 0, at.loss or 0.0, at.lr or 0.0,
                                    at.elapsed_s))

    def on_best(state: FitState) -> None:
        """ISIC / CVC: the lowest validation loss so far goes to OUT/best_val_loss/."""
        if state.best_epoch > 0 and info.is_main:  # reason: the official script saves snapshots from epoch 1 on
            save_checkpoint(model, card_now(state, {"val_loss": state.best_score, "epoch": state.best_epoch}),
                            out / "best_val_loss")

    evaluated: dict[str, Any] = {}  # the latest official test (rank 0)

    def on_epoch_end(state: FitState, record: dict[str, Any], last: bool) -> None:
        """Synapse: the official test on rank 0 when the schedule says so; its model is saved beside OUT."""
        epoch = record["epoch"]
        if isinstance(task, _BinaryTask) or not task.due(epoch, epochs) or not info.is_main:
            return
        result = evaluated["last"] = task.evaluate(model)
        record.update(task.headline(result))
        saved["evaluations"].append({"epoch": epoch, **task.headline(result)})
        if recipe.get("evaluation.save_checkpoints", False):
            folder = out / "evaluations" / f"epoch_{epoch:03d}"
            save_checkpoint(model, card_now(state, {"official_test": result}), folder)
        if progress:
            progress(RecipeProgress(epoch, epochs, state.step, state.total_steps or 0, record["loss"] or float("nan"),
                                    record["lr"] or 0.0, state.elapsed, result))

    binary = isinstance(task, _BinaryTask)
    val_batch = max(1, batch // int(recipe.get("evaluation.val_batch_divisor", 4)))
    hooks = FitHooks(
        on_step=on_step, should_stop=should_stop, on_best=on_best, on_epoch_end=on_epoch_end,
        validate=(lambda: task.validation_loss(model, criterion, val_batch)) if binary else None,
        is_better=lambda new, best: new <= best,
    )
    fit_config = FitConfig(
        epochs=epochs, batch_size=batch, amp=bool(recipe.get("amp", False) if amp is None else amp), seed=seed,
        drop_last=bool(recipe.get("drop_last", False)), num_workers=num_workers, metric="val_loss",
        restore_best=False, state_file=out / STATE_FILE, resume=resume,
        resume_mid_epoch=False,  # reason: an interrupted epoch is re-run whole, as the official loop would
    )
    fit_result = fit(
        model, used_parameters(model), task.dataset(config.img_size, seed),
        loss=lambda logits, items: criterion(logits, items[1]),
        optimizer=lambda params: _optimizer(recipe, params),
        lr=lambda at: learning_rate(recipe, at.step, at.epoch, at.total_steps or 1),
        config=fit_config, hooks=hooks, info=info,
        state_check={"model_config": config.to_dict(), "recipe": recipe.name}, extra_state=saved,
    )
    state = fit_result.state
    test = None
    metrics: dict[str, Any] = {}
    if binary:
        if info.is_main:
            test = task.test(model, card_now(state))
            if test is not None:
                metrics = {"official_test": test}
    elif "last" in evaluated:
        test = evaluated["last"]
        metrics = {"official_test": test}
    final_card = card_now(state, metrics)
    if info.is_main:
        save_checkpoint(model, final_card, out)
    if info.world_size > 1:
        dist.barrier()
    return RecipeResult(
        model=model, card=final_card, out_dir=out, epochs_run=state.epoch, steps=state.step,
        wall_s=time.perf_counter() - start_time, history=state.history, evaluations=saved["evaluations"],
        test=test, init_report=saved["init_report"], world_size=info.world_size,
    )
