"""``braunet predict``: segment CT volumes (NIfTI, DICOM folders) and 2-D images (PNG/JPG/BMP/TIFF).

One input: OUT is the label file (``.nii.gz``/``.nii`` for a volume, ``.png`` for an image) or an
existing folder. Several inputs: OUT is a folder (created if its parent exists) receiving
``<name>_labels.nii.gz`` / ``<name>_labels.png``. Label volumes carry the input's exact affine.
``--confidence`` follows the same rules (``<name>_confidence...``): float32 NIfTI for volumes,
8-bit PNG (255 = probability 1) for images.

Every input is read and checked against its model, and every output path checked, before anything
is written; each input's label and confidence files appear together or not at all; OUT may not lie
in an input (DICOM series) folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

# Output suffixes by kind of input, the default first (the subset of braunet.io.FORMATS predict writes).
_VOLUME_SUFFIXES = (".nii.gz", ".nii")
_IMAGE_SUFFIXES = (".png",)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment CT volumes or 2-D images with a BRAU-Net++ model",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI file, DICOM folder or PNG/JPG/BMP/TIFF image")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="label file, or folder for several inputs")
    parser.add_argument(
        "--model", metavar="NAME|NAME@N|PATH",
        help="bundled model, saved version (NAME@N) or checkpoint folder "
             "(default: ct-abdomen-8 for volumes, polyp for 2-D images)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    parser.add_argument("--batch-size", type=_positive_int, default=8, metavar="N", help="slices per batch (default 8)")
    parser.add_argument("--confidence", metavar="PATH", help="also write the per-voxel confidence map here")
    parser.set_defaults(run=run)


def _stem(path: Path) -> str:
    from braunet.io import file_stem, format_of

    name = path.name.rstrip("/") or path.resolve().name
    return file_stem(name) if format_of(name) else name  # a DICOM folder keeps its whole name


def _is_folder_target(out: Path, text: str, several: bool) -> bool:
    return several or out.is_dir() or text.endswith(("/", os.sep))


def _check_folder(folder: Path, inputs: tuple[Path, ...]) -> None:
    """A folder target must exist, or be creatable in an existing writable parent, outside every input folder."""
    from braunet._atomic import is_within
    from braunet.errors import OutputError

    for source in inputs:
        if source.is_dir() and is_within(folder, source):
            raise OutputError(f"{folder}: refusing to write into the input folder {source}")
    if folder.exists():
        if not folder.is_dir():
            raise OutputError(f"{folder}: is a file; with several inputs the output must be a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{folder}: output folder is not writable")
        return
    parent = folder.parent
    if not parent.is_dir():
        raise OutputError(f"{folder}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: cannot create it, {parent} is not writable")


class _Target:
    """Where one kind of output (labels or confidence) goes: a file (one input) or a folder."""

    def __init__(self, text: str, several: bool, tag: str, inputs: tuple[Path, ...]) -> None:
        from braunet._atomic import check_writable_target

        self.path = Path(text).expanduser()
        self.is_folder = _is_folder_target(self.path, text, several)
        self.tag = tag
        self.inputs = inputs
        if self.is_folder:
            _check_folder(self.path, inputs)
        else:
            check_writable_target(self.path, inputs=inputs)

    def for_input(self, source: Path, is_2d: bool) -> Path:
        """The output path for ``source``, checked (not created) before any work is done."""
        from braunet._atomic import check_writable_target
        from braunet.errors import OutputError

        suffixes = _IMAGE_SUFFIXES if is_2d else _VOLUME_SUFFIXES
        if self.is_folder:
            target = self.path / f"{_stem(source)}_{self.tag}{suffixes[0]}"
            if self.path.is_dir():
                check_writable_target(target, inputs=self.inputs)
            return target
        if not self.path.name.lower().endswith(suffixes):
            kind = "a 2-D image" if is_2d else "a volume"
            raise OutputError(f"{self.path}: the {self.tag} of {kind} ({source}) must be written as {' or '.join(suffixes)}")
        return self.path

    def prepare(self) -> None:
        """Create a folder target (its parent was checked up front)."""
        if self.is_folder:
            self.path.mkdir(exist_ok=True)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from braunet._atomic import atomic_paths
    from braunet.errors import InputError, OutputError
    from braunet.infer import predict
    from braunet.infer.engine import check_input
    from braunet.io import read_image, write_image, write_labels
    from braunet.zoo import default_model, resolve_model

    inputs = [Path(text).expanduser() for text in args.inputs]
    for path in inputs:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    several = len(inputs) > 1
    labels_target = _Target(args.output, several, "labels", tuple(inputs))
    conf_target = _Target(args.confidence, several, "confidence", tuple(inputs)) if args.confidence else None
    if conf_target is not None and conf_target.path.resolve() == labels_target.path.resolve():
        raise OutputError(f"{conf_target.path}: --confidence must differ from the label output -o")
    if labels_target.is_folder:
        stems = [_stem(p) for p in inputs]
        duplicates = sorted({s for s in stems if stems.count(s) > 1})
        if duplicates:
            raise OutputError(f"{labels_target.path}: several inputs are named {duplicates[0]!r}; their outputs would collide")

    # Every input is read and checked against its model, and every target checked, before any
    # output is written: a bad last input must not leave the first ones' outputs behind. Each input
    # is read again in its turn, so memory holds one volume at a time (one input: read once).
    chosen = resolve_model(args.model) if args.model else None
    plan = []
    for path in inputs:
        volume = read_image(path)
        source = chosen or resolve_model(default_model("image" if volume.is_2d else "volume"))
        check_input(source.card, volume)
        targets = [labels_target.for_input(path, volume.is_2d)]
        if conf_target is not None:
            targets.append(conf_target.for_input(path, volume.is_2d))
        plan.append((path, source, targets, volume if not several else None))
        del volume

    models: dict[str, tuple] = {}  # loaded once per source (without --model: one per kind of input)
    for path, source, targets, first_read in plan:
        volume = first_read if first_read is not None else read_image(path)
        if source.ref not in models:
            models[source.ref] = source.load(args.device)
        model, card = models[source.ref]

        with tqdm(total=1, desc=path.name, unit="slice", disable=None, leave=False, file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            prediction = predict(
                model, card, volume, batch_size=args.batch_size, progress=progress,
                confidence=("uint8" if volume.is_2d else "float32") if conf_target else False,
            )
        labels_target.prepare()
        if conf_target is not None:
            conf_target.prepare()
        with atomic_paths(targets) as temps:  # reason: labels and confidence appear together or not at all
            write_labels(prediction.labels, volume, temps[0], class_names=dict(enumerate(card.class_names)))
            if conf_target is not None:
                write_image(_confidence_volume(prediction.confidence, volume), temps[1])
        shown = ", ".join(str(t) for t in targets)
        print(f"{path} -> {shown} ({card.name})")
    return 0


def _confidence_volume(confidence, like):
    """Wrap a confidence map in a Volume on the input's grid (2-D: a grey 8-bit image)."""
    from braunet.io import Volume

    if like.is_2d:
        return Volume(confidence, like.affine, None, "grey", True)
    return Volume(confidence, like.affine, None, "confidence", False, like.header)
