"""``braunet demo``: the main job on an embedded default, for a first run on a fresh machine.

Fetches the abdominal CT sample (pooch, cached; or from ``BRAUNET_DATA_DIR``), segments it with the
bundled default model, and writes to OUT: ``<sample>_labels.nii.gz`` (the labels, with the CT's exact
affine) and ``<sample>_overlay.png`` (a few axial slices: the model's labels on top, the sample's
reference labels below). Prints the agreement with the reference labels per organ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="segment the bundled sample CT with the default model (first-run check)",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", default="demo-out", metavar="OUT", help="output folder (default demo-out)")
    parser.add_argument("--model", metavar="NAME|NAME@N|PATH", help="default: the sample's model, ct-abdomen-8")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="slices per batch (default 8)")
    parser.set_defaults(run=run)


def _prepare_folder(folder: Path) -> None:
    from braunet.errors import OutputError

    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    if not folder.parent.is_dir():
        raise OutputError(f"{folder}: parent folder {folder.parent} does not exist")
    folder.mkdir(exist_ok=True)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from skimage.io import imsave
    from tqdm import tqdm

    from braunet._atomic import write_atomically
    from braunet.classes import SYNAPSE8_COLORS
    from braunet.infer import predict_volume
    from braunet.io import write_labels
    from braunet.overlay import overlay_slices, pick_slices
    from braunet.samples import load_sample
    from braunet.train.metrics import dice
    from braunet.zoo import default_model, load_model

    out = Path(args.output)
    _prepare_folder(out)
    sample = load_sample("ct_abdomen")
    ct = sample.image
    model, card = load_model(args.model or default_model("volume", sample="ct_abdomen"), device=args.device)
    print(f"{ct.source.name}: {ct.shape} voxels of {tuple(round(s, 2) for s in ct.spacing)} mm, {ct.orientation}; "
          f"model {card.name} ({card.config.num_classes} classes)", file=sys.stderr)

    with tqdm(total=1, unit="slice", desc="segment", disable=None, leave=False, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        prediction = predict_volume(model, card, ct, batch_size=args.batch_size, progress=progress)

    labels_path = write_labels(
        prediction.labels, ct, out / "ct_abdomen_labels.nii.gz", class_names=dict(enumerate(card.class_names))
    )
    colors = card.class_colors or SYNAPSE8_COLORS
    from braunet.io import to_canonical

    _, reorientation = to_canonical(ct)
    slices = pick_slices(reorientation.apply(sample.labels))
    picture = np.concatenate(
        [overlay_slices(ct, prediction.labels, colors, slices=slices),
         overlay_slices(ct, sample.labels, colors, slices=slices)], axis=0,
    )
    overlay_path = write_atomically(out / "ct_abdomen_overlay.png", lambda tmp: imsave(tmp, picture, check_contrast=False))

    print(f"wrote {labels_path} and {overlay_path} (top: model, bottom: reference; slices {slices})")
    print("agreement with the sample's reference labels (TotalSegmentator v1, silver standard):")
    scores = []
    for value, name in enumerate(card.class_names[1:], start=1):
        score = dice(prediction.labels == value, sample.labels == value)
        scores.append(score)
        print(f"  {name:<14} Dice {score:.3f}")
    print(f"  mean Dice {np.mean(scores):.3f}")
    if card.training:
        print("note: this case is in the bundled model's training data; held-out metrics are in its card "
              "(braunet models) and models/README.md")
    return 0
