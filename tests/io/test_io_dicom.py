"""DICOM series: equivalence with the shared NIfTI conversion, and every refused folder.

The shared ``dcmqi_ct/case03_ct.nii.gz`` is the NIfTI conversion of ``dcmqi_ct/ct_dicom/``:
``nifti[:, :, k] == HU(slice k).T`` with slices sorted by position along the normal
(03.dcm, 02.dcm, 01.dcm) and the LPS affine negated in x and y. Its affine is stored in float32,
so ours (from the DICOM decimal strings, in float64) differs by float32 rounding only.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from braunet.errors import InputError, InputWarning
from braunet.io import read_dicom_series, read_image


def _copy(dicom_dir: Path, folder: Path, names: tuple[str, ...] = ("01", "02", "03")) -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copyfile(dicom_dir / f"{name}.dcm", folder / f"{name}.dcm")
    return folder


def _edit(path: Path, target: Path | None = None, **tags: object) -> Path:
    """Copy a slice with some tags changed (and a new SOPInstanceUID, as a real scanner would)."""
    dataset = pydicom.dcmread(path)
    dataset.SOPInstanceUID = generate_uid()
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    dataset.save_as(target or path)
    return target or path


def _z_moved(dicom_dir: Path, target: Path, z: float) -> Path:
    dataset = pydicom.dcmread(dicom_dir / "01.dcm")
    position = [float(v) for v in dataset.ImagePositionPatient]
    return _edit(dicom_dir / "01.dcm", target, ImagePositionPatient=[position[0], position[1], z])


def test_matches_the_shared_nifti_conversion(shared_data: Path, dicom_dir: Path) -> None:
    volume = read_image(dicom_dir)
    reference = nib.load(shared_data / "dcmqi_ct" / "case03_ct.nii.gz")
    assert volume.shape == (512, 512, 3)
    assert volume.array.dtype == np.int16  # RescaleSlope 1, RescaleIntercept -1024
    np.testing.assert_array_equal(volume.array, np.asarray(reference.dataobj))
    np.testing.assert_allclose(volume.affine, reference.affine, rtol=0, atol=1e-4)
    assert np.abs(volume.affine - reference.affine).max() < 1e-6  # float32 rounding of the NIfTI copy
    assert volume.orientation == "LPS"
    np.testing.assert_allclose(volume.spacing, (0.810547, 0.810547, 1.0), atol=1e-6)
    assert volume.modality == "CT" and volume.source == dicom_dir and volume.header is None


def test_axis_convention_against_pydicom(dicom_dir: Path) -> None:
    volume = read_dicom_series(dicom_dir)
    lowest = pydicom.dcmread(dicom_dir / "03.dcm")  # z = -128.69, the most inferior slice
    hu = lowest.pixel_array.astype(np.int32) + int(lowest.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[:, :, 0], hu.T)
    corner = volume.affine @ [0, 0, 0, 1]
    np.testing.assert_allclose(corner[:3], [235.2, 226.8, -128.69], atol=1e-5)  # LPS origin with x, y negated


def test_file_names_and_extra_files_do_not_matter(tmp_path: Path, dicom_dir: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for source, name in (("01", "b"), ("02", "c"), ("03", "a")):  # name order no longer position order
        shutil.copyfile(dicom_dir / f"{source}.dcm", folder / name)
    (folder / "README.txt").write_text("exported from PACS\n")
    (folder / "nested").mkdir()
    np.testing.assert_array_equal(read_image(folder).array, read_image(dicom_dir).array)


def test_two_contiguous_slices_are_accepted(tmp_path: Path, dicom_dir: Path) -> None:
    volume = read_image(_copy(dicom_dir, tmp_path / "two", ("01", "02")))
    assert volume.shape == (512, 512, 2)
    assert volume.spacing[2] == pytest.approx(1.0)


def test_fractional_rescale_gives_float32(tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "scaled")
    for path in folder.iterdir():
        _edit(path, RescaleSlope=0.5, RescaleIntercept=-10)
    volume = read_image(folder)
    assert volume.array.dtype == np.float32
    raw = pydicom.dcmread(dicom_dir / "03.dcm").pixel_array
    np.testing.assert_allclose(volume.array[:, :, 0], raw.T * 0.5 - 10)


# --- refused folders: one-line InputError naming the folder or file, nothing written ----------


def test_single_file_asks_for_the_folder(refuses, dicom_dir: Path) -> None:
    one = dicom_dir / "01.dcm"
    refuses(lambda: read_image(one), InputError, "give the series folder", one, names=one)


def test_missing_folder(refuses, tmp_path: Path) -> None:
    missing = tmp_path / "no_series"
    refuses(lambda: read_dicom_series(missing), InputError, "no such folder", names=missing)


def test_empty_folder(refuses, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    refuses(lambda: read_image(folder), InputError, "empty DICOM folder", names=folder)
    (folder / "notes.txt").write_text("no images here\n")
    match = r"empty DICOM folder \(no DICOM image files among 1 files"
    refuses(lambda: read_image(folder), InputError, match, names=folder)
    (folder / "series_1").mkdir()
    refuses(lambda: read_image(folder), InputError, "subfolders are not searched", names=folder)


@pytest.mark.parametrize(
    ("keep", "match"),
    [(200, "without pixel data"), (1000, "without pixel data"), (5000, "cannot decode"), (300_000, "cannot decode")],
    ids=["in-file-meta", "in-header", "pixels-started", "half-pixels"],
)
def test_truncated_slice(refuses, tmp_path: Path, dicom_dir: Path, keep: int, match: str) -> None:
    folder = _copy(dicom_dir, tmp_path / "cut")
    cut = folder / "02.dcm"
    cut.write_bytes((dicom_dir / "02.dcm").read_bytes()[:keep])
    refuses(lambda: read_image(folder), InputError, match, folder, names=cut)


def test_mixed_series_are_named(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "mixed")
    other = generate_uid()
    _edit(folder / "02.dcm", SeriesInstanceUID=other)
    original = str(pydicom.dcmread(dicom_dir / "01.dcm").SeriesInstanceUID)
    error = refuses(lambda: read_image(folder), InputError, "holds 2 DICOM series", folder, names=folder)
    assert f"{original} (2 files)" in str(error) and f"{other} (1 files)" in str(error)


def test_missing_middle_of_two_uses_nominal_spacing(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    # 2 mm between the remaining slices, SliceThickness 1.25 mm: 2 > 1.5 x 1.25
    folder = _copy(dicom_dir, tmp_path / "gap2", ("01", "03"))
    refuses(lambda: read_image(folder), InputError, "missing slices: 2.000 mm between 03.dcm and 01.dcm", folder,
            names=folder)  # fmt: skip


def test_missing_slice_among_several(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "gap4")
    _z_moved(dicom_dir, folder / "04.dcm", -124.690002)  # 01 is at -126.69: a 2 mm step after three 1 mm steps
    refuses(lambda: read_image(folder), InputError, "missing slices: 2.000 mm between 01.dcm and 04.dcm", folder,
            names=folder)  # fmt: skip


def test_duplicate_position(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "dup")
    _edit(dicom_dir / "02.dcm", folder / "02b.dcm")
    refuses(lambda: read_image(folder), InputError, "same position", folder, names=folder)


def test_irregular_spacing(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "uneven")
    _z_moved(dicom_dir, folder / "04.dcm", -125.39)  # steps 1.0, 1.0, 1.3
    refuses(lambda: read_image(folder), InputError, "irregular slice positions", folder, names=folder)


def test_differing_orientation(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "tilted")
    _edit(folder / "02.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0.8, -0.6])
    refuses(lambda: read_image(folder), InputError, "differ in orientation", folder, names=folder)


def test_missing_geometry(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "nogeom")
    dataset = pydicom.dcmread(folder / "02.dcm")
    del dataset.ImagePositionPatient
    dataset.save_as(folder / "02.dcm")
    refuses(lambda: read_image(folder), InputError, "no ImagePositionPatient", folder, names=folder / "02.dcm")


# --- HU scale: CT without RescaleIntercept is judged by where air is, or refused -------------------


def _rewritten(dicom_dir: Path, folder: Path, shift: int = 0, drop: tuple[str, ...] = (), **tags: object) -> Path:
    """Copies of the three slices with the stored values shifted (padding kept), tags dropped or set."""
    folder.mkdir()
    for source in sorted(dicom_dir.iterdir()):
        dataset = pydicom.dcmread(source)
        pixels = dataset.pixel_array
        padding = pixels == dataset.PixelPaddingValue
        dataset.PixelData = np.where(padding, pixels, pixels + shift).astype(np.int16).tobytes()
        for keyword in drop:
            delattr(dataset, keyword)
        for keyword, value in tags.items():
            setattr(dataset, keyword, value)
        dataset.save_as(folder / source.name)
    return folder


@pytest.mark.parametrize(
    ("shift", "match"),
    [(0, "darkest voxels are at 0, air with the usual offset of 1024: assumed intercept -1024"),
     (-1024, "darkest voxels are at -1024, air in HU already: assumed intercept 0")],
    ids=["offset-1024", "stored-as-HU"],
)
def test_ct_without_rescale_tags_is_judged_by_air(tmp_path: Path, dicom_dir: Path, shift: int, match: str) -> None:
    folder = _rewritten(dicom_dir, tmp_path / "norescale", shift, drop=("RescaleIntercept", "RescaleSlope"))
    with pytest.warns(InputWarning, match=rf"norescale: CT without RescaleIntercept \(signed pixels\); its {match}"):
        volume = read_image(folder)
    reference = read_image(dicom_dir).array
    tissue = reference > -2000 - 1024  # the padding keeps its stored value, so it differs by the offset
    np.testing.assert_array_equal(volume.array[tissue], reference[tissue])


def test_ct_without_intercept_and_no_air_is_refused(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _rewritten(dicom_dir, tmp_path / "unclear", 500, drop=("RescaleIntercept",))
    refuses(lambda: read_image(folder), InputError, r"darkest voxels are at 500, .* the HU scale is unknown: add "
            "RescaleIntercept", folder, names=folder)  # fmt: skip


def test_intercept_on_some_slices_only_is_refused(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "partly")
    dataset = pydicom.dcmread(folder / "02.dcm")
    del dataset.RescaleIntercept
    dataset.save_as(folder / "02.dcm")
    refuses(lambda: read_image(folder), InputError, r"RescaleIntercept on some slices only \(02.dcm has none\)",
            folder, names=folder)  # fmt: skip


def test_mr_without_intercept_is_read_as_stored_and_says_mr(tmp_path: Path, dicom_dir: Path) -> None:
    folder = _rewritten(dicom_dir, tmp_path / "mr", drop=("RescaleIntercept", "RescaleSlope"), Modality="MR")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reason: MR has no HU scale to infer, so nothing is assumed
        volume = read_image(folder)
    assert volume.modality == "MR"
    np.testing.assert_array_equal(volume.array[:, :, 0], pydicom.dcmread(dicom_dir / "03.dcm").pixel_array.T)


def test_no_modality_tag_is_unknown(tmp_path: Path, dicom_dir: Path) -> None:
    folder = _rewritten(dicom_dir, tmp_path / "untagged", drop=("Modality",))
    assert read_image(folder).modality == "unknown"


def test_malformed_rescale_value_is_one_line(refuses, tmp_path: Path, dicom_dir: Path) -> None:
    folder = _copy(dicom_dir, tmp_path / "garbled")
    raw = (folder / "02.dcm").read_bytes()
    marker = raw.index(b"\x28\x00\x53\x10")  # (0028,1053) RescaleSlope, implicit VR little endian
    length = int.from_bytes(raw[marker + 4 : marker + 8], "little")
    (folder / "02.dcm").write_bytes(raw[: marker + 8] + b"x" * length + raw[marker + 8 + length :])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reason: pydicom's "invalid value for VR DS" must not reach the user
        refuses(lambda: read_image(folder), InputError, "RescaleSlope is not a number", folder, names=folder / "02.dcm")
