"""``braunet evaluate``: per-class and mean Dice and HD95 (mm) of a model on labelled images.

IMAGES and LABELS are one folder each (matched by file name without suffix) or equally long lists
of files paired in order. Each case is predicted as ``braunet predict`` would and scored on its own
grid: volumes in 3-D with their voxel spacing, 2-D images one by one (HD95 in pixels there, as
photographs carry no spacing). Means are over cases, then over classes. HD95 is undefined (null)
when exactly one of prediction and label is empty; those cases are left out of the HD95 mean.

--json prints {"mean_dice": ..., "mean_hd95_mm": ..., "per_class": {name: {"dice": ..., "hd95_mm": ...}}, "n": ...}
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="Dice and HD95 of a model on labelled images", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="NAME|NAME@N|PATH",
                        help="bundled model, saved version (NAME@N) or checkpoint folder")
    parser.add_argument("--images", nargs="+", metavar="PATH", help="image folder or files")
    parser.add_argument("--labels", nargs="+", metavar="PATH", help="label folder or files")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    from braunet.repro.cli import add_protocol_arguments

    add_protocol_arguments(parser)  # --protocol official, --data transunet:PATH (braunet.repro)
    parser.set_defaults(run=run)


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    if args.protocol == "official":
        from braunet.repro.cli import run_official_evaluation

        return run_official_evaluation(args)
    if args.data or not (args.images and args.labels):
        from braunet.errors import InputError

        raise InputError("give --images and --labels (--data transunet:PATH needs --protocol official)")
    from tqdm import tqdm

    from braunet.train.evaluate import evaluate_files
    from braunet.train.pairs import collect_pairs
    from braunet.zoo import load_model

    model, card = load_model(args.model, args.device)
    pairs = collect_pairs(args.images, args.labels)
    with tqdm(total=len(pairs), unit="case", disable=None, leave=False, file=sys.stderr, desc="evaluate") as bar:
        result = evaluate_files(model, card, pairs, progress=lambda done, total: bar.update(done - bar.n))
    report = result.to_json_dict()
    if args.json:
        print(json.dumps(report))
        return 0
    width = max(len(name) for name in [*report["per_class"], "mean"])
    print(f"{card.name} v{card.version} on {report['n']} case(s)")
    print(f"{'class':<{width}}  {'Dice':>6}  {'HD95 mm':>8}")
    for name, values in report["per_class"].items():
        print(f"{name:<{width}}  {_fmt(values['dice'], 4):>6}  {_fmt(values['hd95_mm'], 2):>8}")
    print(f"{'mean':<{width}}  {_fmt(report['mean_dice'], 4):>6}  {_fmt(report['mean_hd95_mm'], 2):>8}")
    return 0
