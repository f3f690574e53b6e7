"""``braunet convert-official``: official weights -> our model folder, equal logits, clear refusals."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from braunet.cli import main
from braunet.model import BRAUNet, get_preset, read_card
from braunet.zoo import load_model


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main(["convert-official", *(str(a) for a in argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def official_small(official_fixtures: Path) -> Path:
    path = official_fixtures / "small_state_dict.pt"
    if not path.is_file():
        pytest.fail(f"official fixtures incomplete: {path} is missing")
    return path


def test_official_fixture_converts_to_the_same_logits(official_small, tmp_path, capsys):
    out = tmp_path / "small-official"
    code, stdout, _ = run([official_small, out, "--preset", "tiny", "--class-names", "bg", "a", "b", "c"], capsys)
    assert code == 0 and str(out) in stdout
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.safetensors"]
    card = read_card(out)
    assert card.class_names == ["bg", "a", "b", "c"] and card.preprocessing["kind"] == "ct"
    assert card.provenance["source_file"] == "small_state_dict.pt"
    assert card.provenance["sha256"] == hashlib.sha256(official_small.read_bytes()).hexdigest()
    assert card.provenance["converted"][:4].isdigit() and card.extra["preset"] == "tiny"
    model, _ = load_model(out)
    io = torch.load(official_small.with_name("small_io.pt"), weights_only=True)
    with torch.inference_mode():
        torch.testing.assert_close(model(io["input"]), io["logits"], rtol=0, atol=1e-4)


def _official_synapse_like(path: Path) -> Path:
    """An official-format checkpoint of a narrow Synapse build (DataParallel keys, QKVLinear names)."""
    torch.manual_seed(3)
    config = get_preset("synapse").replace(
        embed_dim=(32, 64, 128, 256), qk_dims=(32, 64, 128, 256), depth=(1, 1, 1, 1), depths_decoder=(2, 1, 1, 1)
    )
    state = BRAUNet(config).state_dict()
    official = {"module.bra_unet." + k.replace(".attn.qkv.", ".attn.qkv.qkv."): v for k, v in state.items()}
    torch.save({"state_dict": official, "epoch": 399}, path)
    return path


def test_synapse_checkpoint_gets_synapse_names_and_recipe_and_predicts(data_dir, tmp_path, capsys):
    pth = _official_synapse_like(tmp_path / "epoch_399.pth")
    out = tmp_path / "synapse-converted"
    assert run([pth, out], capsys)[0] == 0
    card = json.loads((out / "card.json").read_text())
    assert card["class_names"][1:] == [
        "aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"
    ]  # fmt: skip
    assert card["preprocessing"]["clip_hu"] == [-125.0, 275.0] and card["config"]["img_size"] == 224
    assert card["provenance"]["preset"] == "synapse"
    ct = data_dir / "totalseg_ct" / "case01sm_ct.nii.gz"
    labels = tmp_path / "labels.nii.gz"
    source = nib.load(ct)
    crop = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[:, :, 12:16], source.affine, source.header), crop)
    assert main(["predict", str(crop), "-o", str(labels), "--model", str(out)]) == 0
    assert nib.load(labels).shape == (122, 101, 4)


def test_refusals(official_small, tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"bra_unet.output.weight": Payload()}, protocol=2))
    code, stdout, err = run([evil, tmp_path / "a"], capsys)
    assert code == 2 and "evil.pth" in err and "code ran" not in stdout and not (tmp_path / "a").exists()

    code, _, err = run([official_small, tmp_path / "b", "--preset", "tiny"], capsys)
    assert code == 2 and "--class-names" in err and not (tmp_path / "b").exists()

    code, _, err = run([official_small, tmp_path / "c", "--preset", "tiny", "--class-names", "x", "y"], capsys)
    assert code == 2 and "2 names" in err

    code, _, err = run([official_small, tmp_path / "d"], capsys)  # synapse widths cannot hold these weights
    assert code == 2 and "small_state_dict.pt" in err and "--preset synapse" in err

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "card.json").write_text("{}")
    code, _, err = run([official_small, tmp_path / "taken", "--preset", "tiny", "--class-names", *"abcd"], capsys)
    assert code == 2 and "not an empty folder" in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
