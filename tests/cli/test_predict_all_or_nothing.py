"""``braunet predict`` writes all or nothing: every input and target checked first, labels and
confidence together, never into an input folder, nothing left behind on a full disk or SIGTERM."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from braunet.cli import main


def _digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def frame(data_dir, tmp_path) -> Path:
    """A 64 x 80 crop of a real CVC frame as a PNG."""
    rgb = tifffile.imread(data_dir / "cvc_clinicdb" / "images" / "1.tif")
    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    Image.fromarray(np.ascontiguousarray(rgb[100:164, 100:180])).save(path)
    return path


def _bad_jpg(folder: Path) -> Path:
    path = folder / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


def _ct_crop(data_dir: Path, folder: Path) -> Path:
    import nibabel as nib

    source = nib.load(data_dir / "totalseg_ct" / "case01sm_ct.nii.gz")
    path = folder / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[:, :, :3], source.affine), path)
    return path


def _tiny_png(folder: Path) -> Path:
    path = folder / "dot.png"
    Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("second", ["corrupt jpeg", "ct volume for an rgb model", "too small"])
def test_a_bad_later_input_is_found_before_any_output(second, frame, data_dir, rgb_model_dir, tmp_path, capsys):
    make = {"corrupt jpeg": _bad_jpg, "ct volume for an rgb model": lambda f: _ct_crop(data_dir, f),
            "too small": _tiny_png}[second]  # fmt: skip
    bad = make(frame.parent)
    out = tmp_path / "out"
    code = main(["predict", str(frame), str(bad), "-o", f"{out}/", "--model", str(rgb_model_dir)])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and bad.name in line
    assert not out.exists() or list(out.iterdir()) == []


def test_a_full_disk_while_writing_the_confidence_leaves_no_labels(frame, rgb_model_dir, tmp_path, capsys,
                                                                   monkeypatch):  # fmt: skip
    from braunet.io import writers

    out = tmp_path / "out"
    out.mkdir()
    (out / "a_labels.png").write_bytes(b"yesterday's labels")
    real, calls = writers.save_image_2d, []

    def disk_fills_up(array, path, **options):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"\x89PNG half")
            raise OSError(28, "No space left on device")
        real(array, path, **options)

    monkeypatch.setattr(writers, "save_image_2d", disk_fills_up)
    code = main(["predict", str(frame), "-o", str(out / "a_labels.png"), "--confidence", str(out / "a_conf.png"),
                 "--model", str(rgb_model_dir)])  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and len(calls) == 2
    assert str(out / "a_conf.png") in line and "No space left" in line and ".a_conf" not in line
    assert os.listdir(out) == ["a_labels.png"] and (out / "a_labels.png").read_bytes() == b"yesterday's labels"
    monkeypatch.undo()
    assert main(["predict", str(frame), "-o", str(out / "a_labels.png"), "--confidence", str(out / "a_conf.png"),
                 "--model", str(rgb_model_dir)]) == 0  # fmt: skip
    assert sorted(os.listdir(out)) == ["a_conf.png", "a_labels.png"]


@pytest.mark.parametrize("target", ["the series folder", "a file in it", "a folder in it"])
def test_output_into_the_input_dicom_folder_is_refused(target, data_dir, ct_model_dir, tmp_path, capsys):
    series = tmp_path / "series"
    shutil.copytree(data_dir / "dcmqi_ct" / "ct_dicom", series)
    before = _digest(series)
    out = {"the series folder": f"{series}/", "a file in it": str(series / "labels.nii.gz"),
           "a folder in it": f"{series / 'labels'}/"}[target]  # fmt: skip
    code = main(["predict", str(series), "-o", out, "--model", str(ct_model_dir)])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "input folder" in line and str(series) in line
    assert _digest(series) == before


_SIGTERM_DURING_WRITE = """
import os, signal, sys, time
from pathlib import Path
from braunet.cli import main
from braunet.io import writers

def killed_while_writing(array, path, **options):
    Path(path).write_bytes(b"\\x89PNG half a file")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

writers.save_image_2d = killed_while_writing
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_a_write_leaves_nothing(frame, rgb_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run(
        [sys.executable, "-c", _SIGTERM_DURING_WRITE, "predict", str(frame), "-o", str(out / "a.png"),
         "--model", str(rgb_model_dir), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 128 + signal.SIGTERM, (run.returncode, run.stderr)
    assert run.stderr.strip().splitlines()[-1] == "braunet predict: terminated"
    assert os.listdir(out) == []
