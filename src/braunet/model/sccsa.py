"""SCCSA: the channel-spatial attention on the decoder's skip connections."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SCCSA"]


class SCCSA(nn.Module):
    """Skip-connection channel-spatial attention, as the official code computes it.

    Runs on the concatenation ``[decoder, skip]`` (``dim`` = twice the stage width). The channel
    branch is a per-pixel bottleneck MLP whose *raw* output multiplies the features (no pooling and,
    unlike the paper, no sigmoid); the spatial branch is two 7x7 convs ending in a ``dim``-channel
    sigmoid gate. There is no residual around the module.
    """

    def __init__(self, dim: int, rate: int = 4):
        super().__init__()
        hidden = dim // rate
        self.channel_attention = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(dim, hidden, 7, padding=3),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, 7, padding=3),
            nn.BatchNorm2d(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) channels-last -> (N, H, W, C)."""
        x = x * self.channel_attention(x)  # quirk: no sigmoid on the channel branch
        # reason: oneDNN runs these 7x7 convs at the matmul rate from NCHW, up to 1.7x slower from NHWC
        gate = self.spatial_attention(x.permute(0, 3, 1, 2).contiguous())
        return x * torch.sigmoid(gate).permute(0, 2, 3, 1)
