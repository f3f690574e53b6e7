"""``braunet finetune`` reports each class's held-back Dice and HD95 before -> after (text and --json):
HD95 in mm for a CT volume, in pixels for 2-D frames."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import tifffile

from braunet.cli import main


def test_ct_volume_per_class_in_mm(ct_model_dir, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BRAUNET_MODELS_DIR", str(tmp_path / "library"))
    folder = data_dir / "totalseg_ct"
    ct, seg = nib.load(folder / "case01sm_ct.nii.gz"), nib.load(folder / "case01sm_label_synapse8.nii.gz")
    for image, name in ((ct, "ct"), (seg, "labels")):  # 4 axial slices through the liver and kidneys
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, 14:18], image.affine, image.header),
                 tmp_path / f"{name}.nii.gz")
    args = ["finetune", "--model", str(ct_model_dir), "--images", str(tmp_path / "ct.nii.gz"),
            "--labels", str(tmp_path / "labels.nii.gz"), "--time-budget", "3", "--device", "cpu",
            "--out", str(tmp_path / "v2")]  # fmt: skip
    assert main([*args, "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["hd95_unit"] == "mm" and "liver" in outcome["per_class"]
    liver = outcome["per_class"]["liver"]
    assert set(liver) == {"dice_before", "dice_after", "hd95_before", "hd95_after"}
    assert math.isclose(np.mean([c["dice_before"] for c in outcome["per_class"].values()]), outcome["dice_before"],
                        abs_tol=1e-3)  # rounded to 4 places per class
    assert liver["hd95_before"] is None or liver["hd95_before"] >= 0

    args[-1] = str(tmp_path / "v2-text")
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("class"))
    assert "Dice before -> after" in lines[header] and "HD95 (mm) before -> after" in lines[header]
    assert any(line.split()[0] == "liver" for line in lines[header + 1:])


def test_2d_frames_per_class_in_pixels(rgb_model_dir, data_dir, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for frame in (1, 13, 26, 38):
        tifffile.imwrite(images / f"{frame}.tif", tifffile.imread(data_dir / "cvc_clinicdb" / "images" / f"{frame}.tif"))
        tifffile.imwrite(masks / f"{frame}.tif", tifffile.imread(data_dir / "cvc_clinicdb" / "masks" / f"{frame}.tif"))
    assert main(["finetune", "--model", str(rgb_model_dir), "--images", str(images), "--labels", str(masks),
                 "--time-budget", "3", "--device", "cpu", "--out", str(tmp_path / "v2"), "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["hd95_unit"] == "px" and list(outcome["per_class"]) == ["lesion"]
