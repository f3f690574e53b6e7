"""``braunet predict``'s readable outputs end to end: DICOM SEG, statistics, clean-up, palette PNGs, colour tables.

The DICOM and CT cases use the bundled ``ct-abdomen-8`` (real organ labels make the SEG and the
statistics meaningful); the 2-D cases use the tiny seeded checkpoint of the engine tests.
"""

from __future__ import annotations

import csv
import json

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from braunet.cleanup import clean_labels
from braunet.cli import main
from braunet.io.colour_tables import hex_to_rgb, resolve_colours
from braunet.zoo import resolve_model


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main(["predict", *(str(a) for a in argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def ct_card():
    return resolve_model("ct-abdomen-8").load("cpu")[1]


def test_dicom_series_to_seg_statistics_and_colour_tables(data_dir, ct_card, tmp_path, capsys):
    series = data_dir / "dcmqi_ct" / "ct_dicom"
    out, seg_path, stats_path = tmp_path / "labels.nii.gz", tmp_path / "seg.dcm", tmp_path / "stats.json"
    code, stdout, _ = run([series, "-o", out, "--dicom-seg", seg_path, "--statistics", stats_path], capsys)
    assert code == 0 and str(seg_path) in stdout
    labels = np.asarray(nib.load(out).dataobj)
    present = [int(v) for v in np.unique(labels) if v]
    assert 5 in present  # the liver, which the model saw on these slices

    seg = hd.seg.segread(seg_path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [ct_card.class_names[v] for v in present]
    first = pydicom.dcmread(series / "01.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    numbers = list(range(1, len(present) + 1))
    for k, name in enumerate(("03.dcm", "02.dcm", "01.dcm")):  # slice order by position (shared README)
        uid = pydicom.dcmread(series / name).SOPInstanceUID
        frames = seg.get_pixels_by_source_instance([uid], segment_numbers=numbers, assert_missing_frames_are_empty=True)[0]
        for number, value in zip(numbers, present, strict=True):
            np.testing.assert_array_equal(frames[..., number - 1], np.equal(labels[:, :, k].T, value))

    document = json.loads(stats_path.read_text())
    assert document["model"] == "ct-abdomen-8" and document["intensity"] == "HU" and document["cleanup"] is False
    voxel_ml = abs(np.linalg.det(nib.load(out).affine[:3, :3])) / 1000
    for entry in document["classes"]:
        count = int((labels == entry["index"]).sum())
        assert entry["voxels"] == count and entry["volume_ml"] == pytest.approx(count * voxel_ml)
    with (tmp_path / "stats.csv").open() as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ct_card.class_names[1:]
    table = (tmp_path / "labels_ColorTable.ctbl").read_text().splitlines()
    assert "5 liver 230 159 0 255" in table  # index name R G B A, the card's liver colour
    assert '"liver"' in (tmp_path / "labels_itksnap.txt").read_text()


@pytest.mark.parametrize("kind", ["nifti", "png"])
def test_dicom_seg_needs_a_dicom_series_and_is_checked_first(kind, data_dir, tmp_path, capsys):
    image = data_dir / ("totalseg_ct/case01sm_ct.nii.gz" if kind == "nifti" else "cvc_clinicdb/images/1.tif")
    out = tmp_path / ("labels.nii.gz" if kind == "nifti" else "labels.png")
    code, stdout, stderr = run([image, "-o", out, "--dicom-seg", tmp_path / "seg.dcm", "--model", "no-such-model"], capsys)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and str(image) in stderr and "--dicom-seg needs a DICOM series folder" in stderr
    assert list(tmp_path.iterdir()) == []  # refused before the model was even looked up


def test_cleanup_flag_applies_the_3d_cleanup(data_dir, tmp_path, capsys):
    ct = data_dir / "totalseg_ct" / "case01sm_ct.nii.gz"
    assert run([ct, "-o", tmp_path / "raw.nii.gz"], capsys)[0] == 0
    args = [ct, "-o", tmp_path / "clean.nii.gz", "--cleanup", "--statistics", tmp_path / "s.json"]
    assert run(args, capsys)[0] == 0
    raw = np.asarray(nib.load(tmp_path / "raw.nii.gz").dataobj)
    cleaned = np.asarray(nib.load(tmp_path / "clean.nii.gz").dataobj)
    assert not np.array_equal(raw, cleaned)  # the slice-wise prediction has stray pieces to remove
    np.testing.assert_array_equal(cleaned, clean_labels(raw))
    assert json.loads((tmp_path / "s.json").read_text())["cleanup"] is True


def test_2d_outputs_palette_overlay_and_statistics(data_dir, rgb_model_dir, tmp_path, capsys):
    from braunet.model import read_card

    card = read_card(rgb_model_dir)
    image = data_dir / "cvc_clinicdb" / "images" / "13.tif"
    out, overlay = tmp_path / "labels.png", tmp_path / "overlay.png"
    argv = [image, "-o", out, "--overlay", overlay, "--statistics", tmp_path / "s.json", "--model", rgb_model_dir]
    assert run(argv, capsys)[0] == 0
    with Image.open(out) as png:
        assert png.mode == "P"
        labels = np.asarray(png)
        palette = np.asarray(png.getpalette()[: 3 * len(card.class_names)], np.uint8).reshape(-1, 3)
    assert set(np.unique(labels)) == {0, 1}  # values are the class indices...
    np.testing.assert_array_equal(palette, hex_to_rgb(resolve_colours(card.class_names, card.class_colors)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png", "overlay.png", "s.csv", "s.json"]  # no tables for PNG

    import tifffile

    frame = tifffile.imread(image)
    with Image.open(overlay) as png:
        picture = np.asarray(png.convert("RGB"))
    assert picture.shape == frame.shape
    np.testing.assert_array_equal(picture[labels == 0], frame[labels == 0])  # unlabelled pixels are the image
    assert np.any(picture[labels == 1] != frame[labels == 1])
    (polyp,) = json.loads((tmp_path / "s.json").read_text())["classes"]
    assert polyp["voxels"] == int(labels.sum()) and polyp["volume_ml"] is None


def test_several_inputs_get_their_own_extra_outputs(data_dir, rgb_model_dir, tmp_path, capsys):
    images = [data_dir / "cvc_clinicdb" / "images" / f"{k}.tif" for k in (1, 13)]
    argv = [*images, "-o", tmp_path / "labels", "--statistics", tmp_path / "stats", "--overlay", tmp_path / "pictures",
            "--model", rgb_model_dir]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == [
        "13_statistics.csv", "13_statistics.json", "1_statistics.csv", "1_statistics.json",
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["13_overlay.png", "1_overlay.png"]


def test_volume_overlay_is_a_row_of_axial_slices(data_dir, ct_model_dir, tmp_path, capsys):
    ct = data_dir / "totalseg_ct" / "case01sm_ct.nii.gz"  # 122 x 101 x 30 voxels, RAS
    assert run([ct, "-o", tmp_path / "l.nii.gz", "--overlay", tmp_path / "o.png", "--model", ct_model_dir], capsys)[0] == 0
    with Image.open(tmp_path / "o.png") as png:
        assert png.mode == "RGB" and png.height == 101 and png.width % 122 == 0 and png.width >= 122
