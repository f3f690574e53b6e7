"""NIfTI reading on the real CT, round trips through write_image, and every refused file."""

from __future__ import annotations

import contextlib
import gzip
import tracemalloc
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braunet.errors import InputError, InputWarning
from braunet.io import Volume, read_image, read_nifti, write_image


def _save(array: np.ndarray, path: Path, affine: np.ndarray | None = None, **header_fields: float) -> Path:
    img = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    for key, value in header_fields.items():
        img.header[key] = value
    nib.save(img, path)
    return path


def test_reads_real_ct_in_file_order(ct: Volume, ct_path: Path) -> None:
    raw = np.asarray(nib.load(ct_path).dataobj)
    assert ct.shape == ct.spatial_shape == (122, 101, 30)
    assert ct.array.dtype == np.int16  # no scaling in the file, so the stored dtype is kept
    np.testing.assert_array_equal(ct.array, raw)
    np.testing.assert_array_equal(ct.affine, nib.load(ct_path).affine)
    assert ct.spacing == (3.0, 3.0, 3.0)
    assert ct.orientation == "RAS"
    assert ct.modality == "unknown" and not ct.is_2d and ct.source == ct_path
    assert int(ct.header["qform_code"]) == 1 and int(ct.header["sform_code"]) == 1


def test_modality_is_only_what_the_caller_says(ct_path: Path) -> None:
    assert read_image(ct_path, modality="CT").modality == "CT"


@pytest.mark.parametrize(
    ("name", "codes"),
    [("case01sm_ct.nii.gz", (1, 1)), ("case01_ct.nii.gz", (0, 2))],
    ids=["qform1-sform1", "qform0-sform2"],
)
def test_round_trip_keeps_voxels_affine_and_codes(shared_data: Path, tmp_path: Path, name: str, codes: tuple) -> None:
    original = read_image(shared_data / "totalseg_ct" / name)
    for suffix in (".nii.gz", ".nii"):
        back = read_image(write_image(original, tmp_path / f"copy{suffix}"))
        assert back.array.dtype == original.array.dtype
        np.testing.assert_array_equal(back.array, original.array)
        np.testing.assert_array_equal(back.affine, original.affine)
        assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == codes
        np.testing.assert_array_equal(back.header.get_qform(), original.header.get_qform())


def test_scaled_data_is_rescaled(tmp_path: Path) -> None:
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    integral = read_nifti(_save(raw, tmp_path / "hu.nii.gz", scl_slope=1.0, scl_inter=-1024.0))
    assert integral.array.dtype == np.int16
    np.testing.assert_array_equal(integral.array, raw.astype(np.int32) - 1024)
    fractional = read_nifti(_save(raw, tmp_path / "half.nii.gz", scl_slope=0.5, scl_inter=-10.0))
    assert fractional.array.dtype == np.float32
    np.testing.assert_allclose(fractional.array, raw * 0.5 - 10.0)


def test_float64_is_read_as_float32(tmp_path: Path) -> None:
    values = np.linspace(-1000, 1000, 24).reshape(2, 3, 4)
    volume = read_nifti(_save(values, tmp_path / "f64.nii.gz"))
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, values, rtol=1e-6)


def test_4d_with_one_time_point_is_squeezed(tmp_path: Path, ct: Volume) -> None:
    path = _save(ct.array[..., None], tmp_path / "t1.nii.gz", ct.affine)
    volume = read_image(path)
    assert volume.shape == ct.shape
    np.testing.assert_array_equal(volume.array, ct.array)


def test_single_slice_3d_nifti_is_a_volume(tmp_path: Path, ct: Volume) -> None:
    volume = read_image(_save(ct.array[:, :, 10:11], tmp_path / "one_slice.nii.gz", ct.affine))
    assert volume.shape == (122, 101, 1) and not volume.is_2d


# --- refused files: one-line InputError naming the file, nothing written, input unchanged ------


def test_missing_file(refuses, tmp_path: Path) -> None:
    missing = tmp_path / "nope.nii.gz"
    refuses(lambda: read_image(missing), InputError, "no such file", names=missing)
    refuses(lambda: read_nifti(missing), InputError, "no such file", names=missing)


