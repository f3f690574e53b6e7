"""scripts/train_bundled.py end to end on a tiny subset of the shared data: a few steps into tmp, a
card that records what was seen, and a resume that continues the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench._common import load_train_bundled

from braunet.model import load_checkpoint


@pytest.fixture(scope="module")
def script(shared_data, monkeypatch_module):
    monkeypatch_module.setenv("BRAUNET_DATA_DIR", str(shared_data))
    return load_train_bundled()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _small(tmp_path: Path) -> list[str]:
    """The smallest preset on one CPU thread (a shared test machine), everything in tmp."""
    return ["--device", "cpu", "--preset", "tiny", "--threads", "1", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out")]


def test_ct_smoke_run_writes_a_card_with_subjects_seen_and_resumes(script, tmp_path):
    args = ["ct-abdomen-8", "--minutes", "5", "--max-steps", "2", "--limit", "3", "--batch-size", "4", *_small(tmp_path)]
    script.main(args)
    folder = tmp_path / "out" / "ct-abdomen-8"
    card = json.loads((folder / "card.json").read_text())
    assert card["preprocessing"]["spacing_mm"] == script.CT_SPACING_MM
    training = card["training"]
    assert training["steps"] == 2 and training["steps_per_s"] > 0 and "cores" in training["hardware"]
    assert set(training["load_average_1min"]) == {"start", "mean", "max", "samples"}
    seen = {s["source"]: s for s in training["seen"]}
    assert set(seen) == {"case01", "dcmqi", "msd", "curvas"} and all(s["unit"] == "CT subject" for s in seen.values())
    # stomach is annotated on case01 alone; the spleen on case01 and the MSD subjects (partial labels)
    assert training["groups_per_class"]["stomach"] == 1 and training["groups_per_class"]["spleen"] > 1
    held = {s["source"] for s in training["validation_seen"]}
    assert held == {"case01", "msd", "curvas"}
    # validation by subject: no CURVAS subject or MSD case on both sides
    assert "curvas-10002" in training["data"][3]["use"].split("validation:")[1]
    assert {"validation_curvas_heldout_subjects", "validation_msd_heldout_cases", "validation_case01_top_slab"} <= set(
        card["metrics"])
    assert card["metrics"]["validation"]["per_class_dice"].keys() >= {"liver", "spleen"}
    assert (folder / "anchors.npz").is_file()
    model, loaded = load_checkpoint(folder)
    assert loaded.recipe.spacing_mm == script.CT_SPACING_MM and model.config.num_classes == 9

    script.main([*args[:4], "4", *args[5:], "--resume"])  # the step budget raised: continues at step 2
    card = json.loads((folder / "card.json").read_text())
    assert card["training"]["steps"] == 4 and card["training"]["command"].endswith("--resume")


@pytest.mark.parametrize(("name", "units"), [("polyp", {"cvc": "video sequence", "kvasir": "image"}),
                                             ("skin-lesion", {"isic": "image", "ph2": "image"})])
def test_rgb_smoke_runs_split_by_sequence_or_image(script, tmp_path, name, units):
    script.main([name, "--max-steps", "1", "--limit", "2", "--batch-size", "2", *_small(tmp_path)])
    card = json.loads((tmp_path / "out" / name / "card.json").read_text())
    seen = {s["source"]: s["unit"] for s in card["training"]["seen"]}
    assert units.items() <= seen.items()
    train_groups = {s["source"] for s in card["training"]["seen"]}
    assert {s["source"] for s in card["training"]["validation_seen"]} <= train_groups | {"kvasir352"}


def test_rescore_records_test_time_flips_and_leaves_the_weights(script, tmp_path):
    """``--rescore --tta hflip`` rewrites the card alone: the flips in its recipe, its held-out figures
    scored with them (the note says so); the weights file is byte for byte the same, and a rescore
    with no FLIP takes the flips out again."""
    script.main(["polyp", "--max-steps", "1", "--limit", "2", "--batch-size", "2", *_small(tmp_path)])
    folder = tmp_path / "out" / "polyp"
    weights = (folder / "model.safetensors").read_bytes()
    script.main(["polyp", "--rescore", "--tta", "hflip", "--limit", "2", "--out", str(tmp_path / "out")])
    card = json.loads((folder / "card.json").read_text())
    assert card["preprocessing"]["tta"] == ["hflip"] and "test-time flips hflip" in card["metrics"]["note"]
    assert (folder / "model.safetensors").read_bytes() == weights
    _, loaded = load_checkpoint(folder)
    assert loaded.recipe.tta == ("hflip",)
    assert 0 <= card["metrics"]["validation_cvc_heldout_sequences"]["mean_dice"] <= 1
    script.main(["polyp", "--rescore", "--tta", "--limit", "2", "--out", str(tmp_path / "out")])
    assert "tta" not in json.loads((folder / "card.json").read_text())["preprocessing"]
