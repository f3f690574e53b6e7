"""Learned pixel-shuffle upsampling of the decoder (PatchExpand, FinalPatchExpand_X4)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FinalPatchExpand", "PatchExpand", "pixel_shuffle_nhwc"]


def pixel_shuffle_nhwc(x: Tensor, scale: int) -> Tensor:
    """(N, H, W, s, s, C) -> (N, sH, sW, C); sub-pixel (p1, p2) goes to (s*h + p1, s*w + p2)."""
    n, height, width, _, _, channels = x.shape
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, height * scale, width * scale, channels)


class PatchExpand(nn.Module):
    """2x upsampling: Linear(dim -> 2 dim), each pixel's vector read as (p1, p2, c), then LayerNorm(dim/2).

    The channel order (p1 p2 c), i.e. channel ``(2 p1 + p2) * dim/2 + c``, is the official one.
    LayerNorm is per pixel, so it is applied before the shuffle (same numbers, contiguous memory).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, 2H, 2W, C/2)."""
        n, height, width, channels = x.shape
        y = self.norm(self.expand(x).view(n, height, width, 2, 2, channels // 2))
        return pixel_shuffle_nhwc(y, 2)


class FinalPatchExpand(nn.Module):
    """4x upsampling before the classifier: Linear(dim -> 16 dim), (p1 p2 c) order, LayerNorm(dim).

    Official name ``FinalPatchExpand_X4``. :meth:`forward_logits` fuses it with the 1x1 classifier:
    both are per-pixel, so the classifier runs on the 16 sub-pixels *before* the shuffle, and in
    inference the work is chunked over tokens so the (N, H, W, 16, C) tensor never exists whole.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.expand = nn.Linear(dim, 16 * dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, 4H, 4W, C)."""
        n, height, width, channels = x.shape
        return pixel_shuffle_nhwc(self.norm(self.expand(x).view(n, height, width, 4, 4, channels)), 4)

    def forward_logits(self, x: Tensor, classifier: Tensor, chunk_tokens: int = 4096) -> Tensor:
        """Expand and classify: x (N, H, W, C), classifier (K, C, 1, 1) -> logits (N, K, 4H, 4W)."""
        n, height, width, channels = x.shape
        weight = classifier.flatten(1)  # (K, C)

        def head(tokens: Tensor) -> Tensor:  # (T, C) -> (T, 16, K)
            y = self.norm(self.expand(tokens).view(-1, 16, channels))
            return F.linear(y, weight)

        tokens = x.reshape(-1, channels)
        if x.requires_grad or tokens.shape[0] <= chunk_tokens:
            out = head(tokens)
        else:  # reason: bounds inference memory to one chunk of (T, 16, C)
            out = tokens.new_empty(tokens.shape[0], 16, weight.shape[0])
            for start in range(0, tokens.shape[0], chunk_tokens):
                out[start : start + chunk_tokens] = head(tokens[start : start + chunk_tokens])
        out = out.view(n, height, width, 4, 4, -1)  # (N, H, W, p1, p2, K)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(n, -1, 4 * height, 4 * width)
