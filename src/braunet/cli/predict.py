"""``braunet predict``: segment CT volumes (NIfTI, DICOM folders) and 2-D images (PNG/JPG/BMP/TIFF).

One input: OUT is the label file (``.nii.gz``/``.nii`` for a volume, ``.png`` for an image) or an
existing folder. Several inputs: OUT is a folder (created if its parent exists) receiving
``<name>_labels.nii.gz`` / ``<name>_labels.png``. Label volumes carry the input's exact affine.
``--confidence`` follows the same rules (``<name>_confidence...``): float32 NIfTI for volumes,
8-bit PNG (255 = probability 1) for images. So do the other optional outputs: ``--dicom-seg``
(``<name>_seg.dcm``, a DICOM Segmentation referencing the input series; DICOM folder inputs only),
``--statistics`` (``<name>_statistics.json`` per-organ voxels, mL, mean/std HU and bounding box,
with the same table as CSV beside it) and ``--overlay`` (``<name>_overlay.png``, the labels over
the image; for volumes a row of axial slices).

Readable outputs: a 2-D label PNG is a palette image (pixel values are the class indices, shown in
the model's class colours); beside a NIfTI label map come a 3D Slicer colour table
(``<name>_ColorTable.ctbl``) and an ITK-SNAP label description file (``<name>_itksnap.txt``), so
viewers show organ names and colours. ``--cleanup`` keeps the large connected pieces of each organ
in a volume and fills enclosed holes (off by default: see ``braunet.cleanup`` for its measured
effect).

``--cohort`` takes INPUTs as lists of studies (a folder of studies, a glob, a CSV with a ``path``
column) and OUT as a folder: studies already done are skipped, failures are listed and the run goes
on, ``OUT/summary.csv`` sums it up, and under ``torchrun`` each rank takes its share (``braunet.cli.cohort``).

Every input is read and checked against its model, and every output path checked, before anything
is written; each input's label and confidence files appear together or not at all; OUT may not lie
in an input (DICOM series) folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # reason: the CLI imports numpy and the library lazily, so `braunet --help` starts fast
    import numpy as np

    from braunet.io import Volume
    from braunet.model import BRAUNet, ModelCard

from braunet.cli._args import positive_int

__all__ = ["add_parser", "run"]

# Output suffixes by kind of input, the default first (the subset of braunet.io.FORMATS predict writes).
_VOLUME_SUFFIXES = (".nii.gz", ".nii")
_IMAGE_SUFFIXES = (".png",)


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
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto (default): bf16 where the hardware runs it natively and the model's card "
                             "records it validated, else fp32")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="slices per batch (default 8)")
    parser.add_argument("--confidence", metavar="PATH", help="also write the per-voxel confidence map here")
    parser.add_argument(
        "--dicom-seg", metavar="OUT.dcm",
        help="also write a DICOM Segmentation that references the input series (DICOM folder inputs only)",
    )
    parser.add_argument(
        "--statistics", metavar="STATS.json",
        help="also write per-organ voxel counts, volumes (mL), mean/std HU and bounding boxes (JSON, and CSV beside it)",
    )
    parser.add_argument("--overlay", metavar="PATH.png", help="also write a picture of the labels over the image")
    parser.add_argument(
        "--cleanup", action="store_true",
        help="3-D clean-up of volume labels: drop small stray pieces of each organ, fill enclosed holes",
    )
    parser.add_argument(
        "--cohort", action="store_true",
        help="INPUTs list studies (folders of studies, globs, CSV files with a 'path' column); OUT is a folder: "
             "one output per study, finished ones skipped, failures listed, summary.csv; data-parallel under torchrun",
    )
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

    def __init__(
        self, text: str, several: bool, tag: str, inputs: tuple[Path, ...], suffixes: tuple[str, ...] | None = None
    ) -> None:
        from braunet._atomic import check_writable_target

        self.path = Path(text).expanduser()
        self.is_folder = _is_folder_target(self.path, text, several)
        self.tag = tag
        self.inputs = inputs
        self.suffixes = suffixes  # None: by kind of input (NIfTI for volumes, PNG for images)
        if self.is_folder:
            _check_folder(self.path, inputs)
        else:
            check_writable_target(self.path, inputs=inputs)

    def for_input(self, source: Path, is_2d: bool) -> Path:
        """The output path for ``source``, checked (not created) before any work is done."""
        from braunet._atomic import check_writable_target
        from braunet.errors import OutputError

        suffixes = self.suffixes or (_IMAGE_SUFFIXES if is_2d else _VOLUME_SUFFIXES)
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
    if args.cohort:
        from braunet.cli.cohort import run_cohort

        return run_cohort(args)

    from braunet.errors import InputError, OutputError
    from braunet.infer.engine import check_input
    from braunet.io import read_image
    from braunet.io.formats import DICOM_SEG_SUFFIXES
    from braunet.zoo import default_model, resolve_model

    inputs = [Path(text).expanduser() for text in args.inputs]
    for path in inputs:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    if args.dicom_seg:
        for path in inputs:
            if not path.is_dir():
                raise InputError(f"{path}: --dicom-seg needs a DICOM series folder as input, not a file")
    several = len(inputs) > 1
    sources = tuple(inputs)
    labels_target = _Target(args.output, several, "labels", sources)
    extras = {
        name: _Target(text, several, tag, sources, suffixes)
        for name, text, tag, suffixes in (
            ("confidence", args.confidence, "confidence", None),
            ("dicom_seg", args.dicom_seg, "seg", DICOM_SEG_SUFFIXES),
            ("statistics", args.statistics, "statistics", (".json",)),
            ("overlay", args.overlay, "overlay", (".png",)),
        )
        if text
    }
    for name, target in extras.items():
        if target.path.resolve() == labels_target.path.resolve():
            raise OutputError(f"{target.path}: --{name.replace('_', '-')} must differ from the label output -o")
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
        label_path = labels_target.for_input(path, volume.is_2d)
        paths = {name: target.for_input(path, volume.is_2d) for name, target in extras.items()}
        plan.append((path, source, label_path, paths, volume if not several else None))
        del volume

    models: dict[str, tuple] = {}  # loaded once per source (without --model: one per kind of input)
    for path, source, label_path, paths, first_read in plan:
        volume = first_read if first_read is not None else read_image(path)
        if source.ref not in models:
            models[source.ref] = source.load(args.device)
        model, card = models[source.ref]
        targets = (labels_target, *extras.values())
        _, written, precision = predict_one(args, path, volume, model, card, label_path, paths, targets)
        shown = ", ".join(str(t) for t in written)
        print(f"{path} -> {shown} ({card.name}) [{precision}]")
    return 0


def predict_one(
    args: argparse.Namespace, path: Path, volume: Volume, model: BRAUNet, card: ModelCard, label_path: Path,
    paths: dict[str, Path], targets: tuple[_Target, ...],
) -> tuple[np.ndarray, list[Path], str]:
    """Segment one checked input and write its outputs (``label_path`` and the optional ``paths``).

    Shared by a plain run and a cohort run (``braunet.cli.cohort``); ``targets`` are created first.

    Returns:
        The label map (``volume.spatial_shape``, after ``--cleanup``), the paths written and the precision
        that ran ("fp32" or "bf16"; see ``--precision``).
    """
    from tqdm import tqdm

    from braunet._atomic import atomic_paths
    from braunet.errors import InputError
    from braunet.infer import predict
    from braunet.io import write_image, write_labels
    from braunet.io.colour_tables import resolve_colours

    with tqdm(total=1, desc=path.name, unit="slice", disable=None, leave=False, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        prediction = predict(
            model, card, volume, batch_size=args.batch_size, progress=progress, precision=args.precision,
            confidence=("uint8" if volume.is_2d else "float32") if "confidence" in paths else False,
        )
    labels = prediction.labels
    if args.cleanup and not volume.is_2d:
        from braunet.cleanup import clean_labels

        labels = clean_labels(labels)
    if "dicom_seg" in paths and not labels.any():  # reason: a SEG needs a segment; refuse before writing
        raise InputError(f"{path}: no organ was found, so there is nothing for --dicom-seg to write")
    for target in targets:
        target.prepare()
    names = list(card.class_names)
    colours = resolve_colours(names, card.class_colors)
    core = [label_path] + ([paths["confidence"]] if "confidence" in paths else [])
    with atomic_paths(core) as temps:  # reason: labels and confidence appear together or not at all
        write_labels(labels, volume, temps[0], class_names=dict(enumerate(names)), colours=colours)
        if "confidence" in paths:
            write_image(_confidence_volume(prediction.confidence, volume), temps[1])
    written = core + _write_extras(labels, volume, card, path, label_path, paths, colours, cleaned=args.cleanup)
    return labels, written, prediction.precision


def _write_extras(
    labels: np.ndarray, volume: Volume, card: ModelCard, source: Path, label_path: Path, paths: dict[str, Path],
    colours: list, *, cleaned: bool,
) -> list[Path]:
    """Write what accompanies the label map at ``label_path``: its colour tables (volumes) and the
    optional outputs named in ``paths`` (``dicom_seg``, ``statistics``, ``overlay``); return their paths."""
    from braunet.io.colour_tables import write_colour_tables

    names = list(card.class_names)
    written: list[Path] = []
    if not volume.is_2d:
        written.extend(write_colour_tables(label_path, names, colours))
    if "dicom_seg" in paths:
        from braunet.io.dicom_seg import write_dicom_seg

        written.append(write_dicom_seg(labels, source, names, colours, paths["dicom_seg"],
                                       model_name=card.name, model_version=card.version))  # fmt: skip
    if "statistics" in paths:
        from braunet.stats import label_statistics, write_statistics_csv, write_statistics_json

        hu = not volume.is_2d and card.recipe.kind == "ct"
        records = label_statistics(labels, volume, names, intensities=hu)
        about = {
            "image": str(source), "model": card.name, "model_version": card.version,
            "spacing_mm": None if volume.is_2d else list(volume.spacing), "intensity": "HU" if hu else None,
            "cleanup": cleaned and not volume.is_2d,
        }  # fmt: skip
        written.append(write_statistics_json(records, paths["statistics"], about=about))
        written.append(write_statistics_csv(records, paths["statistics"].with_suffix(".csv")))
    if "overlay" in paths:
        from PIL import Image

        from braunet._atomic import write_checked
        from braunet.overlay import overlay_image, overlay_slices

        picture = overlay_image(volume, labels, colours) if volume.is_2d else overlay_slices(volume, labels, colours)
        written.append(write_checked(paths["overlay"], lambda tmp: Image.fromarray(picture).save(tmp, format="PNG")))
    return written


def _confidence_volume(confidence, like):
    """Wrap a confidence map in a Volume on the input's grid (2-D: a grey 8-bit image)."""
    from braunet.io import Volume

    if like.is_2d:
        return Volume(confidence, like.affine, None, "grey", True)
    return Volume(confidence, like.affine, None, "confidence", False, like.header)
