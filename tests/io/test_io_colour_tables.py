"""Readable label files: palette PNGs that keep class indices, colour tables for 3D Slicer and ITK-SNAP.

The table files are parsed here from their published formats (Slicer: ``index name R G B A``,
``#`` comments; ITK-SNAP: ``IDX R G B A VIS MSH "LABEL"``), not with our own reader.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braunet.classes import SYNAPSE8_CLASSES, SYNAPSE8_COLORS
from braunet.io import read_class_names, read_image, write_labels
from braunet.io.colour_tables import (
    colour_table_paths,
    hex_to_rgb,
    resolve_colours,
    write_colour_tables,
    write_itksnap_labels,
    write_slicer_colour_table,
)

_NAMES = dict(enumerate(SYNAPSE8_CLASSES))


def _slicer_rows(path: Path) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        index, name, *rgba = line.split()
        rows[int(index)] = (name, tuple(int(v) for v in rgba[:4]))
    return rows


def _itksnap_rows(path: Path) -> dict[int, tuple[str, tuple[int, int, int], float, int, int]]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        index, r, g, b, alpha, visible, mesh, label = shlex.split(line)
        rows[int(index)] = (label, (int(r), int(g), int(b)), float(alpha), int(visible), int(mesh))
    return rows


def test_2d_labels_are_palette_pngs_holding_class_indices(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "curvas_ct_slices" / "annotator1"
    image = read_image(folder / "images" / "10001_509.png")
    labels = read_image(folder / "labels_synapse8" / "10001_509.png").array  # kidneys, liver, pancreas
    assert len(np.unique(labels)) >= 4
    out = write_labels(labels, image, tmp_path / "labels.png", class_names=_NAMES, colours=SYNAPSE8_COLORS)
    with Image.open(out) as png:
        assert png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png), labels)  # pixel values are the class indices
        shown = np.asarray(png.convert("RGB"))
    np.testing.assert_array_equal(shown, hex_to_rgb(SYNAPSE8_COLORS)[labels])  # ...drawn in the card's colours
    np.testing.assert_array_equal(read_image(out).array, labels)  # and read back as labels, not colours
    assert read_class_names(out) == _NAMES


def test_without_colours_the_png_stays_grey(shared_data: Path, tmp_path: Path) -> None:
    frame = read_image(shared_data / "cvc_clinicdb" / "masks_binary" / "1.png")
    mask = (frame.array > 127).astype(np.uint8)
    with Image.open(write_labels(mask, frame, tmp_path / "grey.png")) as png:
        assert png.mode == "L"
    with Image.open(write_labels(mask, frame, tmp_path / "pal.png", colours=["#000000", "#56b4e9"])) as png:
        assert png.mode == "P" and png.getpalette()[3:6] == [0x56, 0xB4, 0xE9]


def test_slicer_and_itksnap_tables_name_and_colour_every_class(tmp_path: Path) -> None:
    slicer, itksnap = write_colour_tables(tmp_path / "case_labels.nii.gz", SYNAPSE8_CLASSES, SYNAPSE8_COLORS)
    assert (slicer.name, itksnap.name) == ("case_labels_ColorTable.ctbl", "case_labels_itksnap.txt")
    assert slicer.read_text().startswith("# Color table file")  # the header Slicer expects
    rgb = hex_to_rgb(SYNAPSE8_COLORS)
    slicer_rows, itksnap_rows = _slicer_rows(slicer), _itksnap_rows(itksnap)
    assert sorted(slicer_rows) == sorted(itksnap_rows) == list(range(9))
    for value, name in enumerate(SYNAPSE8_CLASSES):
        colour = tuple(int(c) for c in rgb[value])
        assert slicer_rows[value] == (name, (*colour, 0 if value == 0 else 255))
        assert itksnap_rows[value] == (name, colour, 0.0 if value == 0 else 1.0, int(value > 0), int(value > 0))


def test_names_with_spaces_and_missing_colours(tmp_path: Path) -> None:
    names = {0: "background", 1: 'left "big" kidney', 3: "polyp"}
    slicer_rows = _slicer_rows(write_slicer_colour_table(tmp_path / "t.ctbl", names, None))
    assert [row[0] for row in slicer_rows.values()] == ["background", 'left_"big"_kidney', "polyp"]
    fallback = tuple(int(c) for c in hex_to_rgb(resolve_colours(names))[3])
    assert slicer_rows[3][1][:3] == fallback
    colours = ["#000000", "#ff0000", "#00ff00", "#0000ff"]  # one per value 0..3
    itksnap_rows = _itksnap_rows(write_itksnap_labels(tmp_path / "t.txt", names, colours))
    assert itksnap_rows[1][:2] == ("left 'big' kidney", (255, 0, 0)) and itksnap_rows[3][1] == (0, 0, 255)


def test_one_colour_rule() -> None:
    assert resolve_colours(SYNAPSE8_CLASSES) == SYNAPSE8_COLORS  # the Synapse classes keep their colours
    assert resolve_colours(["bg", "a", "b"], ["#000000", "#ff0000", "#00ff00", "#0000ff"]) == ["#000000", "#ff0000", "#00ff00"]
    custom = resolve_colours([f"c{v}" for v in range(40)], ["#000000", "#ff0000"])  # too few colours: the fallback
    assert custom[0] == "#000000" and len(custom) == 40 and len(set(custom[1:17])) == 16
    assert resolve_colours({0: "bg", 5: "x"})[5] == custom[5]


@pytest.mark.parametrize(("name", "stem"), [("a.nii.gz", "a"), ("b.NII", "b"), ("c.nii.gz.nii", "c.nii.gz")])
def test_table_paths_sit_beside_the_label_map(tmp_path: Path, name: str, stem: str) -> None:
    slicer, itksnap = colour_table_paths(tmp_path / name)
    assert slicer == tmp_path / f"{stem}_ColorTable.ctbl" and itksnap == tmp_path / f"{stem}_itksnap.txt"
