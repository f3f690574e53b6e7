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

__all__ = ["BiLevelRoutingAttention", "RouteRecord", "routed_attention", "window_partition", "window_reverse"]


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


_CHUNK_BYTES = 16 * 2**20  # routed keys + values gathered at once, per chunk of query windows


def _gather_windows(t: Tensor, rows: Tensor, topk: int, heads: int) -> Tensor:
    """(N p^2, hw, D) windows -> (R, heads, topk hw, D/heads): the routed windows of R query windows.

    ``rows`` (R * topk,) holds the flat indices of the routed windows, topk per query window.
    """
    pixels = t.shape[1]
    routed = t.index_select(0, rows)  # one copy of whole windows
    return routed.view(-1, topk * pixels, heads, routed.shape[-1] // heads).transpose(1, 2)


def _query_chunks(q: Tensor, k: Tensor, v: Tensor, topk: int) -> list[slice]:
    """Split the query windows so one chunk's routed keys and values stay under _CHUNK_BYTES."""
    windows = q.shape[0]
    per_window = topk * k.shape[1] * (k.shape[2] + v.shape[2]) * k.element_size()
    size = max(1, min(windows, _CHUNK_BYTES // max(per_window, 1)))
    return [slice(start, min(start + size, windows)) for start in range(0, windows, size)]


def _attend(q: Tensor, k: Tensor, v: Tensor, flat_index: Tensor, topk: int, heads: int, scale: float) -> Tensor:
    """q, k: (N p^2, hw, qk), v: (N p^2, hw, C) -> (N p^2, hw, C), chunked over query windows."""
    windows, pixels, _ = q.shape
    out = q.new_empty(windows, pixels, heads, v.shape[-1] // heads)
    for rows in _query_chunks(q, k, v, topk):
        index = flat_index[rows.start * topk : rows.stop * topk]
        q_h = q[rows].unflatten(-1, (heads, -1)).transpose(1, 2)
        chunk = F.scaled_dot_product_attention(
            q_h, _gather_windows(k, index, topk, heads), _gather_windows(v, index, topk, heads), scale=scale
        )
        out[rows] = chunk.transpose(1, 2)
    return out.flatten(2)


class _RoutedAttention(torch.autograd.Function):
    """Chunked gather + fused attention whose backward gathers the routed keys/values again.

    reason: the routed copies are topk times the size of k and v; keeping them for backward (as
    autograd would) dominates the memory of a training step, while gathering them twice is cheap.
    The backward works chunk by chunk and writes key/value gradients straight into windowed
    buffers with ``index_add_``, so no full-size routed tensor ever exists.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, flat_index: Tensor, topk: int, heads: int, scale: float) -> Tensor:
        ctx.save_for_backward(q, k, v, flat_index)
        ctx.topk, ctx.heads, ctx.scale = topk, heads, scale
        return _attend(q, k, v, flat_index, topk, heads, scale)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, flat_index = ctx.saved_tensors
        topk, heads = ctx.topk, ctx.heads
        grad_q = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        grad_k = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
        grad_v = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
        grad_out = grad_out.unflatten(-1, (heads, -1))  # (N p^2, hw, heads, d)
        for rows in _query_chunks(q, k, v, topk):
            index = flat_index[rows.start * topk : rows.stop * topk]
            with torch.enable_grad():
                q_h = q[rows].detach().unflatten(-1, (heads, -1)).transpose(1, 2).requires_grad_(True)
                k_r = _gather_windows(k, index, topk, heads).detach().requires_grad_(True)
                v_r = _gather_windows(v, index, topk, heads).detach().requires_grad_(True)
                out = F.scaled_dot_product_attention(q_h, k_r, v_r, scale=ctx.scale)
                d_q, d_k, d_v = torch.autograd.grad(out, (q_h, k_r, v_r), grad_out[rows].transpose(1, 2))
            grad_q[rows] = d_q.transpose(1, 2).flatten(2)
            grad_k.index_add_(0, index, d_k.transpose(1, 2).reshape(index.numel(), k.shape[1], k.shape[2]))
            grad_v.index_add_(0, index, d_v.transpose(1, 2).reshape(index.numel(), v.shape[1], v.shape[2]))
        return grad_q, grad_k, grad_v, None, None, None, None


def routed_attention(q: Tensor, k: Tensor, v: Tensor, indices: Tensor, heads: int, scale: float) -> Tensor:
    """Attention of each query window over the pixels of its routed windows.

    Args:
        q, k: (N, p^2, hw, qk_dim) windowed queries and keys; v: (N, p^2, hw, C) values.
        indices: (N, p^2, topk) routed windows of every query window.
        heads: channels are split head-major into this many heads.
    Returns:
        (N, p^2, hw, C)
    """
    n, windows, pixels, _ = q.shape
    topk = indices.shape[-1]
    flat_index = (indices + torch.arange(n, device=q.device).view(n, 1, 1) * windows).reshape(-1)
    q, k, v = (t.reshape(n * windows, pixels, t.shape[-1]) for t in (q, k, v))  # views: (N, p^2) merge
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out = _RoutedAttention.apply(q, k, v, flat_index, topk, heads, scale)
    else:
        out = _attend(q, k, v, flat_index, topk, heads, scale)
    return out.view(n, windows, pixels, -1)


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
        n_win, qk_dim = self.n_win, self.qk_dim

        # Partition the C-channel input once; q, k, v then come out of the Linear already windowed.
        qkv = self.qkv(window_partition(x, n_win))  # (N, p^2, hw, 2 qk + C)
        q, kv = qkv[..., :qk_dim], qkv[..., qk_dim:]

        # Region level: routing sees window means and is not differentiated (as the official code).
        with torch.no_grad():
            indices, top_logits = self.route(q.mean(dim=2), kv[..., :qk_dim].mean(dim=2))
        if self._routing_sink is not None:
            self._routing_sink.append(
                RouteRecord(self._routing_name, n_win, (height, width), indices.clone(), top_logits.softmax(dim=-1))
            )

        # Token level: attention of every query window over the pixels of its routed windows.
        out = routed_attention(q, kv[..., :qk_dim], kv[..., qk_dim:], indices, self.num_heads, self.scale)

        # LePE on V over the full map (crosses window borders), as a channels-last conv.
        v_map = window_reverse(kv[..., qk_dim:], n_win, height, width).permute(0, 3, 1, 2)
        lepe = self.lepe(v_map).permute(0, 2, 3, 1)  # (N, H, W, C)
        return self.wo(window_reverse(out, n_win, height, width) + lepe)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, qk_dim={self.qk_dim}, heads={self.num_heads}, n_win={self.n_win}, topk={self.topk}"
