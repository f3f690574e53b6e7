"""A plain reference BRAU-Net++: the official forward pass, op for op, as the speed baseline of the benches.

What the official code (GitHub Caipengzhou/BRAU-Netplusplus, ``networks/``; arXiv:2401.00722) computes
with its shipped settings, written out with unfused PyTorch ops and the official data layouts:
``(B, H*W, C)`` tokens between blocks, NCHW for every convolution, and a bi-level routing attention
that partitions the map into windows, routes on window means, gathers the routed windows' keys and
values with ``torch.gather`` over a ``(N, p^2, p^2, hw, C)`` expanded view (materialising the
``topk``-fold copy) and runs an explicit softmax attention matrix. The quirks of the released model
are kept (``../shared/notes/official-architecture.md`` section 0): no identity path in the blocks,
``norm1`` twice, ``qk_dim ** -0.5`` scale, no sigmoid on SCCSA's channel branch, the bottleneck
blocks built but never run.

It is independent of :mod:`braunet.model`'s layers (only the config comes from there) and its
parameter names are ours, so ``ReferenceBRAUNet(config).load_state_dict(BRAUNet(config).state_dict())``
works as is (official checkpoints load after :func:`braunet.model.convert_official_state_dict`).
``tests/model/test_reference_baseline.py`` checks it against ``braunet.model`` and the official
fixtures; ``tests/model/bra_oracle.py`` tests our fast BRA against :func:`gather_bra`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from braunet.model.config import BRAUNetConfig

__all__ = ["ReferenceBRAUNet", "gather_bra"]


def gather_bra(
    x: Tensor, qkv_weight: Tensor, qkv_bias: Tensor | None, lepe_weight: Tensor, lepe_bias: Tensor | None,
    wo_weight: Tensor, wo_bias: Tensor | None, *, n_win: int, topk: int, num_heads: int, qk_dim: int,
) -> tuple[Tensor, Tensor]:
    """Bi-level routing attention as the official ``networks/bra.py`` computes it (identity kv-downsampling,
    no routing parameters, hard top-k, scale ``qk_dim ** -0.5``).

    Args:
        x: (N, H, W, C) with H and W divisible by ``n_win``.
        qkv_weight, qkv_bias: the qkv Linear, (2 qk_dim + C, C); output channels q | k | v.
        lepe_weight, lepe_bias: the depthwise LePE conv on V, (C, 1, k, k).
        wo_weight, wo_bias: the output Linear, (C, C).
    Returns:
        the output (N, H, W, C) and the routed windows (N, p^2, topk) int64, best first;
        window ``p = row * n_win + col``.
    """
    n, height, width, channels = x.shape
    s, h, w = n_win, height // n_win, width // n_win
    p2, hw, heads = s * s, h * w, num_heads
    scale = qk_dim**-0.5

    # Windows: (N, p^2, h, w, C), pixels row-major inside each window; the projection runs on them.
    windows = x.reshape(n, s, h, s, w, channels).permute(0, 1, 3, 2, 4, 5).reshape(n, p2, h, w, channels)
    q, kv = F.linear(windows, qkv_weight, qkv_bias).split([qk_dim, qk_dim + channels], dim=-1)
    q_pix = q.reshape(n, p2, hw, qk_dim)
    kv_pix = kv.reshape(n, p2, hw, qk_dim + channels)

    # LePE: depthwise conv on V over the whole map (it crosses window borders).
    v_map = kv[..., qk_dim:].reshape(n, s, s, h, w, channels).permute(0, 5, 1, 3, 2, 4)
    lepe = F.conv2d(v_map.reshape(n, channels, height, width), lepe_weight, lepe_bias,
                    padding=lepe_weight.shape[-1] // 2, groups=channels).permute(0, 2, 3, 1)  # (N, H, W, C)

    # Region level: window means of q and k, routing logits, top-k (not differentiated; routing weights unused).
    q_win, k_win = q.mean(dim=(2, 3)).detach(), kv[..., :qk_dim].mean(dim=(2, 3)).detach()  # (N, p^2, qk)
    r_idx = torch.topk((q_win * scale) @ k_win.transpose(-2, -1), k=topk, dim=-1).indices  # (N, p^2, topk)

    # Gather the routed windows' keys and values for every query window: (N, p^2, topk, hw, qk + C).
    index = r_idx.view(n, p2, topk, 1, 1).expand(-1, -1, -1, hw, qk_dim + channels)
    kv_sel = torch.gather(kv_pix.view(n, 1, p2, hw, -1).expand(-1, p2, -1, -1, -1), dim=2, index=index)
    k_sel, v_sel = kv_sel.split([qk_dim, channels], dim=-1)

    # Token level: heads own consecutive channel blocks; keys of the topk windows are concatenated.
    q_h = q_pix.reshape(n * p2, hw, heads, qk_dim // heads).transpose(1, 2)  # (N p^2, m, hw, d)
    k_h = k_sel.reshape(n * p2, topk * hw, heads, qk_dim // heads).permute(0, 2, 3, 1)  # (N p^2, m, d, topk hw)
    v_h = v_sel.reshape(n * p2, topk * hw, heads, channels // heads).transpose(1, 2)  # (N p^2, m, topk hw, dv)
    attn = torch.softmax((q_h * scale) @ k_h, dim=-1)  # (N p^2, m, hw, topk hw)
    out = attn @ v_h  # (N p^2, m, hw, dv)
    out = out.reshape(n, s, s, heads, h, w, channels // heads).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(n, height, width, channels)
    return F.linear(out + lepe, wo_weight, wo_bias), r_idx


def _drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth per sample; kept samples scaled by 1/(1-p) (timm's DropPath)."""
    if p == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - p)
    return x * keep / (1 - p)


