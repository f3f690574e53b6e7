"""Command-line parts of the reproduction kit, mounted on ``braunet train`` and ``braunet evaluate``.

``braunet train --recipe NAME|FILE.json`` runs :func:`braunet.repro.runner.run_recipe`::

    braunet train --recipe synapse --data transunet:/data/Synapse --init-encoder biformer_base_best.pth --out runs/synapse
    braunet train --recipe isic --images ISIC2018/images --labels ISIC2018/masks --out runs/isic
    torchrun --nproc_per_node 4 -m braunet train --recipe synapse --data transunet:/data/Synapse --out runs/synapse
    braunet train --recipe synapse --set epochs=2 batch_size=4 model.preset=tiny ...   # any recipe field

``braunet evaluate --protocol official`` scores a model as the paper did, next to our metrics::

    braunet evaluate --protocol official --model runs/synapse --data transunet:/data/Synapse
    braunet evaluate --protocol official --model ct-abdomen-8 --images ct.nii.gz --labels labels.nii.gz
    braunet evaluate --protocol official --model runs/isic --images test/images --labels test/masks
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

__all__ = ["add_protocol_arguments", "add_recipe_arguments", "parse_sets", "run_official_evaluation",
           "run_recipe_command"]


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``braunet train`` options of recipe mode (``--recipe``)."""
    group = parser.add_argument_group(
        "paper recipes", "--recipe runs an official training protocol (recipes/*.json; docs/reproduce.md). "
        "With a recipe, --epochs/--batch-size/--lr/--seed are ignored: change recipe fields with --set; "
        "--preset, if given, replaces the recipe's architecture preset.")
    group.add_argument("--recipe", metavar="NAME|FILE", help="synapse, synapse-nosccsa, isic, cvc or a recipe .json")
    group.add_argument("--data", metavar="transunet:PATH", help="TransUNet-format Synapse folder (synapse recipes)")
    group.add_argument("--init-encoder", metavar="PTH", help="BiFormer ImageNet checkpoint for the encoder "
                       "(biformer_base_best.pth), loaded as the official load_from()")
    group.add_argument("--groups", metavar="CSV", help="image,group CSV: keep a group (e.g. a video sequence) "
                       "on one side of the split (isic/cvc recipes)")
    group.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="recipe_set",
                       help="override recipe fields, e.g. epochs=2 optimizer.lr=0.01 (values parsed as JSON)")
    group.add_argument("--workers", type=int, default=0, metavar="N", help="data-loading processes (0)")
    group.add_argument("--amp", action="store_true", help="mixed precision on CUDA (the official runs use fp32)")


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["epochs=2", "model.preset=tiny"]`` -> ``{"epochs": 2, "model.preset": "tiny"}`` (JSON values)."""
    from braunet.errors import InputError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def run_recipe_command(args: argparse.Namespace) -> int:
    """``braunet train --recipe``: load, override, run with a progress bar, print a summary."""
    from tqdm import tqdm

    from braunet.errors import InputError
    from braunet.repro.recipes import load_recipe
    from braunet.repro.runner import parse_data_spec, run_recipe
    from braunet.train.loop import finish_distributed

    recipe = load_recipe(args.recipe)
    overrides = parse_sets(args.recipe_set)
    if args.preset:
        overrides.setdefault("model.preset", args.preset)
    if overrides:
        recipe = recipe.with_overrides(overrides)
    data = parse_data_spec(args.data)[1] if args.data else None
    if recipe["data.kind"] == "folders" and (args.data or not (args.images and args.labels)):
        raise InputError(f"recipe {recipe.name!r} trains on image/mask folders: give --images and --labels")
    if recipe["data.kind"] == "transunet" and (args.images or args.labels):
        raise InputError(f"recipe {recipe.name!r} reads a TransUNet folder: give --data transunet:PATH, "
                         "not --images/--labels (convert NIfTI pairs with python -m braunet.repro.transunet)")
    device = None if args.device == "auto" else args.device
    command = "braunet " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    bar = tqdm(total=None, unit="step", disable=None, file=sys.stderr, desc=f"{recipe.name} recipe")

    def progress(p) -> None:
        bar.total = p.total_steps
        bar.update(p.step - bar.n)
        post = {"epoch": p.epoch, "loss": f"{p.loss:.3f}", "lr": f"{p.lr:.2e}"}
        if p.evaluation:
            post["dice"] = f"{p.evaluation['official']['mean_dice']:.4f}"
        bar.set_postfix(post, refresh=False)

    try:
        result = run_recipe(
            recipe, args.out, data=data, images=args.images, labels=args.labels, groups=args.groups,
            init_encoder=args.init_encoder, resume=args.resume, device=device, amp=True if args.amp else None,
            num_workers=args.workers, name=args.name, command=command, progress=progress,
        )
    finally:
        bar.close()
    if not finish_distributed(result.world_size):  # torchrun: only rank 0 reports
        return 0
    summary = {
        "out": str(result.out_dir), "recipe": recipe.name, "epochs": result.epochs_run, "steps": result.steps,
        "wall_s": round(result.wall_s, 1), "world_size": result.world_size,
        "init_encoder": result.init_report and {k: v for k, v in result.init_report.items() if k.startswith("n_")},
        "test": result.test and result.test.get("official"),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{result.out_dir}: {recipe.name} recipe, {result.epochs_run} epochs, {result.steps} steps, "
          f"{result.wall_s:.0f} s")
    if result.test:
        official = result.test["official"]
        if "mean_hd95_voxels" in official:
            print(f"official protocol: DSC {official['mean_dice'] * 100:.2f}, HD95 {official['mean_hd95_voxels']:.2f} "
                  f"voxels (paper: {recipe.get('paper.dsc')} / {recipe.get('paper.hd95')})")
        else:
            print(f"official protocol: DSC {official['mean_dice'] * 100:.2f}, mIoU {official['mean_iou'] * 100:.2f} "
                  f"(paper: {recipe.get('paper.dsc')} / {recipe.get('paper.miou')})")
    return 0


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``braunet evaluate`` options for the official protocol."""
    parser.add_argument("--protocol", choices=("default", "official"), default="default",
                        help="default: our metrics (HD95 in mm); official: the paper's test protocol "
                        "(Synapse: per-case 3-D Dice and HD95 in voxels; ISIC/CVC: Dice and IoU at 256 px) "
                        "printed next to ours")
    parser.add_argument("--data", metavar="transunet:PATH", help="with --protocol official: the test volumes "
                        "of a TransUNet-format Synapse folder (instead of --images/--labels)")


