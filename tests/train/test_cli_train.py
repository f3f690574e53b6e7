"""``braunet train``, ``braunet evaluate`` and ``braunet finetune`` end to end on real data (tiny preset)."""

from __future__ import annotations

import json
import shutil

import pytest

from braunet.cli import main
from braunet.model import read_card
from tests.train._shared import CVC_FRAMES, data_root, one_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def cvc_folders(tmp_path_factory):
    """Six CVC frames of sequences 1 and 2 in images/ (TIFF) and masks/ (original 8-bit TIFF masks)."""
    root = data_root() / "cvc_clinicdb"
    if not root.is_dir():
        pytest.skip("shared data not found")
    base = tmp_path_factory.mktemp("cvc")
    (base / "images").mkdir()
    (base / "masks").mkdir()
    for frame in CVC_FRAMES[1] + CVC_FRAMES[2]:
        shutil.copy(root / "images" / f"{frame}.tif", base / "images")
        shutil.copy(root / "masks" / f"{frame}.tif", base / "masks")
    return base


def test_train_evaluate_finetune_on_image_folders(cvc_folders, tmp_path, capsys):
    out = tmp_path / "polyp-tiny"
    code = main(["train", "--preset", "tiny", "--num-classes", "1", "--images", str(cvc_folders / "images"),
                 "--labels", str(cvc_folders / "masks"), "--out", str(out), "--epochs", "2", "--batch-size", "2",
                 "--class-names", "background,polyp", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_train"] == 4 and summary["n_val"] == 2 and summary["epochs"] == 2 and summary["steps"] == 4
    card = read_card(out)
    assert card.class_names == ["background", "polyp"] and card.preprocessing["kind"] == "rgb"
    assert card.training["split"].startswith("by group") and card.training["preset"] == "tiny"
    assert card.metrics["validation"]["mean_dice"] == pytest.approx(summary["best_val_dice"])

    assert main(["evaluate", "--model", str(out), "--images", str(cvc_folders / "images"),
                 "--labels", str(cvc_folders / "masks"), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    # 2-D images: HD95 in pixels, named so (issue 12, item 3); the mean is over the classes in the reference
    assert set(report) == {"mean_dice", "mean_hd95_px", "mean_over", "per_class", "n"} and report["n"] == 6
    assert set(report["per_class"]) == {"polyp"} and report["mean_over"] == ["polyp"]
    assert set(report["per_class"]["polyp"]) == {"dice", "hd95_px", "n_scored", "n_in_reference"}
    assert 0 <= report["mean_dice"] <= 1 and report["mean_dice"] == report["per_class"]["polyp"]["dice"]

    tuned = tmp_path / "polyp-tiny-v2"
    assert main(["finetune", "--model", str(out), "--images", str(cvc_folders / "images"),
                 "--labels", str(cvc_folders / "masks"), "--out", str(tuned), "--time-budget", "4", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["n_train"] + outcome["n_heldout"] == 6 and outcome["steps"] >= 1
    assert outcome["heldout"] == "slices" and outcome["heldout_share_of_slice"] is None
    assert outcome["accepted"] == (outcome["dice_after"] > outcome["dice_before"])
    if outcome["accepted"]:
        assert read_card(tuned).parent == f"{card.name}@1" and read_card(tuned).version == 2
    else:
        assert not tuned.exists()


def test_train_and_evaluate_a_ct_volume_split_by_slab(tmp_path, capsys):
    ct = data_root() / "totalseg_ct"
    if not ct.is_dir():
        pytest.skip("shared data not found")
    out = tmp_path / "ct-tiny"
    assert main(["train", "--preset", "tiny", "--num-classes", "9", "--images", str(ct / "case01sm_ct.nii.gz"),
                 "--labels", str(ct / "case01sm_label_synapse8.nii.gz"), "--out", str(out), "--epochs", "1",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["n_train"], summary["n_val"]) == (22, 6)  # 30 slices: top 6 validate, 2-slice gap
    assert "by slab" in summary["split"]
    assert read_card(out).class_names[5] == "liver"
    assert main(["evaluate", "--model", str(out), "--images", str(ct / "case01sm_ct.nii.gz"),
                 "--labels", str(ct / "case01sm_label_synapse8.nii.gz"), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "liver" in table and "mean" in table and "HD95 mm" in table


def test_cli_errors_are_one_line(cvc_folders, tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--images", str(cvc_folders / "images" / "1.tif"),
                 str(cvc_folders / "images" / "13.tif"), "--labels", str(cvc_folders / "masks" / "1.tif"),
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "braunet train: error: 2 image paths but 1 label paths (paired in order)"
    code = main(["train", "--preset", "nope", "--images", str(cvc_folders / "images"),
                 "--labels", str(cvc_folders / "masks"), "--out", str(tmp_path / "x")])
    assert code == 2 and "unknown preset 'nope'" in capsys.readouterr().err
    code = main(["evaluate", "--model", str(tmp_path / "missing"), "--images", str(cvc_folders / "images"),
                 "--labels", str(cvc_folders / "masks")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "missing" in err


def test_resume_from_a_bad_state_file_is_one_line_and_exit_2(cvc_folders, tmp_path, capsys):
    """``train --resume`` with a truncated, malicious or mistyped train_state.pt printed a traceback."""
    import torch

    images, masks = cvc_folders / "images", cvc_folders / "masks"
    out = tmp_path / "run"
    command = ["train", "--preset", "tiny", "--num-classes", "1", "--images", str(images / "1.tif"),
               str(images / "13.tif"), "--labels", str(masks / "1.tif"), str(masks / "13.tif"),
               "--val-images", str(images / "25.tif"), "--val-labels", str(masks / "25.tif"), "--out", str(out),
               "--epochs", "1", "--batch-size", "2"]
    assert main(command) == 0
    capsys.readouterr()
    state = out / "train_state.pt"
    good = state.read_bytes()
    for bad in (good[: len(good) // 3], None, b"\x00" * 64):
        if bad is None:
            torch.save(["not", "a", "state"], state)
        else:
            state.write_bytes(bad)
        weights = (out / "model.safetensors").read_bytes()
        code = main([*command[:-4], "--epochs", "2", "--batch-size", "2", "--resume"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"braunet train: error: {state}: "), err
        assert (out / "model.safetensors").read_bytes() == weights  # nothing was trained or written


def test_settings_file_that_is_not_an_object_is_one_line(cvc_folders, tmp_path, capsys):
    settings = tmp_path / "settings.json"
    for text in ("[1, 2]", "null", "\udcff"):
        settings.write_text(text, encoding="utf-8", errors="surrogateescape")
        code = main(["train", "--preset", "tiny", "--images", str(cvc_folders / "images"), "--labels",
                     str(cvc_folders / "masks"), "--out", str(tmp_path / "x"), "--config", str(settings)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and str(settings) in err, err
