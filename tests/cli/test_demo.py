"""``braunet demo``: the README's main job, on the shared sample CT with the bundled default model."""

import os

import nibabel as nib
import numpy as np
import pytest
from skimage.io import imread

from braunet.cli import main
from braunet.zoo import list_models


@pytest.fixture(autouse=True)
def offline_data(shared_data, monkeypatch):
    monkeypatch.setenv("BRAUNET_DATA_DIR", str(shared_data))


@pytest.mark.skipif("ct-abdomen-8" not in list_models(), reason="bundled model ct-abdomen-8 not in this checkout")
def test_demo_writes_labels_on_the_ct_grid_and_an_overlay(tmp_path, shared_data, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    ct = nib.load(shared_data / "totalseg_ct" / "case01_ct.nii.gz")
    labels = nib.load(out / "ct_abdomen_labels.nii.gz")
    assert labels.shape == ct.shape
    assert np.array_equal(labels.affine, ct.affine)
    assert set(np.unique(np.asanyarray(labels.dataobj))) <= set(range(9))
    picture = imread(out / "ct_abdomen_overlay.png")
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[0] == 2 * ct.shape[1]
    assert oct(os.stat(out / "ct_abdomen_overlay.png").st_mode & 0o777) != oct(0o600)  # umask mode, not mkstemp's
    report = capsys.readouterr().out
    mean_dice = float(report.split("mean Dice")[1].split()[0])
    # This CT is in the model's training data, so agreement is high when the whole chain (sample
    # fetch, preprocessing, slice view, reorientation, writing) is right; a flipped or shifted
    # geometry anywhere drops it far below this.
    assert mean_dice > 0.6, report


def test_demo_refuses_an_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert main(["demo", "-o", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"
