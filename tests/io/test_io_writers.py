"""write_labels / write_image: exact geometry, dtype rules, class names, and atomic refusals."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import braunet.io.writers as writers
from braunet.errors import InputError, OutputError
from braunet.io import Volume, read_class_names, read_image, write_image, write_labels


def test_labels_keep_the_ct_grid_exactly(tmp_path: Path, ct: Volume, ct_labels: np.ndarray) -> None:
    path = write_labels(ct_labels.astype(np.int64), ct, tmp_path / "labels.nii.gz")
    assert path == tmp_path / "labels.nii.gz"
    back = read_image(path)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, ct_labels)
    np.testing.assert_array_equal(back.affine, ct.affine)
    for code in ("qform_code", "sform_code"):
        assert int(back.header[code]) == int(ct.header[code])
    np.testing.assert_array_equal(back.header.get_qform(), ct.header.get_qform())
    assert np.isnan(back.header["scl_slope"]) or back.header["scl_slope"] in (0, 1)  # nothing inherited from the CT


def test_sform_only_source_keeps_its_codes(tmp_path: Path, shared_data: Path) -> None:
    full = read_image(shared_data / "totalseg_ct" / "case01_ct.nii.gz")  # qform_code 0, sform_code 2
    back = read_image(write_labels(np.zeros(full.shape, np.uint8), full, tmp_path / "zeros.nii"))
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (0, 2)
    np.testing.assert_array_equal(back.affine, full.affine)


def test_uint16_when_labels_exceed_255(tmp_path: Path, ct: Volume, ct_labels: np.ndarray) -> None:
    labels = ct_labels.astype(np.int32) * 100  # up to 800
    back = read_image(write_labels(labels, ct, tmp_path / "wide.nii.gz"))
    assert back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, labels)


def test_bool_and_integral_float_labels(tmp_path: Path, ct: Volume, ct_labels: np.ndarray) -> None:
    back = read_image(write_labels(ct_labels > 0, ct, tmp_path / "mask.nii.gz"))
    np.testing.assert_array_equal(back.array, (ct_labels > 0).astype(np.uint8))
    back = read_image(write_labels(ct_labels.astype(np.float32), ct, tmp_path / "float.nii.gz"))
    np.testing.assert_array_equal(back.array, ct_labels)


def test_class_names_round_trip(tmp_path: Path, ct: Volume, ct_labels: np.ndarray, shared_data: Path) -> None:
    names = {0: "background", 1: "aorta", 5: "liver", 8: "stomach"}
    assert read_class_names(write_labels(ct_labels, ct, tmp_path / "named.nii.gz", class_names=names)) == names
    frame = read_image(shared_data / "cvc_clinicdb" / "images" / "1.tif")
    mask = np.zeros(frame.spatial_shape, np.uint8)
    for suffix in (".png", ".tif"):
        path = write_labels(mask, frame, tmp_path / f"polyp{suffix}", class_names={0: "background", 1: "polyp"})
        assert read_class_names(path) == {0: "background", 1: "polyp"}
    assert read_class_names(write_labels(ct_labels, ct, tmp_path / "plain.nii.gz")) is None
    assert read_class_names(shared_data / "kvasir_seg" / "masks" / "cju0qkwl35piu0993l0dewei2.png") is None


def test_labels_on_a_dicom_series(tmp_path: Path, dicom_dir: Path) -> None:
    series = read_image(dicom_dir)
    labels = (series.array > 100).astype(np.uint8)
    back = read_image(write_labels(labels, series, tmp_path / "bone.nii.gz"))
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.affine, series.affine, rtol=0, atol=1e-4)  # NIfTI-1 stores float32
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (1, 1)  # scanner
    assert back.orientation == "LPS"


def test_changed_affine_wins_over_the_kept_header(tmp_path: Path, ct: Volume) -> None:
    shifted_affine = ct.affine.copy()
    shifted_affine[:3, 3] += [10.0, -5.0, 2.5]
    shifted = dataclasses.replace(ct, affine=shifted_affine)  # header still describes the old grid
    back = read_image(write_image(shifted, tmp_path / "shifted.nii.gz"))
    np.testing.assert_array_equal(back.affine, shifted_affine)
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (1, 1)


def test_2d_labels_are_png(tmp_path: Path, shared_data: Path) -> None:
    frame = read_image(shared_data / "cvc_clinicdb" / "images" / "1.tif")
    mask = (read_image(shared_data / "cvc_clinicdb" / "masks" / "1.tif").array > 127).astype(np.uint8)
    back = read_image(write_labels(mask, frame, tmp_path / "1_pred.png"))
    assert back.shape == (288, 384) and back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask)
    wide = mask.astype(np.uint16) * 1000
    np.testing.assert_array_equal(read_image(write_labels(wide, frame, tmp_path / "wide.png")).array, wide)


def test_write_image_2d_round_trips(tmp_path: Path, shared_data: Path) -> None:
    frame = read_image(shared_data / "cvc_clinicdb" / "images" / "1.tif")
    for suffix in (".png", ".tif"):
        np.testing.assert_array_equal(read_image(write_image(frame, tmp_path / f"copy{suffix}")).array, frame.array)


def test_overwrites_an_existing_output(tmp_path: Path, ct: Volume, ct_labels: np.ndarray) -> None:
    target = tmp_path / "labels.nii.gz"
    write_labels(np.zeros(ct.shape, np.uint8), ct, target)
    write_labels(ct_labels, ct, target)
    np.testing.assert_array_equal(read_image(target).array, ct_labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]  # no temporary file left


# --- refused writes: one-line OutputError/InputError naming the path, nothing written ---------


def test_shape_mismatch_names_the_output(refuses, tmp_path: Path, ct: Volume, ct_labels: np.ndarray) -> None:
    target = tmp_path / "labels.nii.gz"
    error = refuses(lambda: write_labels(ct_labels[:, :, :-1], ct, target), InputError,
                    r"label map shape \(122, 101, 29\) does not match the image's grid \(122, 101, 30\)",
                    names=target)  # fmt: skip
    assert str(ct.source) in str(error)
    assert not target.exists()


@pytest.mark.parametrize(
    ("values", "match"),
    [(-1, "0..65535"), (70_000, "0..65535"), (0.5, "whole numbers"), (np.nan, "whole numbers")],
)
def test_bad_label_values(refuses, tmp_path: Path, ct: Volume, values: float, match: str) -> None:
    labels = np.zeros(ct.shape, np.float64 if isinstance(values, float) else np.int64)
    labels[0, 0, 0] = values
    target = tmp_path / "labels.nii.gz"
    refuses(lambda: write_labels(labels, ct, target), InputError, match, names=target)


def test_wrong_suffix(refuses, tmp_path: Path, ct: Volume, shared_data: Path) -> None:
    target = tmp_path / "labels.png"
    refuses(lambda: write_labels(np.zeros(ct.shape, np.uint8), ct, target), OutputError, "NIfTI", names=target)
    frame = read_image(shared_data / "cvc_clinicdb" / "images" / "1.tif")
    target = tmp_path / "labels.nii.gz"
    refuses(lambda: write_labels(np.zeros(frame.spatial_shape, np.uint8), frame, target), OutputError, ".png",
            names=target)  # fmt: skip


def test_missing_output_folder(refuses, tmp_path: Path, ct: Volume, ct_labels: np.ndarray) -> None:
    target = tmp_path / "not" / "there" / "labels.nii.gz"
    refuses(lambda: write_labels(ct_labels, ct, target), OutputError, "does not exist", names=target)


def test_read_only_output_folder(refuses, tmp_path: Path, ct: Volume, ct_labels: np.ndarray) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user writes through chmod 0o555 (root); see test_unwritable_folder_even_for_root")
        target = folder / "labels.nii.gz"
        refuses(lambda: write_labels(ct_labels, ct, target), OutputError, "not writable", names=target)
    finally:
        folder.chmod(0o755)


def test_unwritable_folder_even_for_root(
    refuses, monkeypatch, tmp_path: Path, ct: Volume, ct_labels: np.ndarray
) -> None:
    """os.access says yes to root; the real test is creating the temporary file."""

    def denied(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    target = tmp_path / "labels.nii.gz"
    error = refuses(lambda: write_labels(ct_labels, ct, target), OutputError, r"cannot write \(Permission denied\)",
                    names=target)  # fmt: skip
    assert isinstance(error.__cause__, PermissionError)


def test_failed_write_leaves_the_old_file(
    refuses, monkeypatch, tmp_path: Path, ct: Volume, ct_labels: np.ndarray
) -> None:
    target = write_labels(ct_labels, ct, tmp_path / "labels.nii.gz")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers, "nifti_image", lambda *a, **k: type("Img", (), {"to_filename": disk_full})())
    refuses(lambda: write_labels(np.zeros(ct.shape, np.uint8), ct, target), OutputError, "No space left", names=target)
    np.testing.assert_array_equal(read_image(target).array, ct_labels)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.nii.gz"]


def test_refuses_to_overwrite_the_input(refuses, tmp_path: Path, ct_path: Path, ct_labels: np.ndarray) -> None:
    copy = tmp_path / "ct.nii.gz"
    shutil.copyfile(ct_path, copy)
    volume = read_image(copy)
    refuses(lambda: write_labels(ct_labels, volume, copy), OutputError, "overwrite the input", names=copy)
    refuses(lambda: write_image(volume, tmp_path / "." / "ct.nii.gz"), OutputError, "overwrite the input")
    assert copy.read_bytes() == ct_path.read_bytes()
    assert nib.load(copy).get_data_dtype() == np.int16
