"""Our BRAU-Net++ reproduces the official code's numbers (fixtures in shared/fixtures/official)."""

import json

import pytest
import torch

from braunet.model import BRAUNet, convert_official_state_dict, get_preset, load_official, record_routing


def test_small_logits_float32(small_model, small_io):
    with torch.inference_mode():
        logits = small_model(small_io["input"])
    assert logits.shape == (2, 4, 128, 128)
    assert (logits - small_io["logits"]).abs().max().item() <= 1e-4


def test_small_logits_float64(small_model, small_io):
    model = small_model.double()
    with torch.inference_mode():
        logits = model(small_io["input"].double())
    assert (logits - small_io["logits_float64"]).abs().max().item() <= 1e-9


def test_one_channel_input_is_repeated(small_model, small_io):
    with torch.inference_mode():
        logits = small_model(small_io["input_1ch"])
        logits64 = small_model.double()(small_io["input_1ch"].double())
    assert (logits - small_io["logits_1ch"]).abs().max().item() <= 1e-4
    assert (logits64 - small_io["logits_1ch_float64"]).abs().max().item() <= 1e-9


def test_routing_indices_of_all_bra_modules(small_model, small_io, official_fixtures):
    expected = torch.load(official_fixtures / "small_bra_routing.pt", weights_only=True)
    with torch.inference_mode(), record_routing(small_model) as routes:
        small_model(small_io["input"])
    official = {k.removeprefix("all_r_idx.bra_unet."): v for k, v in expected.items() if k.startswith("all_r_idx.")}
    assert [r.name for r in routes] == list(official)  # same 8 modules, execution order
    for record in routes:
        assert record.indices.dtype == torch.int64
        assert torch.equal(record.indices, official[record.name]), record.name
        assert record.n_win == 4


def test_captured_bra_modules_alone(small_model, official_fixtures):
    expected = torch.load(official_fixtures / "small_bra_routing.pt", weights_only=True)
    modules = dict(small_model.named_modules())
    for name in ("stages.0.0.attn", "stages.1.0.attn", "layers_up.1.blocks.0.attn"):
        prefix = f"bra_unet.{name}."
        with torch.inference_mode(), record_routing(small_model) as routes:
            out = modules[name](expected[prefix + "attn_input"])
        assert (out - expected[prefix + "attn_output"]).abs().max().item() <= 1e-4, name
        assert torch.equal(routes[0].indices, expected[prefix + "r_idx"])
        assert torch.allclose(routes[0].weights, expected[prefix + "r_weight"], atol=1e-5)


def test_intermediates(small_model, small_io, official_fixtures):
    expected = torch.load(official_fixtures / "small_intermediates.pt", weights_only=True)
    captured = {}

    def hook(name):
        def store(_module, _inputs, output):
            captured[name] = output.detach()

        return store

    modules = dict(small_model.named_modules())
    handles = [modules[name].register_forward_hook(hook(name)) for name in expected]
    with torch.inference_mode():
        small_model(small_io["input"][:1])
    for handle in handles:
        handle.remove()
    for name, reference in expected.items():
        ours = captured[name]
        if name.startswith("sccsa"):  # ours is NHWC, official NCHW
            ours = ours.permute(0, 3, 1, 2)
        ours = ours.reshape(reference.shape)  # NHWC maps are the official (N, H*W, C) tokens
        assert (ours - reference).abs().max().item() <= 1e-4, name


def test_paper_bottleneck_option_runs_the_unused_blocks(small_state_dict, small_config, official_fixtures):
    expected = torch.load(official_fixtures / "small_unused_bottleneck.pt", weights_only=True)
    model = load_official(small_state_dict, small_config.replace(bottleneck_blocks=True))
    tokens = expected["bottleneck_tokens"]  # (2, 16, 128) = (2, 4x4, C)
    with torch.inference_mode():
        out = model.stages[3](tokens.view(2, 4, 4, 128))
    assert (out.reshape(2, 16, 128) - expected["stages3_output"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize(("preset", "key_file"), [("synapse", "synapse_keys.json"), ("isic", "isic_keys.json")])
def test_full_presets_have_the_official_key_layout(preset, key_file, official_fixtures):
    official = json.loads((official_fixtures / key_file).read_text())
    converted = convert_official_state_dict({k: torch.empty(v, device="meta") for k, v in official.items()})
    with torch.device("meta"):
        model = BRAUNet(get_preset(preset))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in converted.items()}
    assert len(ours) == 524


def test_load_official_infers_architecture_from_weights(small_state_dict):
    """Widths, depths, classes come from the weights; n_win/head_dim/topks/img_size from the config."""
    model = load_official(small_state_dict, get_preset("tiny").replace(num_classes=9, depth=(2, 2, 8, 2)))
    assert model.config.embed_dim == (16, 32, 64, 128)
    assert model.config.depth == (1, 1, 2, 1)
    assert model.config.depths_decoder[1:] == (2, 1, 1)
    assert model.config.num_classes == 4
    assert not model.training
