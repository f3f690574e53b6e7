"""``braunet predict`` end to end on the shared real data: exact geometry, 2-D images, bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from braunet.cli import main


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main(["predict", *(str(a) for a in argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


@pytest.fixture(scope="module")
def ct_path(data_dir) -> Path:
    return data_dir / "totalseg_ct" / "case01sm_ct.nii.gz"


@pytest.fixture(scope="module")
def crop(ct_path, ct_model_dir, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Axial slices 10..19 of the real CT as a NIfTI file, and its labels from ``braunet predict``."""
    folder = tmp_path_factory.mktemp("crop")
    source = nib.load(ct_path)
    affine = source.affine.copy()
    affine[:3, 3] += affine[:3, 2] * 10
    path = folder / "crop.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[:, :, 10:20], affine, source.header), path)
    assert main(["predict", str(path), "-o", str(folder / "labels.nii.gz"), "--model", str(ct_model_dir)]) == 0
    return path, np.asarray(nib.load(folder / "labels.nii.gz").dataobj)


def test_volume_labels_keep_the_exact_affine_shape_and_codes(ct_path, ct_model_dir, tmp_path, capsys):
    out = tmp_path / "labels.nii.gz"
    conf = tmp_path / "conf.nii.gz"
    before = digest(ct_path)
    code, stdout, _ = run([ct_path, "-o", out, "--model", ct_model_dir, "--confidence", conf, "--batch-size", 5], capsys)
    assert code == 0 and str(out) in stdout
    source, labels = nib.load(ct_path), nib.load(out)
    assert np.array_equal(labels.affine, source.affine)
    assert labels.shape == source.shape and labels.get_data_dtype() == np.uint8
    for form in ("qform", "sform"):
        assert int(labels.header[f"{form}_code"]) == int(source.header[f"{form}_code"])
    confidence = nib.load(conf)
    assert np.array_equal(confidence.affine, source.affine) and confidence.get_data_dtype() == np.float32
    assert digest(ct_path) == before  # the input is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temporaries left
        "conf.nii.gz", "labels.nii.gz", "labels_ColorTable.ctbl", "labels_itksnap.txt",
    ]  # fmt: skip


@pytest.mark.parametrize("variant", ["lps", "oblique-permuted"])
def test_reoriented_files_get_reoriented_labels(variant, crop, ct_model_dir, tmp_path, capsys):
    crop_path, reference_labels = crop
    assert len(np.unique(reference_labels)) >= 3  # varied labels, or equality would prove nothing
    source = nib.load(crop_path)
    data = np.asarray(source.dataobj)
    if variant == "lps":  # voxel axes 0 and 1 reversed, affine adjusted: the same physical image
        array, expected = data[::-1, ::-1], reference_labels[::-1, ::-1]
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:2, 3] = np.array(data.shape[:2]) - 1
        affine = source.affine @ flip
    else:  # slices stored on axis 0 and the world frame tilted by 20 degrees (an oblique acquisition)
        array, expected = data.transpose(2, 0, 1), reference_labels.transpose(2, 0, 1)
        to_old = np.zeros((4, 4))
        to_old[2, 0] = to_old[0, 1] = to_old[1, 2] = to_old[3, 3] = 1
        t = np.radians(20)
        tilt = np.array([[1, 0, 0, 0], [0, np.cos(t), -np.sin(t), 0], [0, np.sin(t), np.cos(t), 0], [0, 0, 0, 1]])
        affine = tilt @ source.affine @ to_old
    path = tmp_path / f"{variant}.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array), affine), path)
    out = tmp_path / f"{variant}_labels.nii.gz"
    assert run([path, "-o", out, "--model", ct_model_dir], capsys)[0] == 0
    written = nib.load(out)
    assert np.array_equal(written.affine, nib.load(path).affine)
    assert np.array_equal(np.asarray(written.dataobj), expected)


def test_dicom_folder(data_dir, ct_model_dir, tmp_path, capsys):
    from braunet.io import read_image

    folder = data_dir / "dcmqi_ct" / "ct_dicom"
    out = tmp_path / "dicom_labels.nii.gz"
    assert run([folder, "-o", out, "--model", ct_model_dir], capsys)[0] == 0
    written = nib.load(out)
    assert written.shape == (512, 512, 3)
    np.testing.assert_allclose(written.affine, read_image(folder).affine, atol=1e-4)  # stored as float32 in NIfTI


def test_2d_images_to_png_and_several_inputs_to_a_folder(data_dir, rgb_model_dir, tmp_path, capsys):
    images = [data_dir / "cvc_clinicdb" / "images" / f"{k}.tif" for k in (1, 13)]
    single = tmp_path / "one.png"
    assert run([images[0], "-o", single, "--model", rgb_model_dir], capsys)[0] == 0
    labels = np.asarray(Image.open(single))
    assert labels.shape == tifffile.imread(images[0]).shape[:2] == (288, 384)
    assert set(np.unique(labels)) <= {0, 1}
    folder = tmp_path / "batch"
    code, stdout, _ = run([*images, "-o", folder, "--model", rgb_model_dir, "--confidence", tmp_path / "conf"], capsys)
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["13_labels.png", "1_labels.png"]
    assert np.array_equal(np.asarray(Image.open(folder / "1_labels.png")), labels)
    confidence = np.asarray(Image.open(tmp_path / "conf" / "1_confidence.png"))
    assert confidence.dtype == np.uint8 and np.array_equal(confidence >= 128, labels == 1)


