"""Train a model from files or from slice sets: what ``braunet train``, ``scripts/train_bundled.py``
and a GUI share, so each of them only gathers its inputs and shows the result.

* :func:`train_on_slices`: slice sets and a card -> tensors at the network's size, a seeded fresh
  (or given) model, :func:`braunet.train.trainer.train` -> the best model in ``out_dir``.
* :func:`train_on_files`: image/label folders or file lists and a preset -> pairs, a validation
  split, a card -> :func:`train_on_slices`.

Example::

    from braunet.train.run import train_on_files
    from braunet.train.trainer import TrainConfig
    result = train_on_files(["imgs/"], ["masks/"], "runs/polyp", preset="cpu-rgb", num_classes=1,
                            config=TrainConfig(epochs=20))
    result.best_dice, result.card.training["split"]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from braunet.classes import class_names_for
from braunet.errors import InputError
from braunet.io import IMAGE_SUFFIXES  # photographs: the rgb recipe by default
from braunet.model import BRAUNet, ModelCard
from braunet.train.trainer import TrainConfig, TrainProgress, TrainResult, train

if TYPE_CHECKING:
    from braunet.train.slices import SliceSet

__all__ = ["train_on_files", "train_on_slices"]

def train_on_slices(
    card: ModelCard,
    train_slices: SliceSet,
    val_slices: SliceSet | None,
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    model: BRAUNet | None = None,
    resume: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = "auto",
) -> TrainResult:
    """Prepare ``train_slices`` / ``val_slices`` (SliceSets) with the card's recipe and train.

    Args:
        card: the new model's card (architecture, class names, preprocessing, provenance).
        train_slices, val_slices: :class:`braunet.train.slices.SliceSet` at the images' own size;
            ``val_slices`` None: no validation (the last weights are kept).
        out_dir, config, resume, progress, should_stop: as :func:`braunet.train.trainer.train`.
        model: start from these weights (same architecture as the card); default: a fresh model
            initialised from ``config.seed``.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps" (under torchrun each process takes its
            LOCAL_RANK GPU).
    """
    import torch

    from braunet.infer.device import resolve_device
    from braunet.train.datasets import prepare

    config = config or TrainConfig()
    resolved = resolve_device(device)
    if model is None:
        torch.manual_seed(config.seed)
        model = BRAUNet(card.config)
    size, classes = card.config.img_size, card.config.num_classes
    train_data = prepare(train_slices, card.preprocessing, size, classes)
    val_data = prepare(val_slices, card.preprocessing, size, classes) if val_slices is not None else None
    return train(model, card, train_data, val_data, out_dir, config, resume=resume, progress=progress,
                 should_stop=should_stop, device=str(resolved))


def train_on_files(
    images: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    preset: str,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    preprocessing: str | None = None,
    val_images: Sequence[str | os.PathLike] | None = None,
    val_labels: Sequence[str | os.PathLike] | None = None,
    val_fraction: float = 0.2,
    name: str | None = None,
    init: str | None = None,
    config: TrainConfig | None = None,
    command: str | None = None,
    resume: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = "auto",
) -> TrainResult:
    """Train ``preset`` on labelled files; see ``braunet train --help`` for the layout.

    Args:
        images, labels: one folder each (matched by file name without suffix) or equally long
            lists of files paired in order; NIfTI/DICOM volumes are used as axial slices.
        out_dir: output folder: the best checkpoint by validation Dice and ``train_state.pt``.
        preset: architecture preset (:func:`braunet.model.get_preset`).
        num_classes: output classes incl. background (1 = binary); default: the preset's.
        class_names: background first; default: :func:`braunet.classes.class_names_for`.
        preprocessing: "ct" or "rgb"; default: rgb for photographs, ct for volumes.
        val_images, val_labels: validation files; default: a split of the training files (whole
            cases when there are at least 5, otherwise the top slab of each volume with a gap).
        val_fraction: the share held out when splitting.
        name: the card's model name (default: ``out_dir``'s folder name).
        init: a model reference (:func:`braunet.zoo.load_model`) to start from instead of random weights.
        command: the command line, recorded in the card.
        config, resume, progress, should_stop, device: as :func:`train_on_slices`.

    Returns:
        :class:`braunet.train.trainer.TrainResult`; ``card.training`` records the split and data.

    Raises:
        InputError: unknown preset, unpaired or unreadable files, an ``init`` model of another
            architecture, wrong class names.
    """
    from braunet.infer.preprocess import official_preprocessing
    from braunet.model import get_preset
    from braunet.train.pairs import collect_pairs
    from braunet.train.slices import load_pairs, split_validation

    try:
        architecture = get_preset(preset)
    except ValueError as error:
        raise InputError(str(error)) from None
    num_classes = num_classes or architecture.num_classes
    architecture = architecture.replace(num_classes=num_classes)
    pairs = collect_pairs(images, labels)
    kind = preprocessing or ("rgb" if pairs[0][0].name.lower().endswith(IMAGE_SUFFIXES) else "ct")
    recipe = official_preprocessing(kind)
    view = recipe.get("view", "radiological")
    slices = load_pairs(pairs, num_classes=num_classes, view=view)
    if val_images or val_labels:
        if not (val_images and val_labels):
            raise InputError("give both --val-images and --val-labels")
        val_slices = load_pairs(collect_pairs(val_images, val_labels), num_classes=num_classes, view=view)
        split, train_slices = "given validation files", slices
    else:
        train_idx, val_idx, split = split_validation(slices, val_fraction)
        train_slices, val_slices = slices.subset(train_idx), slices.subset(val_idx)

    model = None
    if init:
        from braunet.zoo import load_model

        model, _ = load_model(init, "cpu")
        if model.config != architecture:
            raise InputError(f"--init {init}: its architecture differs from preset {preset} with {num_classes} classes")
        model.train()
    card = ModelCard(
        name=name or Path(out_dir).resolve().name, config=architecture,
        class_names=class_names_for(num_classes, class_names), preprocessing=recipe,
        training={
            "preset": preset, "data": [str(p) for pair in pairs[:50] for p in pair], "split": split,
            "initialisation": init or "random", **({"command": command} if command else {}),
        },
    )
    return train_on_slices(card, train_slices, val_slices, out_dir, config, model=model, resume=resume,
                           progress=progress, should_stop=should_stop, device=device)
