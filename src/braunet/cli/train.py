"""``braunet train``: train a BRAU-Net++ preset on labelled volumes or image/mask folders.

IMAGES and LABELS are one folder each (matched by file name without suffix) or equally long lists
of files paired in order (NIfTI/DICOM volumes are used as axial slices). Without --val-images a
validation split is held out: whole cases when there are at least 5, otherwise the top slab of
each volume with a gap. OUT receives the best checkpoint by validation Dice (model.safetensors +
card.json) and train_state.pt for --resume.

Several processes (DDP; gloo on CPU, nccl on GPU):
    torchrun --nproc_per_node 2 -m braunet train --preset cpu-ct ...
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model on labelled images", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # --preset, --images and --labels are required unless --recipe is given (checked in run)
    parser.add_argument("--preset", help="architecture preset (braunet.model presets, e.g. cpu-ct)")
    parser.add_argument("--images", nargs="+", metavar="PATH", help="image folder or files")
    parser.add_argument("--labels", nargs="+", metavar="PATH", help="label folder or files")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output model folder")
    parser.add_argument("--val-images", nargs="+", metavar="PATH", help="validation images (default: split)")
    parser.add_argument("--val-labels", nargs="+", metavar="PATH", help="validation labels")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share held out when splitting (0.2)")
    parser.add_argument("--num-classes", type=int, help="output classes incl. background (1 = binary; default: preset's)")
    parser.add_argument("--class-names", help="comma-separated class names, background first")
    parser.add_argument("--preprocessing", choices=("ct", "rgb"), help="recipe (default: ct for volumes, rgb for images)")
    parser.add_argument("--name", help="model name in the card (default: OUT's folder name)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--time-limit", type=float, metavar="SECONDS", help="stop training after this long")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per step and process (8)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--config", type=Path, metavar="JSON", help="TrainConfig settings (override the flags)")
    parser.add_argument("--init", metavar="MODEL", help="start from this checkpoint instead of random weights")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    from braunet.repro.cli import add_recipe_arguments

    add_recipe_arguments(parser)  # --recipe: the paper's training protocols (braunet.repro)
    parser.set_defaults(run=run)


def _class_names(text: str | None, num_classes: int) -> list[str]:
    from braunet.classes import SYNAPSE8_CLASSES
    from braunet.errors import InputError

    count = max(num_classes, 2)
    if text:
        names = [n.strip() for n in text.split(",")]
        if len(names) != count:
            raise InputError(f"--class-names: {len(names)} names for {count} classes")
        return names
    if num_classes == 9:
        return list(SYNAPSE8_CLASSES)
    if num_classes == 1:
        return ["background", "foreground"]
    return ["background"] + [f"class_{i}" for i in range(1, count)]


def run(args: argparse.Namespace) -> int:
    if args.recipe:
        from braunet.repro.cli import run_recipe_command

        return run_recipe_command(args)
    if not (args.preset and args.images and args.labels):
        from braunet.errors import InputError

        raise InputError("give --preset, --images and --labels (or --recipe NAME)")
    import torch
    from tqdm import tqdm

    from braunet.errors import InputError
    from braunet.infer.device import resolve_device
    from braunet.infer.preprocess import official_preprocessing
    from braunet.io import IMAGE_SUFFIXES
    from braunet.model import BRAUNet, ModelCard, get_preset
    from braunet.train.datasets import prepare
    from braunet.train.pairs import collect_pairs
    from braunet.train.slices import load_pairs, split_validation
    from braunet.train.trainer import TrainConfig, setup_distributed, train
    from braunet.zoo import load_model

    try:
        preset = get_preset(args.preset)
    except ValueError as error:
        raise InputError(str(error)) from None
    num_classes = args.num_classes or preset.num_classes
    config = preset.replace(num_classes=num_classes)
    pairs = collect_pairs(args.images, args.labels)
    kind = args.preprocessing or ("rgb" if pairs[0][0].name.lower().endswith(IMAGE_SUFFIXES) else "ct")
    preprocessing = official_preprocessing(kind)
    view = preprocessing.get("view", "radiological")
    slices = load_pairs(pairs, num_classes=num_classes, view=view)
    if args.val_images or args.val_labels:
        if not (args.val_images and args.val_labels):
            raise InputError("give both --val-images and --val-labels")
        val_slices = load_pairs(collect_pairs(args.val_images, args.val_labels), num_classes=num_classes, view=view)
        split = "given validation files"
        train_slices = slices
    else:
        train_idx, val_idx, split = split_validation(slices, args.val_fraction)
        train_slices, val_slices = slices.subset(train_idx), slices.subset(val_idx)

    settings = dict(epochs=args.epochs, max_time_s=args.time_limit, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed)
    if args.config:
        try:
            settings.update(json.loads(args.config.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{args.config}: cannot read the settings ({error})") from None
    try:
        train_config = TrainConfig.from_dict(settings)
    except (TypeError, ValueError) as error:
        raise InputError(f"training settings: {error}") from None

    device = resolve_device(args.device)
    info = setup_distributed(device.type if device.type != "cuda" else "cuda")
    torch.manual_seed(args.seed)
    if args.init:
        model, init_card = load_model(args.init, "cpu")
        if model.config != config:
            raise InputError(f"--init {args.init}: its architecture differs from preset {args.preset} "
                             f"with {num_classes} classes")
        model.train()
    else:
        model = BRAUNet(config)
    name = args.name or args.out.resolve().name
    command = "braunet " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    card = ModelCard(
        name=name, config=config, class_names=_class_names(args.class_names, num_classes),
        preprocessing=preprocessing,
        training={
            "preset": args.preset, "data": [str(p) for pair in pairs[:50] for p in pair], "split": split,
            "initialisation": args.init or "random", **({"command": command} if command else {}),
        },
    )
    train_data = prepare(train_slices, preprocessing, config.img_size, num_classes)
    val_data = prepare(val_slices, preprocessing, config.img_size, num_classes)
    bar = tqdm(total=None, unit="step", disable=None if info.is_main else True, file=sys.stderr,
               desc=f"train {name}")

    def progress(p) -> None:
        bar.total = p.total_steps
        bar.update(p.step - bar.n)
        post = {"loss": f"{p.loss:.3f}"}
        if p.best_dice is not None:
            post["best_dice"] = f"{p.best_dice:.3f}"
        bar.set_postfix(post, refresh=False)

    try:
        result = train(model, card, train_data, val_data, args.out, train_config, resume=args.resume,
                       progress=progress, device=str(info.device))
    finally:
        bar.close()
    if info.is_main:
        summary = {
            "out": str(result.out_dir), "best_val_dice": result.best_dice, "best_epoch": result.best_epoch,
            "epochs": result.epochs_run, "steps": result.steps, "wall_s": round(result.wall_s, 1),
            "n_train": len(train_data), "n_val": len(val_data), "world_size": result.world_size, "split": split,
        }
        if args.json:
            print(json.dumps(summary))
        else:
            best = "n/a" if result.best_dice is None else f"{result.best_dice:.4f}"
            print(f"{result.out_dir}: best validation Dice {best} (epoch {result.best_epoch}), "
                  f"{result.epochs_run} epochs, {result.wall_s:.0f} s, {len(train_data)} train / "
                  f"{len(val_data)} validation slices")
    if info.world_size > 1:
        torch.distributed.destroy_process_group()
    return 0
