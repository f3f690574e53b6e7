"""``braunet suggest``: which slices to correct next, ranked by the model's uncertainty.

One CT volume (NIfTI, DICOM folder): its axial slices, numbered from the feet up as the napari
slider shows them. Several 2-D images (PNG/JPG/BMP/TIFF): the images, numbered in the order given
(with --spacing, frames of one video given in order stay apart). Each line gives the slice, its
score (the mean entropy, or 1 - margin, of the model's class probabilities over the organs it
predicts and a band around them; 0 = sure or empty) and the classes predicted on it; --json
prints the same as one JSON object. Correct those slices, then fine-tune (``braunet finetune``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from braunet.cli._args import positive_int

__all__ = ["add_parser", "run"]

MEASURES = ("entropy", "margin")  # braunet.infer.uncertainty.MEASURES, spelled out: the parser must not import torch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "suggest",
        help="rank the slices of a volume (or a set of images) to correct next",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="one NIfTI file or DICOM folder, or 2-D images")
    parser.add_argument(
        "--model", metavar="NAME|NAME@N|PATH",
        help="bundled model, saved version (NAME@N) or checkpoint folder "
             "(default: ct-abdomen-8 for volumes, polyp for 2-D images)",
    )  # fmt: skip
    parser.add_argument("-n", type=positive_int, default=10, metavar="N", help="how many slices to suggest (10)")
    parser.add_argument("--spacing", type=positive_int, metavar="K",
                        help="no two suggestions closer than K slices (default: 5 for a volume, 1 for images)")
    parser.add_argument("--measure", choices=MEASURES, default="entropy", help="default: entropy")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto (default): bf16 where the hardware runs it natively and the model's card "
                             "records it validated, else fp32")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="slices per batch (default 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from braunet.errors import InputError
    from braunet.infer.uncertainty import suggest_slices, suggest_volume
    from braunet.io import read_image
    from braunet.zoo import default_model, resolve_model

    paths = [Path(text).expanduser() for text in args.inputs]
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    volumes = [read_image(path) for path in paths]
    two_d = [v.is_2d for v in volumes]
    if not all(two_d) and len(volumes) > 1:
        volume_path = paths[two_d.index(False)]
        raise InputError(f"{volume_path}: a 3-D volume is ranked on its own; give one volume, or only 2-D images")
    is_2d = two_d[0]
    source = resolve_model(args.model or default_model("image" if is_2d else "volume"))
    if is_2d and source.card.recipe.kind != "rgb":
        raise InputError(f"{paths[0]}: model {source.ref!r} segments 3-D CT volumes, but this is a 2-D image")
    model, card = source.load(args.device)
    spacing = args.spacing or (1 if is_2d else 5)
    options = {"n": args.n, "spacing": spacing, "measure": args.measure, "batch_size": args.batch_size,
               "precision": args.precision}

    with tqdm(total=1, desc="suggest", unit="slice", disable=None, leave=False, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if is_2d:
            found = suggest_slices(model, card, [v.array for v in volumes], progress=progress, **options)
        else:
            found = suggest_volume(model, card, volumes[0], progress=progress, **options)

    rows = found.rows()
    if is_2d:
        for row in rows:
            row["image"] = str(paths[row["slice"]])
    if args.json:
        inputs = [str(p) for p in paths]
        print(json.dumps({"input": inputs[0] if not is_2d else inputs, "model": source.ref, "measure": found.measure,
                          "spacing": spacing, "slices": len(found.scores), "suggestions": rows}))  # fmt: skip
        return 0
    what = f"{len(found.scores)} {'images' if is_2d else 'axial slices'}"
    print(f"{len(rows)} of {what} to correct next ({source.ref}, {found.measure}, spacing {spacing}):")
    if not rows:
        print("  none: the model predicts no foreground anywhere")
        return 0
    print(f"{'image' if is_2d else 'slice':>6}  {'score':>7}  classes")
    for row in rows:
        where = f"{row['slice']:>6}  {row['score']:7.4f}  {', '.join(row['classes'])}"
        print(where + (f"  ({row['image']})" if is_2d else ""))
    return 0
