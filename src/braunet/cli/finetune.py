"""``braunet finetune``: fine-tune a model on corrected labels; keep it only if it measurably improves.

IMAGES and LABELS as for ``braunet train`` (folders matched by file name, or files paired in order;
volumes give their axial slices). A share (--holdback) of the slices is held back (--holdback-by
blocks: that share of every slice's 8 x 8 blocks instead; a single slice is always split by
blocks); the model is trained on the rest for --time-budget seconds (replaying the anchors.npz
stored in the model's folder) and scored on what was held back before and after. If the Dice
improves, the new version (card: version + 1, parent NAME@VERSION) is saved in the model library
($BRAUNET_MODELS_DIR, default ~/.braunet/models) as NAME@VERSION, the same place the napari
Fine-tune widget saves to, or to --out DIR; otherwise nothing is written, the reason is printed,
and the exit code is 0 (--require-improvement makes it 3). Each class's Dice and HD95 on the
held-back pixels are printed before -> after (HD95 in mm for volumes, in pixels for 2-D images;
--json: ``per_class``, ``hd95_unit``, and ``heldout``: "blocks" or "slices").

The output (--out DIR or the library slot NAME@VERSION) is claimed before any work: a taken
folder, or one another run is writing, is refused at once. The version folder is written under a
hidden staging name and renamed into place complete, so an interrupt leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser", "class_table", "run"]


def _share(text: str) -> float:
    """A share strictly between 0 and 1 (an argparse type: a bad value is a usage error naming the option)."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # reason: also refuses nan
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune", help="fine-tune a model on corrected labels", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="NAME|NAME@N|PATH",
                        help="bundled model, saved version (NAME@N) or checkpoint folder")
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image folder or files")
    parser.add_argument("--labels", nargs="+", required=True, metavar="PATH", help="corrected label folder or files")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write the new version to this folder instead of the model library")
    parser.add_argument("--time-budget", type=_seconds, default=30.0, metavar="SECONDS", help="whole round (30)")
    parser.add_argument("--mode", choices=("decoder", "full"), default="decoder", help="train the decoder or all")
    parser.add_argument("--holdback", type=_share, default=0.25, help="share held back to measure (0.25)")
    # reason: the choices and default are braunet.train.finetune's (a test checks); importing it here would load torch
    parser.add_argument("--holdback-by", choices=("slices", "blocks"), default="slices",
                        help="hold back whole slices, or blocks of every slice (default: slices)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--require-improvement", action="store_true", help="exit with 3 when the model is kept")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from braunet._atomic import StagedFolder, stage_folder
    from braunet.errors import InputError, OutputError
    from braunet.infer.engine import MIN_SIZE, check_input_kind
    from braunet.train.finetune import finetune
    from braunet.train.pairs import collect_pairs, is_volume_path
    from braunet.train.slices import load_pairs
    from braunet.train.versions import claim_version, write_version
    from braunet.zoo import library_dir, resolve_model, version_dir

    source = resolve_model(args.model)
    pairs = collect_pairs(args.images, args.labels)
    for image, _ in pairs:  # reason: a CT volume through an RGB recipe would "improve" on meaningless input
        check_input_kind(source.card, not is_volume_path(Path(image)), str(image))
    # Claim the output before any work (refused now if taken or being written by another run); the
    # claim is a staging folder, removed on every way out unless an accepted version is committed.
    stage: StagedFolder
    if args.out is not None:
        stage = stage_folder(args.out.expanduser())
    else:
        slot = version_dir(library_dir(), source.name, source.version + 1)
        if slot.exists():
            raise OutputError(f"{slot}: {source.name}@{source.version + 1} is already saved (versions are never "
                              "overwritten); fine-tune that version, or give --out DIR")
        stage = claim_version(slot)
    with stage:
        model, card = source.load(args.device)
        slices = load_pairs(pairs, num_classes=model.config.num_classes, view=card.recipe.view)
        for image, name in zip(slices.images, slices.names, strict=True):
            if min(image.shape[:2]) < MIN_SIZE:  # reason: the size predict refuses; nothing to learn below it
                raise InputError(f"{name}: the slice is {image.shape[0]}x{image.shape[1]} px, too small to "
                                 f"fine-tune on (need >= {MIN_SIZE})")
        with tqdm(total=round(args.time_budget), unit="s", disable=None, leave=False, file=sys.stderr,
                  desc=f"finetune {card.name}", bar_format="{l_bar}{bar}| {n:.0f}/{total} s {postfix}") as bar:
            def progress(p) -> None:
                bar.update(min(p.elapsed_s, bar.total) - bar.n)
                bar.set_postfix({"step": p.step, "loss": f"{p.loss:.3f}"}, refresh=False)

            result = finetune(
                model, card, slices.images, slices.labels, mode=args.mode, time_budget_s=args.time_budget,
                holdback=args.holdback, holdback_by=args.holdback_by, progress=progress, seed=args.seed,
                anchors=source.anchors,
                # reason: a 2-D image's spacing is 1.0 by default; only volumes give HD95 in mm, but a
                # fixed-spacing recipe resamples by it, as predict does
                spacing=slices.spacing if card.recipe.spacing_mm or any(d is not None for d in slices.depth_mm) else None,
            )
        written = ref = None
        if result.accepted:
            result.card.training["finetune"]["data"] = [str(p) for pair in pairs[:50] for p in pair]
            result.card.training["finetune"]["parent_folder"] = str(source.folder)
            written = write_version(result.model, result.card, stage, anchors_from=source.folder)
            if args.out is None:
                ref = f"{result.card.name}@{result.card.version}"
    summary = {
        "accepted": result.accepted, "dice_before": result.dice_before, "dice_after": result.dice_after,
        "anchor_dice_before": result.anchor_dice_before, "anchor_dice_after": result.anchor_dice_after,
        "n_train": len(result.train_indices), "n_heldout": len(result.heldout_indices), "steps": result.steps,
        "heldout": result.details["heldout"], "heldout_share_of_slice": result.details.get("heldout_share_of_slice"),
        "elapsed_s": round(result.elapsed_s, 1), "out": str(written) if written else None, "ref": ref,
        "message": result.message,
        "hd95_unit": result.hd95_unit,
        "per_class": {change.name: change.to_dict() for change in result.per_class},
    }
    if args.json:
        print(json.dumps(summary))
    else:
        where = f"saved as {ref} ({written})" if ref else f"written to {written}" if written else "nothing written"
        print(f"{result.message}; {where}")
        print(class_table(result.per_class, result.hd95_unit))
    return 3 if args.require_improvement and not result.accepted else 0


def class_table(changes: list, unit: str) -> str:
    """Per-class held-back Dice and HD95, before -> after, as aligned text rows (``-``: undefined)."""
    def hd(value: float) -> str:
        return "-" if value != value else f"{value:.1f}"  # reason: NaN != NaN (undefined HD95)

    width = max([len("class"), *(len(change.name) for change in changes)])
    lines = [f"{'class':<{width}}  Dice before -> after   HD95 ({unit}) before -> after"]
    for change in changes:
        lines.append(f"{change.name:<{width}}  {change.dice_before:11.3f} -> {change.dice_after:.3f}   "
                     f"{hd(change.hd95_before):>{11 + len(unit)}} -> {hd(change.hd95_after)}")  # fmt: skip
    return "\n".join(lines)

