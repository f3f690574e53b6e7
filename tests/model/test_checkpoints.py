"""Official checkpoints load safely or fail with one clear message; our checkpoint format round-trips."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from braunet.errors import CheckpointError
from braunet.model import BRAUNet, ModelCard, get_preset, load_checkpoint, load_official, save_checkpoint


def test_accepts_dataparallel_prefix_and_nesting(small_state_dict, small_config, small_io, tmp_path):
    wrapped = {"epoch": 3, "model": {f"module.{k}": v for k, v in small_state_dict.items()}}
    path = tmp_path / "dp.pth"
    torch.save(wrapped, path)
    model = load_official(path, small_config)
    with torch.inference_mode():
        assert (model(small_io["input"]) - small_io["logits"]).abs().max() <= 1e-4


def test_refuses_truncated_file(official_fixtures, tmp_path, small_config):
    data = (official_fixtures / "small_state_dict.pt").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: not a readable PyTorch checkpoint"):
        load_official(path, small_config)


def test_refuses_wrong_key_set(small_state_dict, small_config):
    state = dict(small_state_dict)
    del state["bra_unet.norm_up.weight"]
    state["bra_unet.extra_head.weight"] = torch.zeros(3)
    state["bra_unet.output.weight"] = torch.zeros(4, 17, 1, 1)
    with pytest.raises(CheckpointError) as error:
        load_official(state, small_config)
    message = str(error.value)
    assert "missing keys: norm_up.weight" in message
    assert "unexpected keys: extra_head.weight" in message
    assert "misshapen keys: output.weight (4, 17, 1, 1) != (4, 16, 1, 1)" in message


def test_refuses_a_state_dict_of_another_network():
    with pytest.raises(CheckpointError, match="not a BRAU-Net\\+\\+ state dict"):
        load_official({"conv1.weight": torch.zeros(64, 3, 7, 7)})


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_pickle_with_code_payload(small_state_dict, small_config, tmp_path):
    payload = _Payload()
    payload.marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": dict(small_state_dict), "hook": payload}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused to load: it pickles posix\.system"):
        load_official(path, small_config)
    assert not payload.marker.exists()


def test_refuses_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_official(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_official(tmp_path / "nope.pth")


def _card(model: BRAUNet) -> ModelCard:
    return ModelCard(
        name="test", config=model.config, class_names=["background", "a", "b", "c"],
        preprocessing={"kind": "ct", "clip_hu": [-125, 275], "mean": 0.5, "std": 0.5},
    )


def test_native_checkpoint_round_trip(small_model, small_io, tmp_path):
    save_checkpoint(small_model, _card(small_model), tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["card.json", "model.safetensors"]
    model, card = load_checkpoint(tmp_path / "ckpt")
    assert card.class_names[1] == "a" and card.config == small_model.config
    for (k, a), b in zip(small_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with torch.inference_mode():
        assert (model(small_io["input"]) - small_io["logits"]).abs().max() <= 1e-4


def test_half_checkpoint_is_smaller_and_loads_as_float32(small_model, tmp_path):
    save_checkpoint(small_model, _card(small_model), tmp_path / "full")
    save_checkpoint(small_model, _card(small_model), tmp_path / "half", half=True)
    full, half = (tmp_path / d / "model.safetensors" for d in ("full", "half"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model, _ = load_checkpoint(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_half_checkpoint_keeps_values_float16_cannot_hold_in_float32(small_model, tmp_path):
    """A BatchNorm running variance of 2e9 (the retrained polyp model has one) would become infinite
    in float16, and the loader would then refuse the file as corrupt: it is stored in float32."""
    import copy

    from safetensors.torch import load_file

    model = copy.deepcopy(small_model)
    name, norm = next((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        norm.running_var.fill_(2.4e9)
        norm.running_mean.fill_(9e4)
    save_checkpoint(model, _card(model), tmp_path / "half", half=True)
    stored = load_file(tmp_path / "half" / "model.safetensors")
    assert stored[f"{name}.running_var"].dtype == stored[f"{name}.running_mean"].dtype == torch.float32
    assert stored[f"{name}.weight"].dtype == torch.float16  # everything else is still halved
    loaded, _ = load_checkpoint(tmp_path / "half")
    assert torch.equal(loaded.state_dict()[f"{name}.running_var"], norm.running_var)


def test_card_weights_mismatch_is_refused(small_model, tmp_path):
    save_checkpoint(small_model, _card(small_model), tmp_path / "ckpt")
    other = BRAUNet(get_preset("tiny", num_classes=4, embed_dim=(8, 16, 32, 64), qk_dims=(8, 16, 32, 64)))
    card_path = tmp_path / "ckpt" / "card.json"
    good_card = card_path.read_text()
    save_checkpoint(other, _card(other), tmp_path / "other")
    card_path.write_text((tmp_path / "other" / "card.json").read_text())
    with pytest.raises(CheckpointError, match="misshapen keys"):
        load_checkpoint(tmp_path / "ckpt")
    card_path.write_text(good_card.replace('"num_classes": 4', '"num_classes": 3'))
    with pytest.raises(CheckpointError, match="3 output channel"):
        load_checkpoint(tmp_path / "ckpt")


def test_accepts_training_checkpoints_that_pickle_args_and_paths(small_state_dict, small_config, small_io, tmp_path):
    """Official/BiFormer training saves keep an argparse.Namespace (with paths) beside the weights."""
    import argparse
    import pathlib

    args = argparse.Namespace(lr=0.05, root_path=pathlib.PosixPath("/data/Synapse/train_npz"))
    path = tmp_path / "epoch_399.pth"
    torch.save({"args": args, "model": dict(small_state_dict)}, path)
    model = load_official(path, small_config)
    with torch.inference_mode():
        assert (model(small_io["input"]) - small_io["logits"]).abs().max() <= 1e-4


def test_official_file_converts_into_a_model_folder(official_fixtures, small_io, tmp_path):
    """braunet.model.official.convert_official (behind convert-official and the GUI's .pth import)."""
    from braunet.model.official import convert_official, file_sha256

    source = official_fixtures / "small_state_dict.pt"
    folder = convert_official(source, tmp_path / "small", preset="tiny", class_names=["bg", "a", "b", "c"])
    model, card = load_checkpoint(folder)
    assert card.name == "small" and card.provenance["sha256"] == file_sha256(source)
    assert card.preprocessing["kind"] == "ct" and card.extra["preset"] == "tiny"
    with torch.inference_mode():
        assert (model(small_io["input"]) - small_io["logits"]).abs().max() <= 1e-4
    from braunet.errors import InputError

    with pytest.raises(InputError, match="--class-names"):
        convert_official(source, tmp_path / "unnamed", preset="tiny")
    assert not (tmp_path / "unnamed").exists()


# --- bad files in a model folder: one CheckpointError naming the file (issue 12, items 7 and 8) ---


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "array"), ("null", "null"), ('"str"', "string"), ("7", "number")])
def test_card_that_is_not_an_object_is_refused_in_one_line(small_model, tmp_path, text, kind):
    folder = save_checkpoint(small_model, _card(small_model), tmp_path / "ckpt")
    (folder / "card.json").write_text(text)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(folder)
    assert str(error.value) == f"{folder / 'card.json'}: not a napari-braunet model card (a JSON {kind}, not an object)"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["config"].update(img_size="224"), "BRAUNetConfig.img_size must be an integer, got '224'"),
        (lambda d: d["config"].update(img_size=128.0), "BRAUNetConfig.img_size must be an integer, got 128.0"),
        (lambda d: d["config"].update(n_win=0), "n_win must be positive"),
        (lambda d: d["config"].update(head_dim=-8), "head_dim must be positive"),
        (lambda d: d["config"].update(depth=[1, "2", 1, 1]), "BRAUNetConfig.depth must be a list of integers"),
        (lambda d: d["config"].update(use_sccsa=1), "BRAUNetConfig.use_sccsa must be true or false, got 1"),
        (lambda d: d.update(config=[1]), "BRAUNetConfig: expected a JSON object, got list"),
        (lambda d: d.update(class_names="abcd"), 'class_names must be an array of strings, got "abcd"'),
        (lambda d: d.update(version=True), "version must be an integer >= 1, got true"),
        (lambda d: d.update(preprocessing=None), "preprocessing must be an object, got null"),
        (lambda d: d.pop("class_names"), "missing class_names"),
        (lambda d: d.update(name="two\nlines"), 'name must be a non-empty one-line string, got "two\\nlines"'),
    ],
)
def test_card_with_mistyped_fields_is_refused_naming_the_field(small_model, tmp_path, edit, message):
    folder = save_checkpoint(small_model, _card(small_model), tmp_path / "ckpt")
    data = json.loads((folder / "card.json").read_text())
    edit(data)
    (folder / "card.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(folder)
    text = str(error.value)
    assert text.startswith(f"{folder / 'card.json'}: invalid model card (") and message in text
    assert "\n" not in text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(small_model, tmp_path, value):
    """A NaN weight made every pixel background with exit 0; now the folder fails to load."""
    folder = save_checkpoint(small_model, _card(small_model), tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k, t in tensors.items() if k.endswith("weight") and t.is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[3] = value
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: tensor {key} holds 1 NaN or infinite value"):
        load_checkpoint(folder)


def test_cli_refuses_a_nan_model_with_exit_2(tmp_path, capsys, shared_data):
    from braunet.cli import main
    from braunet.zoo import bundled_dir

    folder = tmp_path / "polyp-nan"
    shutil.copytree(bundled_dir() / "polyp", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    key = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(folder / "model.safetensors"))
    out = tmp_path / "out.png"
    code = main(["predict", str(shared_data / "cvc_clinicdb" / "images" / "1.tif"), "-o", str(out),
                 "--model", str(folder), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and key in err and "model.safetensors" in err
    assert not out.exists()
