"""Bi-level routing attention (BRA), the attention of BiFormer and BRAU-Net++.

Numerically the official algorithm (``networks/bra.py`` of BRAU-Net++ with the shipped settings:
identity kv-downsampling, no routing parameters, hard top-k routing, ``qk_dim ** -0.5`` scale),
implemented differently:

* keys and values are gathered with one ``index_select`` over whole windows of the fused
  ``kv`` tensor, instead of expanding ``kv`` to ``(N, p^2, p^2, ...)`` and ``torch.gather``;
* the token-to-token attention inside the routed windows is one
  ``F.scaled_dot_product_attention`` call, which never materialises the
  ``(N p^2, heads, hw, topk hw)`` attention matrix (nor keeps it for backward);
* the routing weights (softmax over the selected routing logits) are computed only while
  :func:`braunet.model.record_routing` is active, because the official model never uses them.

The plain gather implementation lives in ``tests/model/bra_oracle.py`` and the tests check both
agree in outputs and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BiLevelRoutingAttention", "RouteRecord", "window_partition", "window_reverse"]


@dataclass(frozen=True)
class RouteRecord:
    """What one BRA call routed.

    Attributes:
        name: module name inside the model (e.g. ``stages.0.0.attn``).
        n_win: windows per side; window ``p = row * n_win + col`` (row-major, as the official code).
        map_size: (H, W) of the attended feature map in pixels.
        indices: (B, n_win**2, topk) int64, routed windows of each query window, best first.
        weights: (B, n_win**2, topk) float, softmax over the selected routing logits.
    """

    name: str
    n_win: int
    map_size: tuple[int, int]
    indices: Tensor
    weights: Tensor


def window_partition(x: Tensor, n_win: int) -> Tensor:
    """(N, H, W, C) -> (N, n_win**2, H/n_win * W/n_win, C); windows row-major, pixels row-major."""
    n, height, width, channels = x.shape
    h, w = height // n_win, width // n_win
    x = x.view(n, n_win, h, n_win, w, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, n_win * n_win, h * w, channels)


def window_reverse(x: Tensor, n_win: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: (N, n_win**2, h*w, C) -> (N, H, W, C)."""
    n, _, _, channels = x.shape
    h, w = height // n_win, width // n_win
    x = x.view(n, n_win, n_win, h, w, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, height, width, channels)


class BiLevelRoutingAttention(nn.Module):
    """Region-to-region routing, then token-to-token attention inside the routed regions.

    Args:
        dim: channels of the input and of the values.
        num_heads: attention heads; channels are split head-major.
        n_win: the map is split into n_win x n_win windows (regions).
        qk_dim: channels of queries and keys.
        topk: regions each query region attends to.
        side_dwconv: kernel size of the LePE depthwise conv applied to V on the full map.
    """

    def __init__(self, dim: int, num_heads: int, n_win: int, qk_dim: int, topk: int, side_dwconv: int = 5):
        super().__init__()
        self.dim, self.num_heads, self.n_win, self.qk_dim, self.topk = dim, num_heads, n_win, qk_dim, topk
        # reason: the official code scales by the whole qk_dim, not by the per-head dimension
        self.scale = qk_dim**-0.5
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)  # output channels: q [qk_dim], k [qk_dim], v [dim]
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
        self.wo = nn.Linear(dim, dim)
        self._routing_sink: list[RouteRecord] | None = None  # set by record_routing()
        self._routing_name = ""

    def route(self, q_win: Tensor, k_win: Tensor) -> tuple[Tensor, Tensor]:
        """Pick the top-k key windows of every query window.

        Args:
            q_win, k_win: (N, p^2, qk_dim) window means of queries and keys.
        Returns:
            indices (N, p^2, topk) int64 sorted by decreasing logit, and those logits.
        """
        logits = (q_win * self.scale) @ k_win.transpose(-2, -1)  # (N, p^2, p^2)
        top_logits, indices = torch.topk(logits, k=self.topk, dim=-1)
        return indices, top_logits

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) with H, W divisible by n_win -> (N, H, W, C)."""
        n, height, width, _ = x.shape
        if height % self.n_win or width % self.n_win:
            raise ValueError(f"BRA: map {height}x{width} is not divisible into {self.n_win}x{self.n_win} windows")
        heads, qk_dim, n_win = self.num_heads, self.qk_dim, self.n_win
        windows = n_win * n_win
        pixels = (height // n_win) * (width // n_win)

        qkv = self.qkv(x)  # (N, H, W, 2 qk + C)
        q = window_partition(qkv[..., :qk_dim], n_win)  # (N, p^2, hw, qk)
        kv = window_partition(qkv[..., qk_dim:], n_win)  # (N, p^2, hw, qk + C)

        # Region level: routing sees window means and is not differentiated (as the official code).
        with torch.no_grad():
            indices, top_logits = self.route(q.mean(dim=2), kv[..., :qk_dim].mean(dim=2))
        if self._routing_sink is not None:
            self._routing_sink.append(
                RouteRecord(self._routing_name, n_win, (height, width), indices.clone(), top_logits.softmax(dim=-1))
            )

        # Token level: gather whole routed windows of the fused kv tensor, once.
        flat_index = (indices + torch.arange(n, device=x.device).view(n, 1, 1) * windows).reshape(-1)
        kv_routed = kv.reshape(n * windows, pixels, -1).index_select(0, flat_index)
        kv_routed = kv_routed.view(n * windows, self.topk * pixels, -1)  # (N p^2, topk hw, qk + C)
        k = kv_routed[..., :qk_dim].unflatten(-1, (heads, -1)).transpose(1, 2)  # (N p^2, heads, topk hw, d_qk)
        v = kv_routed[..., qk_dim:].unflatten(-1, (heads, -1)).transpose(1, 2)  # (N p^2, heads, topk hw, d_v)
        q = q.reshape(n * windows, pixels, heads, -1).transpose(1, 2)  # (N p^2, heads, hw, d_qk)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (N p^2, heads, hw, d_v)
        out = out.transpose(1, 2).reshape(n, windows, pixels, self.dim)
        out = window_reverse(out, n_win, height, width)  # (N, H, W, C)

        # LePE on V over the full map (crosses window borders), channels-last conv.
        v_map = qkv[..., 2 * qk_dim :].permute(0, 3, 1, 2)
        lepe = self.lepe(v_map.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)
        return self.wo(out + lepe)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, qk_dim={self.qk_dim}, heads={self.num_heads}, n_win={self.n_win}, topk={self.topk}"
