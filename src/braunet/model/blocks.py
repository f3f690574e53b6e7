"""The transformer block of BRAU-Net++ and the global attention of its (unused) bottleneck.

The block follows the official ``networks/bra_block.py`` exactly, which is *not* the BiFormer
block of the paper: see :class:`Block`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from braunet.model.bra import BiLevelRoutingAttention

__all__ = ["AttentionLePE", "Block", "DropPath"]


class DropPath(nn.Module):
    """Stochastic depth per sample (timm semantics: kept samples are scaled by 1/keep)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AttentionLePE(nn.Module):
    """Global multi-head self-attention plus LePE on the input (the bottleneck's ``stages[3]``).

    Built so that official checkpoints load; only run when ``bottleneck_blocks`` is set.
    The official code never passes the head count, so it is 8 whatever the width.
    """

    def __init__(self, dim: int, num_heads: int = 8, side_dwconv: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # output channels ordered (q|k|v, head, d)
        self.proj = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        n, height, width, channels = x.shape
        qkv = self.qkv(x.reshape(n, height * width, channels))  # (N, H*W, 3C)
        q, k, v = qkv.view(n, -1, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale).transpose(1, 2).reshape(n, height, width, channels)
        lepe = self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out + lepe)


class Block(nn.Module):
    """One BRAU-Net++ transformer block, in the official order (channels-last maps).

    Official forward, with ``y = LN1(x) + DWConv3x3(LN1(x))``::

        out = y + BRA(LN1(y)) + MLP(LN2(y + BRA(LN1(y))))

    Quirks kept on purpose (each changes the released model's logits by > 2):
    the block input is normalised first and its shortcut is discarded (no identity path), the
    positional conv is added to the normalised map, and ``norm1`` is applied a second time, with
    the same weights, before attention. LayerNorm eps is 1e-6 here (1e-5 elsewhere in the model).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_win: int,
        qk_dim: int,
        topk: int,
        mlp_ratio: float = 3.0,
        drop_path: float = 0.0,
        side_dwconv: int = 5,
        before_attn_dwconv: int = 3,
    ):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, before_attn_dwconv, padding=before_attn_dwconv // 2, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn: nn.Module = BiLevelRoutingAttention(dim, num_heads, n_win, qk_dim, topk, side_dwconv)
        else:  # reason: topk -2 in the official config selects global attention (bottleneck only)
            self.attn = AttentionLePE(dim, side_dwconv=side_dwconv)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        # Indices match the official nn.Sequential (index 1 is the disabled MLP dwconv).
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Identity(), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        x = self.norm1(x)  # quirk: normalised before the positional conv; the input is not kept
        x = x + self.pos_embed(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(self.norm1(x)))  # quirk: norm1 a second time
        return x + self.drop_path(self.mlp(self.norm2(x)))
