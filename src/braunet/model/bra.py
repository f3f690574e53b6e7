"""Bi-level routing attention (BRA), the attention of BiFormer and BRAU-Net++.

Numerically the official algorithm (``networks/bra.py`` of BRAU-Net++ with the shipped settings:
identity kv-downsampling, no routing parameters, hard top-k routing, ``qk_dim ** -0.5`` scale),
implemented differently, so that a training step holds little more than the ``qkv`` projection:

* q, k and v stay in the map layout the ``qkv`` Linear produced; the pixels of a query window and
  of its routed windows are fetched with one ``index_select`` of pixel rows per chunk of query
  windows, instead of partitioning the map and expanding ``kv`` to ``(N, p^2, p^2, ...)`` for
  ``torch.gather``;
* the token-to-token attention inside the routed windows is one
  ``F.scaled_dot_product_attention`` call per chunk, which never materialises the
  ``(N p^2, heads, hw, topk hw)`` attention matrix;
* attention and LePE are one autograd function that saves only ``qkv`` and gathers again in
  backward, writing the gradients of q, k and v straight into one ``qkv``-shaped buffer;
* the routing weights (softmax over the selected routing logits) and the full region-level
  logits are kept only while :func:`braunet.model.record_routing` is active, because the
  official model never uses them.

The plain gather implementation lives in ``tests/model/bra_oracle.py`` and the tests check both
agree in outputs and gradients.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BiLevelRoutingAttention", "RouteRecord"]


@dataclass(frozen=True)
class RouteRecord:
    """What one BRA call routed.

    Attributes:
        name: module name inside the model (e.g. ``stages.0.0.attn``).
        n_win: windows per side; window ``p = row * n_win + col`` (row-major, as the official code).
        map_size: (H, W) of the attended feature map in pixels.
        indices: (B, n_win**2, topk) int64, routed windows of each query window, best first.
        weights: (B, n_win**2, topk) float, softmax over the selected routing logits.
        logits: (B, n_win**2, n_win**2) float, the region-to-region routing scores
            ``q_win * scale @ k_win^T`` the top-k was taken over (query window x key window).
    """

    name: str
    n_win: int
    map_size: tuple[int, int]
    indices: Tensor
    weights: Tensor
    logits: Tensor


_CHUNK_BYTES = 4 * 2**20  # routed keys + values gathered at once, per chunk of query windows


@dataclass(frozen=True)
class _Layout:
    """Where the pixels of every window live in the flattened (N*H*W, channels) map.

    Windows are numbered globally ``g = image * n_win**2 + row * n_win + col``; ``window_pixels``
    (n_win**2, h*w) holds the flat in-image pixel index of each window's pixels, row-major.
    """

    images: int
    height: int
    width: int
    n_win: int
    window_pixels: Tensor

    @classmethod
    def of(cls, images: int, height: int, width: int, n_win: int, device: torch.device) -> _Layout:
        h, w = height // n_win, width // n_win
        grid = torch.arange(height * width, device=device).view(n_win, h, n_win, w).permute(0, 2, 1, 3)
        return cls(images, height, width, n_win, grid.reshape(n_win * n_win, h * w))

    @property
    def windows(self) -> int:
        return self.images * self.n_win * self.n_win

    @property
    def pixels_per_window(self) -> int:
        return self.window_pixels.shape[1]

    def pixels(self, windows: Tensor) -> Tensor:
        """(R,) global window ids -> (R * h*w,) flat pixel rows of the (N*H*W, channels) map."""
        per_image = self.n_win * self.n_win
        image = torch.div(windows, per_image, rounding_mode="floor")
        rows = self.window_pixels[windows - image * per_image] + (image * self.height * self.width).unsqueeze(1)
        return rows.reshape(-1)

    def chunks(self, topk: int, bytes_per_pixel_row: int) -> list[slice]:
        """Query-window chunks whose routed keys and values stay under _CHUNK_BYTES."""
        per_window = topk * self.pixels_per_window * bytes_per_pixel_row
        size = max(1, min(self.windows, _CHUNK_BYTES // max(per_window, 1)))
        return [slice(start, min(start + size, self.windows)) for start in range(0, self.windows, size)]


def _heads(rows: Tensor, windows: int, heads: int) -> Tensor:
    """(R * L, heads * d) pixel rows -> (R, heads, L, d) for attention."""
    return rows.view(windows, -1, heads, rows.shape[-1] // heads).transpose(1, 2)


class _ChunkInputs:
    """Index tensors of one chunk of query windows and its routed windows."""

    def __init__(self, layout: _Layout, flat_index: Tensor, topk: int, rows: slice):
        self.count = rows.stop - rows.start
        self.query_rows = layout.pixels(torch.arange(rows.start, rows.stop, device=flat_index.device))  # (R hw,)
        self.routed_rows = layout.pixels(flat_index[rows.start * topk : rows.stop * topk])  # (R topk hw,)

    def gather(self, q: Tensor, k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
        """Pixel rows -> (R, heads, hw, d) queries and (R, heads, topk hw, d) routed keys and values."""
        return (
            _heads(q.index_select(0, self.query_rows), self.count, heads),
            _heads(k.index_select(0, self.routed_rows), self.count, heads),
            _heads(v.index_select(0, self.routed_rows), self.count, heads),
        )


def _chunks(layout: _Layout, flat_index: Tensor, topk: int, k: Tensor, v: Tensor) -> Iterator[_ChunkInputs]:
    """The chunks of query windows whose routed keys and values stay under _CHUNK_BYTES."""
    bytes_per_row = (k.shape[1] + v.shape[1]) * k.element_size()
    for rows in layout.chunks(topk, bytes_per_row):
        yield _ChunkInputs(layout, flat_index, topk, rows)


def _split_qkv(qkv_rows: Tensor, qk_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(N*H*W, 2 qk + C) -> strided views q, k (.., qk) and v (.., C); no copies."""
    return qkv_rows[:, :qk_dim], qkv_rows[:, qk_dim : 2 * qk_dim], qkv_rows[:, 2 * qk_dim :]