def test_empty_file(refuses, tmp_path: Path) -> None:
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    refuses(lambda: read_image(empty), InputError, "empty file", empty, names=empty)


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.99])
def test_truncated_gz(refuses, tmp_path: Path, ct_path: Path, fraction: float) -> None:
    data = ct_path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: int(len(data) * fraction)])
    error = refuses(lambda: read_image(cut), InputError, "truncated or corrupt", cut, names=cut)
    assert isinstance(error.__cause__, EOFError)  # chained, not swallowed


def test_truncated_uncompressed(refuses, tmp_path: Path, ct_path: Path) -> None:
    data = gzip.decompress(ct_path.read_bytes())
    cut = tmp_path / "cut.nii"
    cut.write_bytes(data[: len(data) // 2])
    refuses(lambda: read_image(cut), InputError, "truncated or corrupt", cut, names=cut)
    cut.write_bytes(data[:200])  # inside the 348-byte header
    refuses(lambda: read_image(cut), InputError, "not a readable NIfTI", cut, names=cut)


def test_corrupt_gz_payload(refuses, tmp_path: Path, ct_path: Path) -> None:
    data = bytearray(ct_path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(data))
    refuses(lambda: read_image(bad), InputError, "truncated or corrupt", bad, names=bad)


def test_text_file_named_nii_gz(refuses, tmp_path: Path) -> None:
    text = tmp_path / "notes.nii.gz"
    text.write_text("this is not an image\n" * 20)
    refuses(lambda: read_image(text), InputError, "not a readable NIfTI", text, names=text)


def test_true_4d_volume(refuses, tmp_path: Path, ct: Volume) -> None:
    path = _save(np.stack([ct.array, ct.array], axis=-1), tmp_path / "t2.nii.gz", ct.affine)
    refuses(lambda: read_image(path), InputError, r"4-D NIfTI \(shape \(122, 101, 30, 2\)\)", path, names=path)


def test_2d_nifti(refuses, tmp_path: Path, ct: Volume) -> None:
    path = _save(ct.array[:, :, 0], tmp_path / "slice.nii.gz")
    refuses(lambda: read_image(path), InputError, "2-D NIfTI", path, names=path)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_voxels(refuses, tmp_path: Path, bad_value: float) -> None:
    values = np.zeros((4, 5, 6), dtype=np.float32)
    values[1, 2, 3] = bad_value
    path = _save(values, tmp_path / "bad.nii.gz")
    refuses(lambda: read_image(path), InputError, "1 of 120 voxels are NaN or infinite", path, names=path)


def test_singular_affine(refuses, tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # zero slice spacing, as broken converters write
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), None, header), path)
    refuses(lambda: read_image(path), InputError, "not invertible", path, names=path)


def test_reading_leaves_the_input_untouched(ct_path: Path) -> None:
    before = (ct_path.read_bytes(), ct_path.stat().st_mtime_ns)
    read_image(ct_path)
    assert (ct_path.read_bytes(), ct_path.stat().st_mtime_ns) == before


# --- header problems nibabel fixes on its own: one InputWarning each, no nibabel line on stderr ---


def _raw_nifti(path: Path, header: nib.Nifti1Header, data: bytes) -> Path:
    """Write ``header`` exactly as given (nib.save would repair pixdim and the forms), then ``data``."""
    header["vox_offset"] = 352
    payload = header.binaryblock + bytes(4) + data
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


def _header(shape: tuple[int, ...] = (4, 5, 6), dtype: type = np.int16) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    return header


def _zeros(shape: tuple[int, ...] = (4, 5, 6)) -> bytes:
    return np.zeros(shape, np.int16).tobytes(order="F")


def test_no_qform_or_sform_warns_that_the_orientation_is_guessed(tmp_path: Path, capfd) -> None:
    header = _header()
    header["pixdim"][1:4] = 2.0
    path = _raw_nifti(tmp_path / "noform.nii", header, _zeros())
    with pytest.warns(InputWarning, match=r"noform.nii: no qform or sform .* assumed LAS .* left and right may be swapped"):
        volume = read_image(path)
    assert volume.orientation == "LAS" and volume.spacing == (2.0, 2.0, 2.0)  # what nibabel assumes, as before
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("pixdim", [0.0, -2.0], ids=["zero", "negative"])
def test_bad_voxel_size_warns_what_was_assumed(tmp_path: Path, capfd, pixdim: float) -> None:
    header = _header()
    header.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    header["pixdim"][1:4] = pixdim
    path = _raw_nifti(tmp_path / "pixdim.nii.gz", header, _zeros())
    match = "assumed 1 mm" if pixdim == 0 else "used their absolute values"
    with pytest.warns(InputWarning, match=rf"pixdim.nii.gz: .*voxel size.*{match}"):
        volume = read_image(path)
    assert volume.spacing == (abs(pixdim) or 1.0,) * 3
    assert capfd.readouterr().err == "", "nibabel's own log line reached stderr"


