"""``braunet predict --cohort``: one command over many studies, resumable and data-parallel.

The INPUTs name studies: a folder holds one study per entry (NIfTI files, 2-D images, DICOM series
folders; hidden entries and the output folder are left out), a glob is expanded (each match is a
study), and a ``.csv`` file lists studies in its ``path`` column (relative paths from the CSV's
folder). Outputs go into the folder OUT under the same names as for several inputs of a plain run
(``<name>_labels.nii.gz``...). A study whose outputs all exist is skipped: outputs are written
atomically, so an existing file is a complete one and a rerun after a crash resumes. A failing
study is reported as one ``STUDY: error`` line on stderr and the others go on; the exit code is 1
if any failed. ``OUT/summary.csv`` lists every study (status ``done``, ``skipped`` or ``failed``,
seconds, model, organs present and their volumes in mL; a skipped study keeps its earlier numbers).

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r of w takes the studies i with ``i % w == r`` and
appends its rows to ``OUT/summary.rank<r>.csv`` as it goes; after a barrier rank 0 merges the parts
into ``summary.csv``. The process group is the training one (``braunet.train.loop``): gloo on CPU,
nccl on GPUs, one machine or several.
"""

from __future__ import annotations

import argparse
import csv
import glob
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from braunet.cli.predict import _Target

__all__ = ["SUMMARY", "is_done", "list_studies", "merge_summaries", "run_cohort"]

SUMMARY = "summary.csv"
_FIELDS = ("study", "model", "seconds", "status", "organs", "error")  # then one "<organ>_ml" column per organ
_GLOB_CHARS = ("*", "?", "[")


def list_studies(sources: list[str], *, exclude: Path | None = None) -> list[Path]:
    """The studies that folders, globs, CSV lists and single study paths name, in the given order.

    Args:
        sources: INPUT arguments of ``braunet predict --cohort``.
        exclude: a folder never taken as a study (the output folder, if it lies among them).

    Raises:
        InputError: a source that does not exist, a glob without matches, a CSV without a ``path``
            column, or no study at all.
    """
    from braunet.errors import InputError
    from braunet.io import format_of

    studies: list[Path] = []
    for text in sources:
        path = Path(text).expanduser()
        if not path.exists() and any(c in text for c in _GLOB_CHARS):
            matches = sorted(glob.glob(str(path)))
            if not matches:
                raise InputError(f"{text}: no study matches this pattern")
            studies.extend(Path(m) for m in matches)
        elif not path.exists():
            raise InputError(f"{path}: no such file or folder")
        elif path.is_file() and path.name.lower().endswith(".csv"):
            studies.extend(_csv_studies(path))
        elif path.is_dir():
            studies.extend(
                child for child in sorted(path.iterdir())
                if not child.name.startswith(".") and (child.is_dir() or format_of(child.name))
                and not (exclude is not None and child.resolve() == exclude.resolve())
            )  # fmt: skip
        else:
            studies.append(path)
    if not studies:
        raise InputError(f"{', '.join(sources)}: no study found")
    return studies


def _csv_studies(path: Path) -> list[Path]:
    from braunet.errors import InputError

    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or ()):
            raise InputError(f"{path}: a study list needs a header row with a 'path' column")
        rows = [row["path"].strip() for row in reader if (row.get("path") or "").strip()]
    return [p if p.is_absolute() else path.parent / p for p in (Path(r).expanduser() for r in rows)]


def _is_2d(study: Path) -> bool:
    """Guess from the name alone (no read): a DICOM folder or NIfTI is a volume."""
    from braunet.io import format_of

    fmt = None if study.is_dir() else format_of(study.name)
    return bool(fmt and fmt.is_2d)


def expected_outputs(study: Path, targets: dict[str, _Target]) -> list[Path]:
    """Every file a finished run writes for ``study`` (labels first; colour tables beside volumes)."""
    from braunet.io.colour_tables import colour_table_paths

    is_2d = _is_2d(study)
    labels = targets["labels"].for_input(study, is_2d)
    paths = [labels] + ([] if is_2d else list(colour_table_paths(labels)))
    for name, target in targets.items():
        if name != "labels":
            path = target.for_input(study, is_2d)
            paths += [path, path.with_suffix(".csv")] if name == "statistics" else [path]
    return paths


def is_done(study: Path, targets: dict[str, _Target]) -> bool:
    """True when all of ``study``'s outputs exist (each is written atomically, so each is complete)."""
    return all(path.is_file() for path in expected_outputs(study, targets))