def _lepe(v_rows: Tensor, layout: _Layout, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise conv on V over the full map (it crosses window borders): -> (N, H, W, C)."""
    channels = v_rows.shape[1]
    v_map = v_rows.view(layout.images, layout.height, layout.width, channels).permute(0, 3, 1, 2)
    bias = None if bias is None else bias.to(v_rows.dtype)
    pad = weight.shape[-1] // 2
    return F.conv2d(v_map, weight.to(v_rows.dtype), bias, padding=pad, groups=channels).permute(0, 2, 3, 1)


def _bra_forward(qkv: Tensor, weight: Tensor, bias: Tensor | None, flat_index: Tensor, layout: _Layout,
                 topk: int, heads: int, qk_dim: int, scale: float) -> Tensor:
    """Routed attention + LePE. qkv: (N, H, W, 2 qk + C) -> (N, H, W, C)."""
    qkv_rows = qkv.reshape(-1, qkv.shape[-1])
    q, k, v = _split_qkv(qkv_rows, qk_dim)
    out = _lepe(v, layout, weight, bias).reshape(-1, v.shape[1]).contiguous()  # (N*H*W, C)
    for c in _chunks(layout, flat_index, topk, k, v):
        attended = F.scaled_dot_product_attention(*c.gather(q, k, v, heads), scale=scale)  # (R, heads, hw, C/heads)
        out.index_add_(0, c.query_rows, attended.transpose(1, 2).reshape(-1, v.shape[1]))
    return out.view(*qkv.shape[:-1], v.shape[1])


class _RoutedAttentionLePE(torch.autograd.Function):
    """:func:`_bra_forward` whose backward gathers the routed keys and values again.

    reason: the routed copies are topk times the size of k and v, and the windowed or strided
    copies of q, k, v are each as large as the input; keeping any of them for backward (as autograd
    would) dominates the memory of a training step, while gathering again is cheap. The backward
    works chunk by chunk and writes the gradients of q, k and v straight into one buffer shaped
    like ``qkv``, so no routed tensor, window partition or per-slice gradient is ever full size.
    """

    @staticmethod
    def forward(ctx: Any, qkv: Tensor, weight: Tensor, bias: Tensor | None, flat_index: Tensor, layout: _Layout,
                topk: int, heads: int, qk_dim: int, scale: float) -> Tensor:
        ctx.save_for_backward(qkv, weight, bias, flat_index)
        ctx.layout, ctx.topk, ctx.heads, ctx.qk_dim, ctx.scale = layout, topk, heads, qk_dim, scale
        return _bra_forward(qkv, weight, bias, flat_index, layout, topk, heads, qk_dim, scale)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        qkv, weight, bias, flat_index = ctx.saved_tensors
        layout, topk, heads, qk_dim = ctx.layout, ctx.topk, ctx.heads, ctx.qk_dim
        qkv_rows = qkv.detach().reshape(-1, qkv.shape[-1])
        q, k, v = _split_qkv(qkv_rows, qk_dim)
        grad_rows = grad_out.reshape(-1, v.shape[1])

        # LePE first, while nothing else is allocated: its conv makes transient copies of V.
        with torch.enable_grad():
            leaves = [v.detach().requires_grad_(True), weight.detach().requires_grad_(True)]
            if bias is not None:
                leaves.append(bias.detach().requires_grad_(True))
            lepe = _lepe(leaves[0], layout, leaves[1], leaves[2] if bias is not None else None)
            lepe_grads = list(torch.autograd.grad(lepe, leaves, grad_out))
            del lepe, leaves
        grad_qkv = torch.zeros_like(qkv_rows)
        grad_q, grad_k, grad_v = _split_qkv(grad_qkv, qk_dim)
        grad_v.copy_(lepe_grads.pop(0))

        for c in _chunks(layout, flat_index, topk, k, v):
            with torch.enable_grad():
                cq, ck, cv = (t.requires_grad_(True) for t in c.gather(q, k, v, heads))
                attended = F.scaled_dot_product_attention(cq, ck, cv, scale=ctx.scale)
                upstream = _heads(grad_rows.index_select(0, c.query_rows), c.count, heads)
                d_q, d_k, d_v = torch.autograd.grad(attended, (cq, ck, cv), upstream)
            grad_q.index_copy_(0, c.query_rows, d_q.transpose(1, 2).reshape(-1, q.shape[1]))
            grad_k.index_add_(0, c.routed_rows, d_k.transpose(1, 2).reshape(-1, k.shape[1]))
            grad_v.index_add_(0, c.routed_rows, d_v.transpose(1, 2).reshape(-1, v.shape[1]))
        grad_weight = lepe_grads[0]
        grad_bias = lepe_grads[1] if bias is not None else None
        return grad_qkv.view(qkv.shape), grad_weight, grad_bias, None, None, None, None, None, None


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

    def route_logits(self, q_win: Tensor, k_win: Tensor) -> Tensor:
        """(N, p^2, qk_dim) window means of queries and keys -> (N, p^2, p^2) region-to-region routing scores."""
        return (q_win * self.scale) @ k_win.transpose(-2, -1)

    def route(self, q_win: Tensor, k_win: Tensor) -> tuple[Tensor, Tensor]:
        """Pick the top-k key windows of every query window.

        Args:
            q_win, k_win: (N, p^2, qk_dim) window means of queries and keys.
        Returns:
            indices (N, p^2, topk) int64 sorted by decreasing logit, and those logits.
        """
        logits = self.route_logits(q_win, k_win)
        top_logits, indices = torch.topk(logits, k=self.topk, dim=-1)
        return indices, top_logits

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) with H, W divisible by n_win -> (N, H, W, C)."""
        n, height, width, _ = x.shape
        n_win, qk_dim = self.n_win, self.qk_dim
        if height % n_win or width % n_win:
            raise ValueError(f"BRA: map {height}x{width} is not divisible into {n_win}x{n_win} windows")
        qkv = self.qkv(x)  # (N, H, W, 2 qk + C)

        # Region level: routing sees window means and is not differentiated (as the official code).
        with torch.no_grad():
            # reason: two single-dim means read the strided q|k columns 4x faster than one 2-dim mean
            blocks = qkv[..., : 2 * qk_dim].unflatten(1, (n_win, -1)).unflatten(3, (n_win, -1))  # (N, s, h, s, w, 2qk)
            means = blocks.mean(dim=4).mean(dim=2).reshape(n, n_win * n_win, 2 * qk_dim)  # window means of q and k
            indices, top_logits = self.route(means[..., :qk_dim], means[..., qk_dim:])
        if self._routing_sink is not None:
            self._routing_sink.append(
                RouteRecord(self._routing_name, n_win, (height, width), indices.clone(), top_logits.softmax(dim=-1),
                        self.route_logits(means[..., :qk_dim], means[..., qk_dim:]))
            )  # fmt: skip

        # Token level: attention of every query window over the pixels of its routed windows, plus LePE.
        layout = _Layout.of(n, height, width, n_win, x.device)
        flat_index = (indices + torch.arange(n, device=x.device).view(n, 1, 1) * n_win * n_win).reshape(-1)
        args = (qkv, self.lepe.weight, self.lepe.bias, flat_index, layout, self.topk, self.num_heads, qk_dim, self.scale)
        needs_grad = qkv.requires_grad or any(p.requires_grad for p in self.lepe.parameters())
        out = _RoutedAttentionLePE.apply(*args) if torch.is_grad_enabled() and needs_grad else _bra_forward(*args)
        return self.wo(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, qk_dim={self.qk_dim}, heads={self.num_heads}, n_win={self.n_win}, topk={self.topk}"
