"""A plain, obviously correct bi-level routing attention: the reference our fast BRA is tested against.

It follows the official algorithm step by step with explicit tensors: window means, routing logits,
top-k, then an explicit gather of the routed windows' keys and values for every query window
(materialising the (N, p^2, topk, hw, C) copies our implementation avoids), an explicit softmax
attention matrix and the LePE conv on V. It shares only the parameters with the module under test.
"""

from __future__ import annotations

import torch
from torch import Tensor

from braunet.model.bra import BiLevelRoutingAttention


def oracle_bra(module: BiLevelRoutingAttention, x: Tensor) -> tuple[Tensor, Tensor]:
    """x: (N, H, W, C) -> (output (N, H, W, C), routing indices (N, p^2, topk))."""
    n, height, width, channels = x.shape
    s, qk_dim, heads = module.n_win, module.qk_dim, module.num_heads
    h, w = height // s, width // s
    qkv = torch.nn.functional.linear(x, module.qkv.weight, module.qkv.bias)
    # windows: (N, p^2, h*w, C), window p = row_block * s + col_block, pixels row-major
    win = qkv.reshape(n, s, h, s, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(n, s * s, h * w, -1)
    q, k, v = win[..., :qk_dim], win[..., qk_dim : 2 * qk_dim], win[..., 2 * qk_dim :]

    q_mean, k_mean = q.mean(dim=2).detach(), k.mean(dim=2).detach()
    logits = (q_mean * module.scale) @ k_mean.transpose(-1, -2)
    _, r_idx = torch.topk(logits, k=module.topk, dim=-1)  # (N, p^2, topk)

    p2 = s * s
    index = r_idx.view(n, p2, module.topk, 1, 1).expand(-1, -1, -1, h * w, k.shape[-1])
    k_sel = torch.gather(k.unsqueeze(1).expand(-1, p2, -1, -1, -1), 2, index)  # (N, p2, topk, hw, qk)
    index_v = r_idx.view(n, p2, module.topk, 1, 1).expand(-1, -1, -1, h * w, v.shape[-1])
    v_sel = torch.gather(v.unsqueeze(1).expand(-1, p2, -1, -1, -1), 2, index_v)

    def split_heads(t: Tensor) -> Tensor:  # (N, p2, L, heads*d) -> (N, p2, heads, L, d)
        return t.reshape(n, p2, t.shape[2], heads, -1).permute(0, 1, 3, 2, 4)

    q_h = split_heads(q)
    k_h = split_heads(k_sel.reshape(n, p2, -1, qk_dim))
    v_h = split_heads(v_sel.reshape(n, p2, -1, channels))
    attn = ((q_h * module.scale) @ k_h.transpose(-1, -2)).softmax(dim=-1)
    out = (attn @ v_h).permute(0, 1, 3, 2, 4).reshape(n, p2, h * w, channels)
    out = out.reshape(n, s, s, h, w, channels).permute(0, 1, 3, 2, 4, 5).reshape(n, height, width, channels)

    v_map = qkv[..., 2 * qk_dim :].permute(0, 3, 1, 2)
    lepe = module.lepe(v_map).permute(0, 2, 3, 1)
    out = torch.nn.functional.linear(out + lepe, module.wo.weight, module.wo.bias)
    return out, r_idx
