"""``braunet evaluate``: per-class and mean Dice and HD95 of a model on labelled images.

IMAGES and LABELS are one folder each (matched by file name without suffix) or equally long lists
of files paired in order. Each case is predicted as ``braunet predict`` would and scored on its own
grid: volumes in 3-D with their voxel spacing (HD95 in mm), 2-D images one by one (HD95 in pixels,
as photographs carry no spacing). A label volume must lie on its image's voxel grid: stored in
another axis order or direction it is reoriented exactly; shifted, rotated or resampled, it is
refused. Per class, means are over the cases where the class is in the reference or the prediction
(a class absent from both is not scored, and reported as absent); the mean row is over the classes
present in the reference (a class only predicted keeps its row, Dice 0, but is not in the mean).
HD95 is undefined (n/a) when exactly one of prediction and label is empty; those cases are left out
of the HD95 means.

--json prints {"mean_dice": ..., "mean_hd95_mm": ... (or "mean_hd95_px"), "mean_over": [...],
"per_class": {name: {"dice": ..., "hd95_mm": ..., "n_scored": ..., "n_in_reference": ...}}, "n": ...}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from braunet.train.evaluate import Evaluation

__all__ = ["add_parser", "format_table", "run"]


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
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto (default): bf16 where the hardware runs it natively and the model's card "
                             "records it validated, else fp32")  # fmt: skip
    from braunet.repro.cli import add_protocol_arguments

    add_protocol_arguments(parser)  # --protocol official, --data transunet:PATH (braunet.repro)
    parser.set_defaults(run=run)


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


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
        result = evaluate_files(model, card, pairs, precision=args.precision,
                                progress=lambda done, total: bar.update(done - bar.n))
    if args.json:
        print(json.dumps(result.to_json_dict()))
        return 0
    print(format_table(result, f"{card.name} v{card.version}"))
    return 0


def format_table(result: Evaluation, model: str) -> str:
    """The text report: one row per class, then the mean and what it is over."""
    unit = result.hd95_unit
    width = max(len(name) for name in [*result.per_class, "mean"])
    lines = [f"{model} on {result.n} case(s)", f"{'class':<{width}}  {'Dice':>6}  {'HD95 ' + unit:>8}"]
    for name, values in result.per_class.items():
        if not values["n_scored"]:
            note = "absent from prediction and reference"
        elif not values["n_in_reference"]:
            note = "not in the reference (predicted only)"
        elif values["n_scored"] < result.n:
            note = f"scored in {values['n_scored']} of {result.n} cases"
        else:
            note = ""
        row = f"{name:<{width}}  {_fmt(values['dice'], 4):>6}  {_fmt(values['hd95'], 2):>8}"
        lines.append(f"{row}  {note}".rstrip())
    over = len(result.mean_over)
    lines.append(f"{'mean':<{width}}  {_fmt(result.mean_dice, 4):>6}  {_fmt(result.mean_hd95, 2):>8}  "
                 f"over the {over} class(es) present in the reference")  # fmt: skip
    return "\n".join(lines)
