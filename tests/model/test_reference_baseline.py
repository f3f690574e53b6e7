"""The bench's reference BRAU-Net++ (bench/reference_braunet.py) computes what braunet.model and the official code do.

The speed ratios of ``bench/bench_model.py`` are only meaningful if both sides compute the same
function from the same weights: logits in eval mode, and the gradients of a training step.
"""

import pytest
import torch
from bench.reference_braunet import ReferenceBRAUNet

from braunet.model import BRAUNet, convert_official_state_dict, get_preset


def _pair(config, seed: int = 0) -> tuple[BRAUNet, ReferenceBRAUNet]:
    """Ours with every parameter and BN statistic randomised (so a mistake shows), and the reference with its weights."""
    torch.manual_seed(seed)
    ours = BRAUNet(config)
    with torch.no_grad():
        for name, tensor in ours.state_dict().items():
            if not tensor.is_floating_point():  # num_batches_tracked
                continue
            if tensor.ndim > 1:  # Linear and conv weights, std 1/sqrt(fan_in)
                tensor.normal_(0.0, tensor[0].numel() ** -0.5)
            elif name.endswith(("running_var", ".weight")):  # BN variances, LayerNorm and BN scales
                tensor.uniform_(0.5, 1.5)
            else:  # biases, BN means
                tensor.normal_(0.0, 0.1)
    reference = ReferenceBRAUNet(config)
    reference.load_state_dict(ours.state_dict())  # strict: the same names and shapes
    return ours.eval(), reference.eval()


def test_tiny_logits_equal_ours_float32_and_float64():
    ours, reference = _pair(get_preset("tiny"))
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        a, b = ours(x), reference(x)
    assert a.shape == b.shape == (2, 4, 128, 128)
    assert (a - b).abs().max().item() <= 1e-4
    with torch.inference_mode():
        a64, b64 = ours.double()(x.double()), reference.double()(x.double())
    assert (a64 - b64).abs().max().item() <= 1e-9


def test_tiny_training_step_gradients_equal_ours():
    """BN in train mode, no drop path in ``tiny``: the same loss and parameter gradients (float64)."""
    ours, reference = _pair(get_preset("tiny"), seed=1)
    ours, reference = ours.double().train(), reference.double().train()
    x = torch.randn(2, 1, 128, 128, dtype=torch.float64)  # 1 channel: repeated to 3 by both
    target = torch.randint(0, 4, (2, 128, 128))
    losses = [torch.nn.functional.cross_entropy(model(x), target) for model in (ours, reference)]
    assert abs(losses[0].item() - losses[1].item()) <= 1e-10
    for loss in losses:
        loss.backward()
    grads = dict(reference.named_parameters())
    used = [(name, p) for name, p in ours.named_parameters() if p.grad is not None]
    assert len(used) == sum(p.grad is not None for p in grads.values())  # stages[3] unused by both
    for name, p in used:
        assert (p.grad - grads[name].grad).abs().max().item() <= 1e-8, name


def test_synapse_224_logits_equal_ours():
    """The full official build the bench times (224 px, n_win 7, 62.6 M parameters), batch 1."""
    ours, reference = _pair(get_preset("synapse"))
    x = torch.randn(1, 1, 224, 224)
    with torch.inference_mode():
        difference = (ours(x) - reference(x)).abs().max().item()
    assert difference <= 1e-4


def test_official_fixture_logits(small_state_dict, small_config, small_io):
    """Against the logits recorded from the official code (skips when the fixtures are missing)."""
    reference = ReferenceBRAUNet(small_config)
    reference.load_state_dict(convert_official_state_dict(small_state_dict))
    reference.eval()
    with torch.inference_mode():
        assert (reference(small_io["input"]) - small_io["logits"]).abs().max().item() <= 1e-4
        assert (reference(small_io["input_1ch"]) - small_io["logits_1ch"]).abs().max().item() <= 1e-4
        logits64 = reference.double()(small_io["input"].double())
    assert (logits64 - small_io["logits_float64"]).abs().max().item() <= 1e-9


def test_refuses_the_paper_bottleneck():
    with pytest.raises(ValueError, match="bottleneck"):
        ReferenceBRAUNet(get_preset("tiny").replace(bottleneck_blocks=True))
