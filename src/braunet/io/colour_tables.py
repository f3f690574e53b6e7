"""Class colours for viewers: "#rrggbb" strings, PNG palettes, and colour tables beside a label map.

A NIfTI label map holds numbers; the viewers clinicians use read names and colours from a file
beside it. Two are written, one per viewer family:

* 3D Slicer colour table (``<stem>_ColorTable.ctbl``, the name Slicer itself gives a labelmap's
  table): ``# Color table file`` header, then ``index name R G B A`` per line (0-255; spaces in
  names become underscores, as the format requires). Load it with the labelmap (Add Data) and
  choose it as the labelmap's colour node.
* ITK-SNAP label description file (``<stem>_itksnap.txt``): ``IDX R G B A VIS MSH "LABEL"`` per
  line, alpha 0..1 (Segmentation > Import Label Descriptions).

The background (value 0) is listed fully transparent and hidden. :func:`resolve_colours` is the one
colour rule (files, tables, napari layers): the card's colours when they cover every class, else the
Synapse colours for the Synapse classes, else Okabe-Ito and more in turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from braunet._atomic import write_text
from braunet.classes import SYNAPSE8_CLASSES, SYNAPSE8_COLORS
from braunet.io.formats import file_stem

__all__ = [
    "colour_table_paths",
    "hex_to_rgb",
    "resolve_colours",
    "write_colour_tables",
    "write_itksnap_labels",
    "write_slicer_colour_table",
]

# Fallback colours for classes without card colours (Okabe-Ito, colour-blind safe, then more), used in turn.
_PALETTE = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#8f63c8",
            "#999999", "#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494"]  # fmt: skip


def hex_to_rgb(colours: Sequence[str]) -> np.ndarray:
    """``["#rrggbb", ...]`` -> ``(K, 3)`` uint8."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.uint8).reshape(-1, 3)


def resolve_colours(class_names: Sequence[str] | Mapping[int, str], colours: Sequence[str] | None = None) -> list[str]:
    """One ``"#rrggbb"`` per class value ``0..max``: ``colours`` (a card's ``class_colors``) when it
    covers every class; otherwise the Synapse colours for the Synapse classes, else black for the
    background and :data:`_PALETTE` in turn."""
    names = dict(class_names) if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    count = max(names, default=-1) + 1
    given = list(colours or ())
    if len(given) >= count:
        return given[:count]
    listed = [names.get(value, "") for value in range(count)]
    fallback = list(SYNAPSE8_COLORS) if listed == SYNAPSE8_CLASSES else ["#000000", *_PALETTE]
    while len(fallback) < count:
        fallback += _PALETTE
    return fallback[:count]


def colour_table_paths(label_path: str | PathLike) -> tuple[Path, Path]:
    """``(slicer .ctbl, ITK-SNAP .txt)`` paths beside a NIfTI label map ``<stem>.nii[.gz]``."""
    path = Path(label_path)
    stem = file_stem(path)
    return path.with_name(f"{stem}_ColorTable.ctbl"), path.with_name(f"{stem}_itksnap.txt")


def write_slicer_colour_table(
    path: str | PathLike, class_names: Sequence[str] | Mapping[int, str], colours: Sequence[str] | None
) -> Path:
    """Write a 3D Slicer discrete colour table (``.ctbl``/``.txt``) for ``class_names``; return ``path``."""
    names = _names(class_names)
    rgb = hex_to_rgb(resolve_colours(names, colours))
    lines = ["# Color table file " + Path(path).name, f"# {len(names)} values"]
    for value, name in names.items():
        r, g, b = (int(c) for c in rgb[value])
        lines.append(f"{value} {_slicer_name(name)} {r} {g} {b} {0 if value == 0 else 255}")
    return write_text(path, "\n".join(lines) + "\n")


def write_itksnap_labels(
    path: str | PathLike, class_names: Sequence[str] | Mapping[int, str], colours: Sequence[str] | None
) -> Path:
    """Write an ITK-SNAP label description file for ``class_names``; return ``path``."""
    names = _names(class_names)
    rgb = hex_to_rgb(resolve_colours(names, colours))
    lines = [
        "# ITK-SnAP Label Description File (written by napari-braunet)",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
    ]
    for value, name in names.items():
        r, g, b = (int(c) for c in rgb[value])
        shown = 0 if value == 0 else 1
        label = name.replace('"', "'")  # reason: the label is a double-quoted field
        lines.append(f"{value:5d} {r:5d} {g:4d} {b:4d} {shown:8.2f} {shown:3d} {shown:3d}    \"{label}\"")
    return write_text(path, "\n".join(lines) + "\n")


def write_colour_tables(
    label_path: str | PathLike, class_names: Sequence[str] | Mapping[int, str], colours: Sequence[str] | None
) -> tuple[Path, Path]:
    """Write both colour tables beside a NIfTI label map (:func:`colour_table_paths`); return their paths."""
    slicer, itksnap = colour_table_paths(label_path)
    return write_slicer_colour_table(slicer, class_names, colours), write_itksnap_labels(itksnap, class_names, colours)


def _names(class_names: Sequence[str] | Mapping[int, str]) -> dict[int, str]:
    names = dict(class_names) if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    if not names:
        raise ValueError("a colour table needs at least one class name")
    return dict(sorted(names.items()))


def _slicer_name(name: str) -> str:
    return "_".join(name.split()) or "unnamed"