def run_official_evaluation(args: argparse.Namespace) -> int:
    """``braunet evaluate --protocol official``."""
    from tqdm import tqdm

    from braunet.errors import InputError
    from braunet.repro.official_eval import evaluate_binary_official, evaluate_transunet, evaluate_volumes_official
    from braunet.zoo import load_model

    if bool(args.data) == bool(args.images or args.labels):
        raise InputError("--protocol official: give either --data transunet:PATH or --images and --labels")
    model, card = load_model(args.model, args.device)
    with tqdm(total=None, unit="case", disable=None, leave=False, file=sys.stderr, desc="official test") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if args.data:
            from braunet.repro.runner import parse_data_spec
            from braunet.repro.transunet import TransUNetFolder

            folder = TransUNetFolder(parse_data_spec(args.data)[1])
            report: Any = evaluate_transunet(model, folder, card.class_names, progress=progress)
        else:
            from braunet.train.pairs import collect_pairs
            from braunet.train.slices import load_pairs

            if not (args.images and args.labels):
                raise InputError("give both --images and --labels")
            pairs = collect_pairs(args.images, args.labels)
            if card.recipe.kind == "ct":
                report = evaluate_volumes_official(model, card, pairs, progress=progress)
            else:
                slices = load_pairs(pairs, num_classes=model.config.num_classes)
                report = evaluate_binary_official(model, card, slices)
    if args.json:
        print(json.dumps(report.to_json_dict()))
    else:
        print(f"{card.name} v{card.version}")
        print(report.format_table())
    return 0