class RoutingAttention(nn.Module):
    """Parameters of one BRA (names as ours: ``qkv``, ``lepe``, ``wo``); the computation is :func:`gather_bra`."""

    def __init__(self, dim: int, num_heads: int, n_win: int, qk_dim: int, topk: int, side_dwconv: int):
        super().__init__()
        self.num_heads, self.n_win, self.qk_dim, self.topk = num_heads, n_win, qk_dim, topk
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
        self.wo = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        out, _ = gather_bra(x, self.qkv.weight, self.qkv.bias, self.lepe.weight, self.lepe.bias, self.wo.weight,
                            self.wo.bias, n_win=self.n_win, topk=self.topk, num_heads=self.num_heads, qk_dim=self.qk_dim)
        return out


class UnusedGlobalAttention(nn.Module):
    """The bottleneck blocks' global attention (official ``AttentionLePE``): weights only.

    The official forward never runs ``stages[3]``; the parameters exist so that the same state dict loads.
    """

    def __init__(self, dim: int, side_dwconv: int):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("the official BRAU-Net++ forward never runs the bottleneck blocks")


class Block(nn.Module):
    """The official block on tokens (B, H*W, C): ``y = LN1(x) + DWConv(LN1(x))``, then
    ``y + BRA(LN1(y))`` and ``+ MLP(LN2(.))``; the block input is not kept (official quirk)."""

    def __init__(self, dim: int, resolution: int, num_heads: int, qk_dim: int, topk: int, config: BRAUNetConfig,
                 mlp_ratio: float, drop_path: float):
        super().__init__()
        self.resolution, self.drop_path = resolution, drop_path
        kernel = config.before_attn_dwconv
        self.pos_embed = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn: nn.Module = (RoutingAttention(dim, num_heads, config.n_win, qk_dim, topk, config.side_dwconv)
                                if topk > 0 else UnusedGlobalAttention(dim, config.side_dwconv))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Identity(), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H*W, C) tokens -> (B, H*W, C)."""
        b, length, c = x.shape
        assert length == self.resolution**2, "input feature has wrong size"
        x = self.norm1(x).view(b, self.resolution, self.resolution, c).permute(0, 3, 1, 2)  # NCHW
        x = (x + self.pos_embed(x)).permute(0, 2, 3, 1)  # NHWC
        x = x + _drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        x = x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        return x.permute(0, 3, 1, 2).flatten(2).transpose(1, 2)


def _pixel_shuffle_tokens(x: Tensor, side: int, scale: int) -> Tensor:
    """(B, side^2, scale^2 C) tokens, channels read as (p1, p2, c) -> (B, (scale side)^2, C) tokens."""
    b, _, channels = x.shape
    c = channels // scale**2
    x = x.view(b, side, side, scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, side * scale, side * scale, c).view(b, -1, c)


class PatchExpand(nn.Module):
    """2x upsampling: Linear(C -> 2C), (p1 p2 c) pixel shuffle, LayerNorm(C/2), on (B, side^2, C) tokens."""

    def __init__(self, dim: int, side: int):
        super().__init__()
        self.side = side
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, side^2, C) tokens, or the (B, C, side, side) bottleneck map -> (B, (2 side)^2, C/2)."""
        if x.ndim == 4:  # the bottleneck's NCHW map (official layers_up[0])
            x = x.permute(0, 2, 3, 1).flatten(1, 2)
        return self.norm(_pixel_shuffle_tokens(self.expand(x), self.side, 2))


