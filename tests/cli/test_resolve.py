"""One model resolver (braunet.zoo.resolve_model): bundled names, NAME@N saved versions, paths,
ambiguous names, anchors from the source, the default-model rule, and the CLI through it."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from braunet.cli import main
from braunet.errors import CheckpointError
from braunet.model import load_checkpoint
from braunet.train.versions import save_version
from braunet.zoo import default_model, library_dir, list_versions, load_model, resolve_model


def _child(folder, version: int = 2, dice=(0.5, 0.625)):
    """(model, card) of a fine-tuned-looking child of the model in ``folder``."""
    model, card = load_checkpoint(folder)
    child = copy.deepcopy(card)
    child.version, child.parent = version, f"{card.name}@{version - 1}"
    child.metrics = {"finetune": {"heldout_dice_before": dice[0], "heldout_dice_after": dice[1]}}
    return model, child


def test_bundled_names_and_their_version_one():
    source = resolve_model("polyp")
    assert source.kind == "bundled" and source.ref == "polyp" and source.version == 1 and source.parent is None
    assert source.folder.name == "polyp" and source.anchors == source.folder / "anchors.npz"
    assert resolve_model("polyp@1").folder == source.folder  # no saved v1: the bundled model is version 1
    with pytest.raises(CheckpointError, match=r"polyp@3 not found"):
        resolve_model("polyp@3")


def test_saved_versions_live_in_one_library(rgb_model_dir, model_library):
    assert library_dir() == model_library  # tests set BRAUNET_MODELS_DIR to a fresh folder
    model, card = _child(rgb_model_dir)
    folder = save_version(model, card, anchors_from=None)  # default root: the library
    assert folder == model_library / "tiny-rgb" / "v2"
    source = resolve_model("tiny-rgb@2")
    assert (source.kind, source.ref, source.folder, source.parent) == ("version", "tiny-rgb@2", folder, "tiny-rgb@1")
    assert source.anchors is None
    assert [s.ref for s in list_versions()] == ["tiny-rgb@2"]
    with pytest.raises(CheckpointError, match=r"not a bundled model; name one of its saved versions: tiny-rgb@2"):
        resolve_model("tiny-rgb")
    loaded, loaded_card = load_model("tiny-rgb@2")
    assert loaded_card.version == 2 and not loaded.training


def test_paths_and_the_ambiguous_bare_name(rgb_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "polyp").mkdir()  # a data folder called polyp does not shadow the bundled model
    assert resolve_model("polyp").kind == "bundled"
    shutil.rmtree(tmp_path / "polyp")
    shutil.copytree(rgb_model_dir, tmp_path / "polyp")  # a model folder called polyp: refused, both named
    with pytest.raises(CheckpointError, match=r"ambiguous: the bundled model polyp and the model folder .*polyp; "
                                              r"write polyp@1 for the bundled model or ./polyp for the folder"):
        resolve_model("polyp")
    local = resolve_model("./polyp")
    assert local.kind == "path" and local.card.name == "tiny-rgb" and local.folder.resolve() == tmp_path / "polyp"
    assert resolve_model("polyp@1").kind == "bundled"
    shutil.copytree(rgb_model_dir, tmp_path / "mine")
    assert resolve_model("mine").kind == "path"  # a bare name that is only a model folder here
    assert resolve_model(str(tmp_path / "mine")).folder == tmp_path / "mine"
    code = main(["evaluate", "--model", "polyp", "--images", "x.png", "--labels", "y.png"])
    err = capsys.readouterr().err
    assert code == 2 and "ambiguous" in err and len(err.strip().splitlines()) == 1


def test_one_default_model_rule():
    assert default_model("volume") == "ct-abdomen-8" and default_model("image") == "polyp"
    assert default_model("image", sample="dermoscopy") == "skin-lesion"
    assert default_model("image", sample="colonoscopy") == "polyp"
    assert default_model("volume", sample="ct_abdomen") == "ct-abdomen-8"
    with pytest.raises(ValueError, match="input kind"):
        default_model("video")


def test_finetune_device_defaults_to_auto_like_the_other_commands():
    from braunet.cli import _build_parser

    parser = _build_parser()
    common = ["--images", "a", "--labels", "b"]
    assert parser.parse_args(["finetune", "--model", "polyp", *common]).device == "auto"
    assert parser.parse_args(["predict", "x.png", "-o", "y.png"]).device == "auto"
    assert parser.parse_args(["evaluate", "--model", "polyp", *common]).device == "auto"
    assert parser.parse_args(["finetune", "--model", "polyp", *common]).out is None  # default: the library


def test_saved_version_is_listed_and_predicts(rgb_model_dir, data_dir, tmp_path, capsys):
    model, card = _child(rgb_model_dir)
    save_version(model, card)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "saved versions in" in out
    row = next(line for line in out.splitlines() if line.startswith("tiny-rgb@2"))
    assert row.split()[1] == "tiny-rgb@1" and "0.500 -> 0.625" in row
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    saved = [r for r in rows if r.get("ref") == "tiny-rgb@2"]
    assert len(saved) == 1 and saved[0]["parent"] == "tiny-rgb@1" and saved[0]["heldout_dice_after"] == 0.625
    frame = np.ascontiguousarray(tifffile.imread(data_dir / "cvc_clinicdb" / "images" / "1.tif")[:64, :64])
    Image.fromarray(frame).save(tmp_path / "frame.png")
    assert main(["predict", str(tmp_path / "frame.png"), "-o", str(tmp_path / "labels.png"), "--model",
                 "tiny-rgb@2", "--device", "cpu"]) == 0
    assert "(tiny-rgb)" in capsys.readouterr().out and (tmp_path / "labels.png").is_file()


def test_finetune_command_saves_into_the_library(data_dir, rgb_model_dir, tmp_path, model_library, capsys,
                                                 monkeypatch):
    """Without --out an accepted version goes where the Fine-tune widget saves (the library) as NAME@N,
    with the anchor set of the model's own folder (replayed, and copied along)."""
    from braunet.train import finetune as finetune_module

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for frame in (1, 13, 26, 38):
        shutil.copy(data_dir / "cvc_clinicdb" / "images" / f"{frame}.tif", images)
        shutil.copy(data_dir / "cvc_clinicdb" / "masks" / f"{frame}.tif", masks)
    renamed = tmp_path / "renamed"  # a copied model under another name: its anchors still come along
    shutil.copytree(rgb_model_dir, renamed)
    shutil.copy(resolve_model("polyp").anchors, renamed / "anchors.npz")
    real, seen = finetune_module.finetune, {}

    def accepting_round(model, card, images, labels, **options):
        """One real step, then accepted whatever the Dice (this test is about where it is saved)."""
        seen["anchors"] = options["anchors"]
        result = real(model, card, images, labels, **{**options, "anchors": None, "max_steps": 1})
        child = copy.deepcopy(card)
        child.version, child.parent, child.training = 2, f"{card.name}@1", {"finetune": dict(result.details)}
        return dataclasses.replace(result, accepted=True, card=child)

    monkeypatch.setattr(finetune_module, "finetune", accepting_round)
    args = ["finetune", "--model", str(renamed), "--images", str(images), "--labels", str(masks),
            "--time-budget", "60", "--json"]
    assert main(args) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert seen["anchors"] == renamed / "anchors.npz"
    assert outcome["ref"] == "tiny-rgb@2" and outcome["out"] == str(model_library / "tiny-rgb" / "v2")
    saved = resolve_model("tiny-rgb@2")
    assert saved.parent == "tiny-rgb@1" and saved.anchors is not None
    assert saved.card.training["finetune"]["parent_folder"] == str(renamed)
    assert main(args) == 2  # the next version is taken: refused before training
    assert "already saved" in capsys.readouterr().err


def test_official_checkpoint_converts_through_model_official(tmp_path, model_library):
    from braunet.zoo import import_official
    from tests.cli.test_convert import _official_synapse_like

    pth = _official_synapse_like(tmp_path / "epoch_399.pth")
    source = import_official(pth)
    assert (source.kind, source.ref) == ("version", "official-epoch_399@1")
    assert source.folder == model_library / "official-epoch_399" / "v1"
    assert source.card.provenance["source_file"] == "epoch_399.pth" and source.card.class_names[5] == "liver"
    assert import_official(pth).folder == source.folder  # the same file again: the same version
    import torch

    other = torch.load(pth, weights_only=True)
    other["epoch"] = 1
    torch.save(other, pth)  # another file of the same name: refused, never overwritten
    with pytest.raises(CheckpointError, match="already imported as official-epoch_399@1"):
        import_official(pth)