def test_rgba_and_small_images_are_segmented_on_their_own_grid(data_dir, rgb_model_dir, tmp_path, capsys):
    rgb = tifffile.imread(data_dir / "cvc_clinicdb" / "images" / "1.tif")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.ascontiguousarray(rgb[100:120, 50:83])).save(tmp_path / "small.png")  # 20 x 33 px
    out = tmp_path / "out"
    argv = [tmp_path / "rgba.png", tmp_path / "rgb.png", tmp_path / "small.png", "-o", out, "--model", rgb_model_dir]
    assert run(argv, capsys)[0] == 0
    # the alpha channel is dropped on reading (braunet.io), so RGBA gives the RGB answer
    assert np.array_equal(np.asarray(Image.open(out / "rgba_labels.png")), np.asarray(Image.open(out / "rgb_labels.png")))
    assert np.asarray(Image.open(out / "small_labels.png")).shape == (20, 33)


def test_missing_bundled_default_model_is_named(ct_path, tmp_path, capsys, monkeypatch):
    from braunet import zoo

    monkeypatch.setattr(zoo, "bundled_dir", lambda: tmp_path / "no-models")
    code, _, err = run([ct_path, "-o", tmp_path / "x.nii.gz"], capsys)
    assert code == 2 and "ct-abdomen-8" in err and "bundled" in err
    assert not (tmp_path / "x.nii.gz").exists()


# --- bad input: one clear line naming the file, exit code 2, nothing written, input untouched ---


def _truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _nifti(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0])), path)
    return path


BAD_INPUTS = {
    "missing file": (lambda d, t: t / "nope.nii.gz", "no such file"),
    "truncated nifti": (lambda d, t: _truncated(d / "totalseg_ct" / "case01sm_ct.nii.gz", t / "cut.nii.gz"), "cut.nii.gz"),
    "text named nii.gz": (lambda d, t: (t / "notes.nii.gz").write_text("hello\n") and t / "notes.nii.gz", "notes.nii.gz"),
    "4-d volume": (lambda d, t: _nifti(t / "dyn.nii.gz", np.zeros((20, 20, 20, 3), np.int16)), "dyn.nii.gz"),
    "2-d nifti": (lambda d, t: _nifti(t / "flat.nii.gz", np.zeros((40, 40), np.int16)), "flat.nii.gz"),
    "nan voxels": (
        lambda d, t: _nifti(t / "nan.nii.gz", np.where(np.eye(32)[..., None] > 0, np.nan, 0).repeat(4, 2).astype(np.float32)),
        "NaN",
    ),
    "empty dicom folder": (lambda d, t: (t / "empty_dicom").mkdir() or t / "empty_dicom", "empty_dicom"),
    "truncated dicom": (
        lambda d, t: shutil.copytree(d / "dcmqi_ct" / "ct_dicom", t / "cut_dicom") and _truncated(
            d / "dcmqi_ct" / "ct_dicom" / "02.dcm", t / "cut_dicom" / "02.dcm", 0.3
        ).parent,
        "cut_dicom",
    ),
    "corrupt png": (
        lambda d, t: _truncated(d / "cvc_clinicdb" / "masks_binary" / "1.png", t / "broken.png", 0.4),
        "broken.png",
    ),
    "16-bit image": (
        lambda d, t: Image.fromarray(np.full((64, 80), 40000, np.uint16)).save(t / "deep.png") or t / "deep.png",
        "16-bit",
    ),
    "tiny image": (
        lambda d, t: Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(t / "dot.png") or t / "dot.png",
        "too small",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(case, data_dir, ct_model_dir, rgb_model_dir, tmp_path, capsys):
    make, message = BAD_INPUTS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = make(data_dir, inputs)
    before = digest(inputs)
    image = path.suffix == ".png"
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("labels.png" if image else "labels.nii.gz")
    code, stdout, err = run([path, "-o", target, "--model", rgb_model_dir if image else ct_model_dir], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("braunet predict: error: ") and path.name in lines[0] and message in lines[0], lines[0]
    assert list(out.iterdir()) == []
    assert digest(inputs) == before


@pytest.mark.parametrize("where", ["missing folder", "read-only folder", "the input itself"])
def test_bad_output_path(where, ct_path, ct_model_dir, tmp_path, capsys, monkeypatch):
    if where == "missing folder":
        target, message = tmp_path / "not" / "there.nii.gz", "does not exist"
    elif where == "read-only folder":
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        real_access = os.access
        # reason: root ignores permission bits; make os.access answer as it would for a normal user
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == folder and m & os.W_OK else real_access(p, m))
        target, message = folder / "labels.nii.gz", "not writable"
    else:
        copy = tmp_path / "ct.nii.gz"
        shutil.copy(ct_path, copy)
        target, message = copy, "input"
    source = target if where == "the input itself" else ct_path
    before = digest(source)
    code, _, err = run([source, "-o", target, "--model", ct_model_dir], capsys)
    assert code == 2 and message in err and str(target) in err and len(err.strip().splitlines()) == 1
    assert digest(source) == before
    if where != "the input itself":
        assert not target.exists()
    if where == "read-only folder":
        target.parent.chmod(0o755)


def test_option_mistakes_are_one_line_errors(ct_path, ct_model_dir, tmp_path, capsys, monkeypatch):
    import torch

    same = tmp_path / "x.nii.gz"
    code, _, err = run([ct_path, "-o", same, "--confidence", same, "--model", ct_model_dir], capsys)
    assert code == 2 and "--confidence must differ" in err
    code, _, err = run([ct_path, "-o", tmp_path / "x.png", "--model", ct_model_dir], capsys)
    assert code == 2 and "x.png" in err and ".nii.gz" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run([ct_path, "-o", same, "--model", ct_model_dir, "--device", "cuda"], capsys)
    assert code == 2 and "CUDA is not available" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
