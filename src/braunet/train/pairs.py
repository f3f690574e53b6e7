"""Pairing image files with their label files, as the CLI and the recipes receive them.

Which files count as images comes from the reader table (:data:`braunet.io.FORMATS`), so a folder
is listed exactly as :func:`braunet.io.read_image` would read it; a folder of ``.dcm`` files is
one DICOM series, not a folder of images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from braunet.errors import InputError
from braunet.io import SUPPORTED_SUFFIXES, file_stem, format_of
from braunet.io.formats import DICOM_FILE_SUFFIXES

__all__ = ["collect_pairs", "is_volume_path"]


def is_volume_path(path: Path) -> bool:
    """True for a 3-D input: a DICOM series folder or a file of a volume format (NIfTI)."""
    if path.is_dir():
        return True
    fmt = format_of(path)
    return fmt is not None and not fmt.is_2d


def _list_files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    usable = [p for p in files if format_of(p) is not None]
    if not usable:
        raise InputError(f"{folder}: no image files (expected {', '.join(SUPPORTED_SUFFIXES)})")
    return usable


def _is_dicom_series(folder: Path) -> bool:
    files = [p for p in folder.iterdir() if p.is_file()]
    shown = [p for p in files if not p.name.startswith(".")]
    return bool(files) and all(p.suffix.lower() in (*DICOM_FILE_SUFFIXES, "") for p in shown)


def collect_pairs(images: Sequence[str | os.PathLike], labels: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Pair image and label paths as the CLI receives them.

    * One folder of images and one folder of labels: matched by file stem
      (:func:`braunet.io.file_stem`: ``frame.tif`` with ``frame.png``); every image needs a label,
      extra labels are ignored. A folder of ``.dcm`` files is one DICOM series, not a folder of images.
    * Otherwise two equally long lists of files (or DICOM folders), paired in order.

    Raises:
        InputError: missing paths, unequal counts or images without a label (named).
    """
    image_paths, label_paths = [Path(p).expanduser() for p in images], [Path(p).expanduser() for p in labels]
    for path in image_paths + label_paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    if not image_paths or not label_paths:
        raise InputError("give at least one image and one label path")
    if (
        len(image_paths) == len(label_paths) == 1
        and image_paths[0].is_dir()
        and label_paths[0].is_dir()
        and not _is_dicom_series(image_paths[0])
    ):
        by_stem: dict[str, Path] = {}
        for path in _list_files(label_paths[0]):
            by_stem.setdefault(file_stem(path), path)
        pairs, missing = [], []
        for path in _list_files(image_paths[0]):
            if file_stem(path) in by_stem:
                pairs.append((path, by_stem[file_stem(path)]))
            else:
                missing.append(path.name)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputError(
                f"{label_paths[0]}: no label for {len(missing)} image(s) of {image_paths[0]}: {shown} "
                "(labels are matched by file name without suffix)"
            )
        return pairs
    if len(image_paths) != len(label_paths):
        raise InputError(f"{len(image_paths)} image paths but {len(label_paths)} label paths (paired in order)")
    return list(zip(image_paths, label_paths, strict=True))
