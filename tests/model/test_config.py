"""BRAUNetConfig: JSON round trip, validation with clear messages, presets that build and run."""

import pytest
import torch

from braunet.model import PRESETS, BRAUNet, BRAUNetConfig, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_json_round_trip(name):
    config = get_preset(name)
    assert BRAUNetConfig.from_json(config.to_json()) == config


def test_official_builds():
    synapse, isic = get_preset("synapse"), get_preset("isic")
    assert (synapse.img_size, synapse.n_win, synapse.num_classes) == (224, 7, 9)
    assert (isic.img_size, isic.n_win, isic.num_classes) == (256, 8, 1)
    assert synapse.num_heads == (3, 6, 12, 24) and synapse.topks[:3] == (2, 4, 8)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"img_size": 100}, "multiple of 32"),
        ({"img_size": 224, "n_win": 8}, "multiple of n_win"),
        ({"depth": (1, 1, 1)}, "needs 4 entries"),
        ({"topks": (2, 4, 99, -2)}, r"topks\[2\]"),
        ({"head_dim": 7}, "split into heads"),
    ],
)
def test_invalid_configs_are_refused_with_the_reason(changes, message):
    with pytest.raises(ValueError, match=message):
        get_preset("synapse", **changes)


def test_unknown_fields_and_presets_are_named():
    with pytest.raises(ValueError, match="unknown fields"):
        BRAUNetConfig.from_dict({"img_size": 224, "colour": "red"})
    with pytest.raises(ValueError, match="known presets"):
        get_preset("nope")


@pytest.mark.parametrize("name", ["tiny", "cpu-ct", "cpu-rgb"])
def test_small_presets_run_forward_and_backward(name):
    config = get_preset(name)
    model = BRAUNet(config)
    x = torch.randn(2, 3, config.img_size, config.img_size)
    logits = model(x)
    assert logits.shape == (2, config.num_classes, config.img_size, config.img_size)
    logits.square().mean().backward()
    used = [p for n, p in model.named_parameters() if not n.startswith("stages.3.")]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in used)


def test_no_sccsa_variant_has_the_papers_parameter_count():
    with torch.device("meta"):
        model = BRAUNet(get_preset("synapse-nosccsa"))
    used = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("stages.3."))
    assert round(used / 1e6, 2) == 31.40  # the paper reports 31.40 M (exactly 31,403,328 here)
    assert not any(n.startswith("sccsa") for n, _ in model.named_parameters())


def test_wrong_input_shape_is_a_clear_error():
    model = BRAUNet(get_preset("tiny")).eval()
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 3 or 1, 128, 128\)"):
        model(torch.randn(1, 3, 100, 100))
