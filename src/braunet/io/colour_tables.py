"""Class colours for viewers: "#rrggbb" strings, PNG palettes, and colour tables beside a label map.

A NIfTI label map holds numbers; the viewers clinicians use read names and colours from a file
beside it. Two are written, one per viewer family:

* 3D Slicer colour table (``<stem>_ColorTable.ctbl``, the name Slicer itself gives a labelmap's
  table): ``# Color table file`` header, then ``index name R G B A`` per line (0-255; spaces in
  names become underscores, as the format requires). Load it with the labelmap (Add Data) and
  choose it as the labelmap's colour node.
* ITK-SNAP label description file (``<stem>_itksnap.txt``): ``IDX R G B A VIS MSH "LABEL"`` per
  line, alpha 0..1 (Segmentation > Import Label Descriptions).

The background (value 0) is listed fully transparent and hidden. Models without colours on their
card get the Okabe-Ito colours in turn, so every class still has a distinct colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from braunet._atomic import write_text
from braunet.io.formats import file_stem

__all__ = [
    "colour_table_paths",
    "hex_to_rgb",
    "resolve_colours",
    "write_colour_tables",
    "write_itksnap_labels",
    "write_slicer_colour_table",
]

# Okabe-Ito (colour-blind safe), without black: used in turn for classes the card gives no colour.
_FALLBACK = ("#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#999999")


def hex_to_rgb(colours: Sequence[str]) -> np.ndarray:
    """``["#rrggbb", ...]`` -> ``(K, 3)`` uint8."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.uint8).reshape(-1, 3)


def resolve_colours(count: int, colours: Sequence[str] | None) -> list[str]:
    """``count`` colours, one per class value: the card's where it has one, else a fallback
    (black for the background, then Okabe-Ito in turn)."""
    given = list(colours or ())
    return [
        given[v] if v < len(given) and given[v] else ("#000000" if v == 0 else _FALLBACK[(v - 1) % len(_FALLBACK)])
        for v in range(count)
    ]


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
    rgb = hex_to_rgb(resolve_colours(max(names) + 1, colours))
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
    rgb = hex_to_rgb(resolve_colours(max(names) + 1, colours))
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

