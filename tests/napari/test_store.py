"""The widgets' model store goes through braunet.zoo.resolve_model: a version saved from the GUI is
``--model NAME@N`` on the command line and listed by ``braunet models``; anchors come from the
model's folder whatever it is called; the Segment widget converts an official ``.pth``."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import tifffile
from PIL import Image

from braunet.cli import main
from braunet.model import read_card
from braunet.napari._store import ModelStore
from braunet.zoo import resolve_model

PLUGIN = "napari-braunet"


def test_gui_saved_version_is_a_command_line_model(tiny_rgb_checkpoint, model_library, shared_data, tmp_path, capsys):
    store = ModelStore()
    store.add_known_models()
    assert {"ct-abdomen-8", "polyp", "skin-lesion"} <= set(store.keys())
    parent_key = store.add_source(str(tiny_rgb_checkpoint))
    model, card = store.load(parent_key)
    child = copy.deepcopy(card)
    child.version, child.parent = 2, "tiny-rgb@1"
    child.metrics = {"finetune": {"heldout_dice_before": 0.25, "heldout_dice_after": 0.5}}
    key = store.add_version(copy.deepcopy(model), child, parent_key)
    folder = store.save(key)  # the Fine-tune widget's Save, default folder: the library
    assert folder == model_library / "tiny-rgb" / "v2" and store.entry(key).source.ref == "tiny-rgb@2"

    frame = np.ascontiguousarray(tifffile.imread(shared_data / "cvc_clinicdb" / "images" / "1.tif")[:64, :64])
    Image.fromarray(frame).save(tmp_path / "frame.png")
    assert main(["predict", str(tmp_path / "frame.png"), "-o", str(tmp_path / "labels.png"),
                 "--model", "tiny-rgb@2", "--device", "cpu"]) == 0
    assert (tmp_path / "labels.png").is_file()
    capsys.readouterr()
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny-rgb@2"))
    assert row.split()[1] == "tiny-rgb@1" and "0.250 -> 0.500" in row
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(r.get("ref") == "tiny-rgb@2" and r["parent"] == "tiny-rgb@1" for r in rows)

    fresh = ModelStore()
    fresh.add_known_models()  # a new viewer lists the saved version
    assert "tiny-rgb@2" in fresh.keys()


def test_anchors_come_from_the_models_folder(tmp_path):
    """A copied and renamed bundled model still replays its anchor set (it used to be looked up by name)."""
    from braunet.train.finetune import finetune

    copied = tmp_path / "my-polyp"
    shutil.copytree(resolve_model("polyp").folder, copied)
    card = json.loads((copied / "card.json").read_text())
    card["name"] = "my-polyp"
    (copied / "card.json").write_text(json.dumps(card))
    store = ModelStore()
    key = store.add_source(str(copied))
    assert store.anchors(key) == copied / "anchors.npz"
    model, card = store.load(key)
    child = store.add_version(model, copy.deepcopy(card), key)
    assert store.anchors(child) == copied / "anchors.npz"  # an unsaved fine-tune replays its ancestor's set
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    labels = [np.pad(np.ones((32, 32), np.uint8), 16) for _ in range(2)]
    result = finetune(model, card, images, labels, time_budget_s=600, max_steps=1, anchors=store.anchors(key))
    assert result.details["n_anchors"] >= 4


def test_segment_widget_accepts_an_official_checkpoint(make_napari_viewer, tmp_path, model_library):
    from tests.cli.test_convert import _official_synapse_like

    pth = _official_synapse_like(tmp_path / "epoch_399.pth")
    viewer = make_napari_viewer()
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.official.value = pth
    key = segment.model.value
    assert key == "official-epoch_399@1" and segment.model.value == key
    folder = model_library / "official-epoch_399" / "v1"
    assert segment.store.entry(key).source.folder == folder and str(folder) in segment.status.value
    assert read_card(folder).provenance["sha256"] and segment.store.kind(key) == "ct"
    assert resolve_model("official-epoch_399@1").folder == folder  # usable on the command line too
    segment.official.value = tmp_path / "missing.pth"
    assert "not found" in segment.status.value and segment.model.value == key
    assert not (model_library / "official-missing").exists()
