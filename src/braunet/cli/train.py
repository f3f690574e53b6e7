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


def run(args: argparse.Namespace) -> int:
    """Parse the settings, call :func:`braunet.train.run.train_on_files`, print the summary."""
    if args.recipe:
        from braunet.repro.cli import run_recipe_command

        return run_recipe_command(args)
    from braunet.errors import InputError

    if not (args.preset and args.images and args.labels):
        raise InputError("give --preset, --images and --labels (or --recipe NAME)")
    from tqdm import tqdm

    from braunet.train.loop import finish_distributed
    from braunet.train.run import train_on_files
    from braunet.train.trainer import TrainConfig

    settings = {"epochs": args.epochs, "max_time_s": args.time_limit, "batch_size": args.batch_size, "lr": args.lr,
                    "seed": args.seed}
    if args.config:
        try:
            overrides = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as error:  # ValueError: bad JSON or not UTF-8
            raise InputError(f"{args.config}: cannot read the settings ({error})") from None
        if not isinstance(overrides, dict):
            raise InputError(f"{args.config}: the settings must be a JSON object, got {type(overrides).__name__}")
        settings.update(overrides)
    try:
        config = TrainConfig.from_dict(settings)
    except (TypeError, ValueError) as error:
        raise InputError(f"training settings: {error}") from None
    name = args.name or args.out.resolve().name
    bars = []  # made at the first step: only rank 0 reports progress

    def progress(p) -> None:
        if not bars:
            bars.append(tqdm(total=None, unit="step", disable=None, file=sys.stderr, desc=f"train {name}"))
        bar = bars[0]
        bar.total = p.total_steps
        bar.update(p.step - bar.n)
        post = {"loss": f"{p.loss:.3f}"}
        if p.best_dice is not None:
            post["best_dice"] = f"{p.best_dice:.3f}"
        bar.set_postfix(post, refresh=False)

    command = "braunet " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    try:
        result = train_on_files(
            args.images, args.labels, args.out, preset=args.preset, num_classes=args.num_classes,
            class_names=[n.strip() for n in args.class_names.split(",")] if args.class_names else None,
            preprocessing=args.preprocessing, val_images=args.val_images, val_labels=args.val_labels,
            val_fraction=args.val_fraction, name=name, init=args.init, config=config, command=command,
            resume=args.resume, progress=progress, device=args.device,
        )
    finally:
        for bar in bars:
            bar.close()
    if not finish_distributed(result.world_size):  # torchrun: only rank 0 reports
        return 0
    training = result.card.training
    n_train, n_val, split = training["n_train_slices"], training["n_val_slices"], training["split"]
    if args.json:
        print(json.dumps({
            "out": str(result.out_dir), "best_val_dice": result.best_dice, "best_epoch": result.best_epoch,
            "epochs": result.epochs_run, "steps": result.steps, "wall_s": round(result.wall_s, 1),
            "n_train": n_train, "n_val": n_val, "world_size": result.world_size, "split": split,
        }))
    else:
        best = "n/a" if result.best_dice is None else f"{result.best_dice:.4f}"
        print(f"{result.out_dir}: best validation Dice {best} (epoch {result.best_epoch}), "
              f"{result.epochs_run} epochs, {result.wall_s:.0f} s, {n_train} train / {n_val} validation slices")
    return 0
