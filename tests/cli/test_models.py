"""``braunet models`` and the model resolver (braunet.zoo): bundled names, NAME@N versions, paths."""

from __future__ import annotations

import json
import shutil

import pytest

from braunet import zoo
from braunet.cli import main
from braunet.errors import CheckpointError
from braunet.zoo import bundled_dir, list_models, load_model, resolve_model


@pytest.fixture()
def library(tmp_path, ct_model_dir, rgb_model_dir, monkeypatch):
    """A bundled-models folder with two models and one stray folder, standing in for the package's."""
    shutil.copytree(ct_model_dir, tmp_path / "ct-test")
    shutil.copytree(rgb_model_dir, tmp_path / "polyp-test")
    (tmp_path / "README.md").write_text("not a model\n")
    (tmp_path / "notes").mkdir()
    monkeypatch.setattr(zoo, "bundled_dir", lambda: tmp_path)
    return tmp_path


def test_bundled_models_live_in_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAUNET_MODELS_DIR", str(tmp_path))  # the library never hides the bundled models
    folder = bundled_dir()
    assert folder.name == "models" and folder.parent.name == "braunet" and folder.is_dir()
    assert {"ct-abdomen-8", "polyp", "skin-lesion"} <= set(list_models())


def test_registry_lists_and_loads_by_name_or_path(library):
    assert list_models() == ["ct-test", "polyp-test"]
    model, card = load_model("ct-test")
    assert card.class_names[1] == "aorta" and model.config.num_classes == 9 and not model.training
    assert resolve_model(library / "polyp-test").folder == library / "polyp-test"
    with pytest.raises(CheckpointError, match=r"'ct-abdomen-8'.*ct-test, polyp-test"):
        load_model("ct-abdomen-8")
    (library / "weights.pth").write_bytes(b"\x80")
    with pytest.raises(CheckpointError, match="convert-official"):
        load_model(library / "weights.pth")


def test_models_command_prints_a_table_and_json(library, capsys):
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "CLASSES", "INPUT", "PRESET", "METRICS"]
    assert table[1].startswith("ct-test") and "8: aorta, gallbladder" in table[1] and "ct 128px" in table[1]
    assert "tiny" in table[1] and table[2].startswith("polyp-test") and "1: lesion" in table[2]
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == ["ct-test", "polyp-test"] and rows[1]["input"] == "rgb 128px"


def test_models_command_with_no_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "bundled_dir", lambda: tmp_path)
    assert main(["models"]) == 0
    assert "no bundled models" in capsys.readouterr().out


def _record_seen(folder, seen):
    card = json.loads((folder / "card.json").read_text())
    card["training"]["seen"] = seen
    (folder / "card.json").write_text(json.dumps(card))


def test_models_command_says_what_each_model_was_trained_on(library, capsys):
    _record_seen(library / "ct-test", [{"source": "case01", "unit": "CT subject", "count": 1, "slices": 54}])
    _record_seen(library / "polyp-test", [{"source": "cvc", "unit": "video sequence", "count": 11, "slices": 231},
                                          {"source": "kvasir", "unit": "image", "count": 3, "slices": 3},
                                          {"source": "kvasir352", "unit": "image", "count": 795, "slices": 795}])
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "(!) trained on 1 CT subject (54 slices)" in table[1]
    assert "trained on 11 video sequences (231 slices) + 798 images" in table[2] and "(!)" not in table[2]
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["few_cases"] is True and rows[1]["few_cases"] is False
    assert rows[0]["trained_on"] == "trained on 1 CT subject (54 slices)"


def test_model_tooltip_warns_for_few_subjects_and_unrecorded_data(library):
    from braunet.cli.models import model_tooltip

    tip = model_tooltip(resolve_model("ct-test").card)  # the fixture card records no training data
    assert "training data not recorded" in tip and "color:" in tip
    _record_seen(library / "ct-test", [{"source": "curvas", "unit": "CT subject", "count": 8, "slices": 62},
                                       {"source": "msd", "unit": "CT subject", "count": 5, "slices": 36}])
    tip = model_tooltip(resolve_model("ct-test").card)
    assert "trained on 13 CT subjects (98 slices)" in tip and "color:" not in tip


def test_classes_learnt_from_few_subjects_are_named_and_flagged(library, capsys):
    """15 CT subjects in all, but stomach and aorta annotated on one of them (partial labels): the
    listing names those classes and flags the model."""
    _record_seen(library / "ct-test", [{"source": "case01", "unit": "CT subject", "count": 1, "slices": 51},
                                       {"source": "curvas", "unit": "CT subject", "count": 14, "slices": 62}])
    card = json.loads((library / "ct-test" / "card.json").read_text())
    card["training"]["groups_per_class"] = {"liver": 15, "stomach": 1, "aorta": 1, "pancreas": 3, "spleen": 9}
    (library / "ct-test" / "card.json").write_text(json.dumps(card))
    assert main(["models", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["few_cases"] is True
    assert row["trained_on"] == ("trained on 15 CT subjects (113 slices); stomach, aorta from 1 CT subject only; "
                                 "pancreas from 3 CT subjects only")