def read_summary(path: Path) -> list[dict[str, str]]:
    """The rows of a summary (part) file; none if it is missing."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_summary(rows: list[dict[str, str]], path: Path) -> Path:
    """Write ``rows`` as CSV, atomically: the fixed columns, then the organ volume columns in first-seen order."""
    from braunet._atomic import write_checked

    fields = list(_FIELDS)
    for row in rows:
        fields += [key for key in row if key not in fields]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)

    return write_checked(path, write)


def merge_summaries(folder: Path, world_size: int, order: list[Path]) -> list[dict[str, str]]:
    """Join ``summary.rank<r>.csv`` of ranks ``0..world_size-1`` into ``summary.csv`` in the order of
    ``order`` (the studies), remove every part file, and return the rows."""
    parts = [folder / f"summary.rank{rank}.csv" for rank in range(world_size)]
    by_study = {row["study"]: row for part in parts for row in read_summary(part)}
    rows = [by_study[str(study)] for study in order if str(study) in by_study]
    write_summary(rows, folder / SUMMARY)
    for part in folder.glob("summary.rank*.csv"):  # this run's, and any a crashed run with more ranks left
        part.unlink(missing_ok=True)
    return rows


def _study_row(study: Path, model: str, seconds: float, statistics: list) -> dict[str, str]:
    row = {"study": str(study), "model": model, "seconds": f"{seconds:.2f}", "status": "done", "error": ""}
    row["organs"] = ";".join(s.name for s in statistics if s.voxels)
    for s in statistics:
        row[f"{s.name}_ml"] = "" if s.volume_ml is None else f"{s.volume_ml:.3f}"
    return row


def run_cohort(args: argparse.Namespace) -> int:
    """``braunet predict --cohort``: returns 0, or 1 if any study failed (bad arguments raise, exit 2)."""
    from tqdm import tqdm

    from braunet.cli.predict import _stem, _Target, predict_one
    from braunet.errors import OutputError
    from braunet.infer.engine import check_input
    from braunet.io import read_image
    from braunet.io.formats import DICOM_SEG_SUFFIXES
    from braunet.stats import label_statistics
    from braunet.zoo import default_model, resolve_model

    out = Path(args.output).expanduser()
    if out.is_file():
        raise OutputError(f"{out}: is a file; a cohort run writes into a folder")
    studies = list_studies(args.inputs, exclude=out)
    stems = [_stem(p) for p in studies]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise OutputError(f"{out}: several studies are named {duplicates[0]!r}; their outputs would collide")
    folders = tuple(Path(t).expanduser() for t in args.inputs if Path(t).expanduser().is_dir())
    guarded = folders + tuple(p for p in studies if p.is_dir())
    targets = {"labels": _Target(str(out), True, "labels", guarded)}
    for name, text, tag, suffixes in (
        ("confidence", args.confidence, "confidence", None),
        ("dicom_seg", args.dicom_seg, "seg", DICOM_SEG_SUFFIXES),
        ("statistics", args.statistics, "statistics", (".json",)),
        ("overlay", args.overlay, "overlay", (".png",)),
    ):
        if text:
            targets[name] = _Target(text, True, tag, guarded, suffixes)
    chosen = resolve_model(args.model) if args.model else None

    from braunet.train.loop import finish_distributed, setup_distributed

    info = setup_distributed(None if args.device in ("auto", "mps") else args.device)
    device = str(info.device) if info.world_size > 1 else args.device
    for target in targets.values():
        target.prepare()
    previous = {row["study"]: row for row in read_summary(out / SUMMARY)}
    for old_part in sorted(out.glob("summary.rank*.csv")):  # reason: a crashed run's parts hold rows summary.csv lacks
        previous.update({row["study"]: row for row in read_summary(old_part)})
    _barrier(info.world_size)  # reason: every rank has read the old parts before any rewrites its own

    part = out / f"summary.rank{info.rank}.csv"
    mine = studies[info.rank :: info.world_size]
    rows: list[dict[str, str]] = []
    models: dict[str, tuple] = {}
    terminal = sys.stdout.isatty()
    failed = 0
    for study in tqdm(mine, unit="study", disable=not terminal, file=sys.stdout):
        start = time.perf_counter()
        try:
            if is_done(study, targets):
                row = dict(previous.get(str(study), {"study": str(study)}), status="skipped", error="")
                _log(terminal, f"{study}: skipped, its outputs exist")
            else:
                volume = read_image(study)
                source = chosen or resolve_model(default_model("image" if volume.is_2d else "volume"))
                check_input(source.card, volume)
                label_path = targets["labels"].for_input(study, volume.is_2d)
                paths = {name: t.for_input(study, volume.is_2d) for name, t in targets.items() if name != "labels"}
                if source.ref not in models:
                    models[source.ref] = source.load(device)
                model, card = models[source.ref]
                labels, written, _ = predict_one(args, study, volume, model, card, label_path, paths, tuple(targets.values()))
                seconds = time.perf_counter() - start
                row = _study_row(study, card.name, seconds, label_statistics(labels, volume, card.class_names))
                _log(terminal, f"{study} -> {written[0]} ({card.name}, {seconds:.1f} s)")
        except Exception as error:  # noqa: BLE001 reason: one bad study must not stop the cohort (Ctrl-C still does)
            failed += 1
            message = str(error) or type(error).__name__
            message = message.removeprefix(f"{study}: ")
            print(f"{study}: {message}", file=sys.stderr)
            row = {"study": str(study), "seconds": f"{time.perf_counter() - start:.2f}", "status": "failed",
                   "error": message}  # fmt: skip
        rows.append(row)
        write_summary(rows, part)  # reason: rewritten after every study, so a crash keeps the finished rows

    _barrier(info.world_size)
    if info.rank == 0:
        merged = merge_summaries(out, info.world_size, studies)
        failed = sum(row.get("status") == "failed" for row in merged)
        done = sum(row.get("status") == "done" for row in merged)
        skipped = sum(row.get("status") == "skipped" for row in merged)
        print(f"{out / SUMMARY}: {done} done, {skipped} skipped, {failed} failed of {len(studies)} studies")
    finish_distributed(info.world_size)
    return 1 if failed else 0


def _barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _log(terminal: bool, line: str) -> None:
    """A plain line per study when stdout is a file or pipe; on a terminal the tqdm bar says it."""
    if not terminal:
        sys.stdout.flush()
        # reason: the line and its newline in one write, flushed at once, so the lines of torchrun ranks
        # sharing one pipe do not interleave
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
