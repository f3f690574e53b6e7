"""The format table: read_image dispatches on it, napari.yaml and the napari reader agree with it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from braunet.errors import InputError
from braunet.io import (
    FORMATS,
    IMAGE_SUFFIXES,
    SUPPORTED_SUFFIXES,
    VOLUME_SUFFIXES,
    file_stem,
    format_of,
    read_image,
    suffixes,
)
from braunet.io.formats import DICOM_SEG_SUFFIXES


def _manifest() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((resources.files("braunet") / "napari.yaml").read_text())


def test_napari_manifest_reader_patterns_and_writer_extensions_are_the_table():
    contributions = _manifest()["contributions"]
    (reader,) = contributions["readers"]
    assert reader["filename_patterns"] == [f"*{suffix}" for suffix in SUPPORTED_SUFFIXES]
    assert reader["accepts_directories"] is True  # DICOM series folders
    # napari picks the writer by suffix: label maps by the table's writable formats, a SEG by its own
    writers = {writer["command"]: writer for writer in contributions["writers"]}
    assert set(writers) == {"napari-braunet.write_labels", "napari-braunet.write_dicom_seg"}
    assert sorted(writers["napari-braunet.write_labels"]["filename_extensions"]) == sorted(suffixes(writable=True))
    assert writers["napari-braunet.write_dicom_seg"]["filename_extensions"] == list(DICOM_SEG_SUFFIXES)
    assert all(writer["layer_types"] == ["labels"] for writer in writers.values())
    assert not set(DICOM_SEG_SUFFIXES) & set(SUPPORTED_SUFFIXES)  # a SEG is written, never read


def test_napari_reader_accepts_exactly_the_table(tmp_path):
    from braunet.napari._reader import napari_get_reader

    for suffix in (*SUPPORTED_SUFFIXES, ".NII.GZ", ".PNG"):
        assert napari_get_reader(str(tmp_path / f"scan{suffix}")) is not None, suffix
    for suffix in (".nrrd", ".dcm", ".mha", ".gz", ".txt"):
        assert napari_get_reader(str(tmp_path / f"scan{suffix}")) is None, suffix


def test_table_partitions_the_suffixes():
    assert set(SUPPORTED_SUFFIXES) == set(IMAGE_SUFFIXES) | set(VOLUME_SUFFIXES)
    assert len(set(SUPPORTED_SUFFIXES)) == len(SUPPORTED_SUFFIXES) == len(IMAGE_SUFFIXES) + len(VOLUME_SUFFIXES)
    assert VOLUME_SUFFIXES == (".nii", ".nii.gz")
    assert set(suffixes(is_2d=True, writable=True)) == {".png", ".tif", ".tiff"}
    for fmt in FORMATS:
        assert all(s == s.lower() and s.startswith(".") for s in fmt.suffixes)
        for suffix in fmt.suffixes:
            assert format_of(f"a{suffix.upper()}") is fmt


@pytest.mark.parametrize(
    ("name", "stem"),
    [("case01_ct.nii.gz", "case01_ct"), ("A.NII", "A"), ("frame.tif", "frame"), ("x.v2.png", "x.v2"),
     ("series.1", "series"), ("noext", "noext")],
)
def test_file_stem(name, stem):
    assert file_stem(name) == stem
    assert file_stem(Path("/some/folder") / name) == stem


def test_read_image_reads_every_kind_by_the_table_and_refuses_the_rest(shared_data, tmp_path):
    ct = shared_data / "totalseg_ct" / "case01sm_ct.nii.gz"
    assert format_of(ct).name == "NIfTI" and not read_image(ct).is_2d
    kvasir = shared_data / "kvasir_seg"
    for path in (shared_data / "cvc_clinicdb" / "images" / "1.tif", kvasir / "images" / "cju0qkwl35piu0993l0dewei2.jpg",
                 kvasir / "masks" / "cju0qkwl35piu0993l0dewei2.png"):
        assert format_of(path).is_2d and read_image(path).is_2d
    nrrd = shared_data / "dcmqi_ct" / "liver_spine_seg.nrrd"
    with pytest.raises(InputError, match=r"unsupported file type; expected a DICOM folder or one of \.nii, \.nii\.gz"):
        read_image(nrrd)
    with pytest.raises(InputError, match="a single DICOM file; give the series folder"):
        read_image(shared_data / "dcmqi_ct" / "ct_dicom" / "01.dcm")


def test_predict_output_names_are_writable_formats_of_the_right_kind():
    from braunet.cli.predict import _IMAGE_SUFFIXES, _VOLUME_SUFFIXES

    assert set(_IMAGE_SUFFIXES) <= set(suffixes(is_2d=True, writable=True))
    assert set(_VOLUME_SUFFIXES) == set(suffixes(is_2d=False, writable=True))
