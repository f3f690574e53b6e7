"""Our BRA equals the plain gather oracle in outputs and gradients."""

import pytest
import torch

from braunet.model import BiLevelRoutingAttention, record_routing

from .bra_oracle import oracle_bra

CASES = [  # (N, H, W, dim, qk_dim, heads, n_win, topk)
    (2, 16, 16, 16, 16, 2, 4, 2),
    (1, 28, 28, 24, 24, 3, 7, 4),
    (2, 24, 16, 12, 8, 2, 4, 3),  # non-square map, qk_dim != dim
    (1, 8, 8, 32, 32, 4, 2, 4),  # topk = all windows: global attention
    (3, 12, 12, 16, 16, 4, 3, 1),
]


@pytest.mark.parametrize(("n", "h", "w", "dim", "qk_dim", "heads", "n_win", "topk"), CASES)
def test_bra_matches_oracle_outputs_and_gradients(n, h, w, dim, qk_dim, heads, n_win, topk):
    torch.manual_seed(n * 100 + h + topk)
    module = BiLevelRoutingAttention(dim, heads, n_win, qk_dim, topk).double()
    for p in module.parameters():  # spread weights so attention is peaked and mistakes show
        torch.nn.init.normal_(p, std=dim**-0.5)
    x = torch.randn(n, h, w, dim, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)

    with record_routing(module) as routes:
        out = module(x)
    ref, ref_idx = oracle_bra(module, x_ref)
    assert torch.equal(routes[0].indices, ref_idx)
    assert (out - ref).abs().max().item() <= 1e-10

    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, *module.parameters()], grad)
    theirs = torch.autograd.grad(ref, [x_ref, *module.parameters()], grad)
    for name, a, b in zip(["input"] + [k for k, _ in module.named_parameters()], ours, theirs, strict=True):
        assert (a - b).abs().max().item() <= 1e-9, name


def test_bra_float32_close_to_oracle():
    torch.manual_seed(0)
    module = BiLevelRoutingAttention(32, 4, 4, 32, 2)
    x = torch.randn(2, 16, 16, 32)
    with torch.no_grad():
        assert (module(x) - oracle_bra(module, x)[0]).abs().max().item() <= 1e-5


def test_bra_rejects_maps_not_divisible_into_windows():
    module = BiLevelRoutingAttention(16, 2, 4, 16, 2)
    with pytest.raises(ValueError, match="not divisible"):
        module(torch.randn(1, 10, 16, 16))


def test_routing_recording_is_off_after_the_context():
    module = BiLevelRoutingAttention(16, 2, 4, 16, 2)
    with record_routing(module) as routes:
        module(torch.randn(1, 16, 16, 16))
    module(torch.randn(1, 16, 16, 16))
    assert len(routes) == 1 and module._routing_sink is None


def test_chunked_attention_matches_oracle(monkeypatch):
    """Force many chunks of query windows (the path large maps take) and compare with the oracle."""
    import braunet.model.bra as bra

    monkeypatch.setattr(bra, "_CHUNK_BYTES", 3000)
    torch.manual_seed(7)
    module = BiLevelRoutingAttention(16, 2, 4, 16, 3).double()
    x = torch.randn(2, 16, 16, 16, dtype=torch.float64, requires_grad=True)
    layout = bra._Layout.of(2, 16, 16, 4, torch.device("cpu"))
    assert len(layout.chunks(3, 32 * 8)) > 4
    out = module(x)
    ref, _ = oracle_bra(module, x)
    assert (out - ref).abs().max().item() <= 1e-10
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, *module.parameters()], grad)
    theirs = torch.autograd.grad(ref, [x, *module.parameters()], grad)
    for a, b in zip(ours, theirs, strict=True):
        assert (a - b).abs().max().item() <= 1e-9


def test_bra_under_bf16_autocast_trains():
    """AMP path (as on GPU): the fused attention + LePE function mixes bf16 activations with fp32
    LePE weights in forward and backward; outputs and weight gradients stay near float32's."""
    torch.manual_seed(3)
    module = BiLevelRoutingAttention(32, 4, 4, 32, 2)
    x = torch.randn(2, 16, 16, 32)
    module(x).square().mean().backward()
    reference = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        rel = (p.grad - reference[name]).norm() / reference[name].norm()
        assert rel < 0.05, (name, rel.item())