def test_sheared_affine_warns(tmp_path: Path) -> None:
    sheared = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.25, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    header = _header()
    header.set_sform(sheared, code=1)
    path = _raw_nifti(tmp_path / "tilt.nii", header, _zeros())
    with pytest.warns(InputWarning, match=r"tilt.nii: the affine is sheared \(voxel axes 7.13 degrees"):
        volume = read_image(path)
    np.testing.assert_array_equal(volume.affine, sheared)  # kept, never silently squared


def test_qform_and_sform_disagreement_warns_which_one_is_used(tmp_path: Path) -> None:
    header = _header()
    header.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    header.set_sform(np.diag([-2.0, 2.0, 2.0, 1.0]), code=1)
    path = _raw_nifti(tmp_path / "two_forms.nii", header, _zeros())
    with pytest.warns(InputWarning, match=r"qform \(RAS\) and sform \(LAS\) disagree by up to 12.0 mm .* used the sform"):
        volume = read_image(path)
    assert volume.orientation == "LAS"


def test_a_clean_file_gives_no_warning(ct_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(ct_path)


# --- claimed sizes: refused before anything is allocated ----------------------------------------


def _peak_mib(call) -> float:
    tracemalloc.start()
    with contextlib.suppress(InputError):
        call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


@pytest.mark.parametrize(
    ("name", "shape", "match"),
    [
        ("tiny.nii.gz", (2000, 2000, 800), r"claims 12,800,000,000 bytes of voxels; a \d+-byte gzip file holds at most"),
        ("tiny.nii", (10000, 10000, 10000), r"claims 2,000,000,000,000 bytes of voxels from byte 352; the file has 1,024"),
    ],
)
def test_huge_claimed_shape_is_refused_before_reading(refuses, tmp_path: Path, name: str, shape: tuple, match: str) -> None:
    dtype = np.float32 if name.endswith(".gz") else np.int16
    path = _raw_nifti(tmp_path / name, _header(shape, dtype), bytes(1024 - 352 if name.endswith(".nii") else 8))
    assert path.stat().st_size < 1100
    refuses(lambda: read_image(path), InputError, r"truncated or corrupt NIfTI data \(the header " + match, path, names=path)
    assert _peak_mib(lambda: read_image(path)) < 16


def test_memory_budget(refuses, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 20), np.int16), np.eye(4)), path)
    monkeypatch.setenv("BRAUNET_MAX_VOXELS", "1000")
    refuses(lambda: read_image(path), InputError, r"claims 10x10x20 = 2,000 voxels .* more than the limit of 1,000; "
            "set BRAUNET_MAX_VOXELS", path, names=path)  # fmt: skip
    monkeypatch.setenv("BRAUNET_MAX_VOXELS", "2000")
    assert read_image(path).shape == (10, 10, 20)
    monkeypatch.setenv("BRAUNET_MAX_VOXELS", "lots")
    refuses(lambda: read_image(path), InputError, "not a number of voxels")


# --- values float32 cannot hold: named as such, no numpy RuntimeWarning ----------------------


@pytest.mark.parametrize("how", ["float64 data", "scl_slope"])
def test_values_beyond_float32_are_named_as_such(refuses, tmp_path: Path, how: str) -> None:
    path = tmp_path / "wide.nii.gz"
    if how == "float64 data":
        values = np.zeros((4, 5, 6))
        values[0, 0, :2] = (1e39, -3e300)
        _save(values, path)
    else:
        _save(np.full((4, 5, 6), 1000, np.int16), path, scl_slope=1e37, scl_inter=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reason: a numpy "overflow encountered in cast" would raise here
        error = refuses(lambda: read_image(path), InputError, r"voxels are outside the float32 range", path, names=path)
    assert "NaN or infinite" not in str(error)