class FinalPatchExpand(nn.Module):
    """4x upsampling before the classifier: Linear(C -> 16C, no bias), (p1 p2 c) shuffle, LayerNorm(C)."""

    def __init__(self, dim: int, side: int):
        super().__init__()
        self.side = side
        self.expand = nn.Linear(dim, 16 * dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, side^2, C) -> (B, (4 side)^2, C)."""
        return self.norm(_pixel_shuffle_tokens(self.expand(x), self.side, 4))


class SCCSA(nn.Module):
    """Skip attention on NCHW maps: features times a per-pixel MLP (no sigmoid), times a sigmoid spatial gate."""

    def __init__(self, dim: int, rate: int = 4):
        super().__init__()
        self.channel_attention = nn.Sequential(nn.Linear(dim, dim // rate), nn.ReLU(inplace=True),
                                               nn.Linear(dim // rate, dim))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(dim, dim // rate, 7, padding=3), nn.BatchNorm2d(dim // rate), nn.ReLU(inplace=True),
            nn.Conv2d(dim // rate, dim, 7, padding=3), nn.BatchNorm2d(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        channel = self.channel_attention(x.permute(0, 2, 3, 1).reshape(b, h * w, c))
        x = x * channel.view(b, h, w, c).permute(0, 3, 1, 2)
        return x * self.spatial_attention(x).sigmoid()


class DecoderStage(nn.Module):
    """The blocks of one decoder resolution, then (except for the last stage) a PatchExpand."""

    def __init__(self, blocks: list[Block], upsample: PatchExpand | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L, C) tokens -> (B, 4L, C/2), or (B, L, C) for the last stage."""
        for block in self.blocks:
            x = block(x)
        return self.upsample(x) if self.upsample is not None else x


def _square(tokens: Tensor) -> Tensor:
    """(B, L, C) tokens of a square map -> (B, C, sqrt L, sqrt L) (a view, as the official code)."""
    b, length, c = tokens.shape
    side = int(math.sqrt(length))
    return tokens.reshape(b, side, side, c).permute(0, 3, 1, 2)


class ReferenceBRAUNet(nn.Module):
    """BRAU-Net++ with the official forward, from one of our configs.

    Forward: images (N, in_chans or 1, S, S) -> logits (N, num_classes, S, S); a 1-channel input is
    repeated to 3 channels (the official wrapper). Only the official forward exists here, so a config
    with ``bottleneck_blocks`` is refused.
    """

    def __init__(self, config: BRAUNetConfig):
        super().__init__()
        if config.bottleneck_blocks:
            raise ValueError("ReferenceBRAUNet: the official forward never runs the bottleneck blocks")
        self.config = c = config
        dims, heads, side = c.embed_dim, c.num_heads, c.img_size // 4

        def rates(total: int) -> list[float]:
            return torch.linspace(0, c.drop_path_rate, total).tolist() if total else []

        def block(stage: int, drop_path: float) -> Block:
            return Block(dims[stage], side >> stage, heads[stage], c.qk_dims[stage], c.topks[stage], c,
                         c.mlp_ratios[stage], drop_path)

        if c.use_sccsa:
            self.sccsa1, self.sccsa2, self.sccsa3 = (SCCSA(2 * dims[i]) for i in range(3))
        stem = nn.Sequential(
            nn.Conv2d(c.in_chans, dims[0] // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dims[0] // 2), nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1), nn.BatchNorm2d(dims[0]),
        )
        self.downsample_layers = nn.ModuleList([stem] + [
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1), nn.BatchNorm2d(dims[i + 1]))
            for i in range(3)
        ])
        encoder_rates = rates(sum(c.depth))
        self.stages = nn.ModuleList(
            nn.Sequential(*(block(i, encoder_rates[sum(c.depth[:i]) + j]) for j in range(c.depth[i])))
            for i in range(4)
        )
        self.layers_up = nn.ModuleList([PatchExpand(dims[3], side >> 3)])
        for i in (1, 2, 3):
            stage, decoder_rates = 3 - i, rates(c.depths_decoder[i])
            upsample = PatchExpand(dims[stage], side >> stage) if i < 3 else None
            self.layers_up.append(DecoderStage([block(stage, r) for r in decoder_rates], upsample))
        self.concat_back_dim = nn.ModuleList([nn.Identity()] + [nn.Linear(2 * dims[3 - i], dims[3 - i]) for i in (1, 2, 3)])
        self.norm_up = nn.LayerNorm(dims[0])
        self.up4 = FinalPatchExpand(dims[0], side)
        self.output = nn.Conv2d(dims[0], c.num_classes, 1, bias=False)
        for module in self.modules():  # the official init (weights are usually loaded over it)
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, in_chans or 1, S, S) -> logits (N, num_classes, S, S)."""
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        skips = []
        for i in range(3):  # encoder; stages[3] is never run
            x = self.stages[i](self.downsample_layers[i](x).flatten(2).transpose(1, 2))
            skips.append(x)
            x = _square(x)
        x = self.layers_up[0](self.downsample_layers[3](x))
        for i in (1, 2, 3):
            x = torch.cat([x, skips[3 - i]], dim=-1)  # decoder features first, skip second
            if self.config.use_sccsa:
                x = getattr(self, f"sccsa{4 - i}")(_square(x)).flatten(2).transpose(1, 2)
            x = self.layers_up[i](self.concat_back_dim[i](x))
        x = self.up4(self.norm_up(x))
        size = self.config.img_size
        return self.output(x.view(x.shape[0], size, size, -1).permute(0, 3, 1, 2))
