"""BRAU-Net++ (Lan et al., IEEE TETCI 2024, arXiv:2401.00722), faithful to the official code.

A U-shaped hybrid: a conv stem and strided-conv downsampling, BiFormer-style blocks with
bi-level routing attention (BRA) at 1/4, 1/8 and 1/16 resolution, a conv bottleneck, a decoder of
BRA blocks with learned pixel-shuffle upsampling, and SCCSA attention on the skip connections.

Module names follow the official ``BRAUnetSystem`` so official checkpoints convert by renaming
prefixes only (:mod:`braunet.model.official`). Internally every feature map is channels-last
``(N, H, W, C)`` (the official code's ``(N, H*W, C)`` tokens are the same memory) and convolutions
run on channels-last tensors, so no layout copies happen between blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from braunet.model.blocks import Block
from braunet.model.config import BRAUNetConfig
from braunet.model.patch_ops import FinalPatchExpand, PatchExpand
from braunet.model.sccsa import SCCSA

__all__ = ["BRAUNet"]


def _conv_bn(in_chans: int, out_chans: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1), nn.BatchNorm2d(out_chans)]


def _drop_path_rates(total: int, rate: float) -> list[float]:
    return [rate * i / (total - 1) for i in range(total)] if total > 1 else [0.0] * total  # = linspace(0, rate, total)


class DecoderStage(nn.Module):
    """Blocks at one decoder resolution, then (except for the last) a 2x PatchExpand."""

    def __init__(self, blocks: list[Block], upsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, 2H, 2W, C/2), or (N, H, W, C) for the last stage."""
        for block in self.blocks:
            x = block(x)
        return self.upsample(x) if self.upsample is not None else x


class BRAUNet(nn.Module):
    """BRAU-Net++ segmentation network.

    Args:
        config: architecture; see :class:`braunet.model.BRAUNetConfig` and its presets.

    Forward: images (N, in_chans or 1, img_size, img_size) -> raw logits (N, num_classes, img_size,
    img_size). A 1-channel input is repeated to 3 channels, as the official wrapper does.
    """

    def __init__(self, config: BRAUNetConfig):
        super().__init__()
        self.config = config
        c = config
        dims, heads = c.embed_dim, c.num_heads

        def block(stage: int, drop_path: float, topk: int) -> Block:
            return Block(
                dims[stage], heads[stage], c.n_win, c.qk_dims[stage], topk, c.mlp_ratios[stage],
                drop_path, c.side_dwconv, c.before_attn_dwconv,
            )

        if c.use_sccsa:  # on the [decoder, skip] concatenations at 1/4, 1/8, 1/16
            self.sccsa1, self.sccsa2, self.sccsa3 = (SCCSA(2 * dims[i]) for i in range(3))
        stem = [nn.Conv2d(c.in_chans, dims[0] // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dims[0] // 2), nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1), nn.BatchNorm2d(dims[0])]
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(*stem)] + [nn.Sequential(*_conv_bn(dims[i], dims[i + 1])) for i in range(3)]
        )
        rates = _drop_path_rates(sum(c.depth), c.drop_path_rate)
        self.stages = nn.ModuleList()
        for i in range(4):  # stages[3] (global attention) is the bottleneck the official forward skips
            first = sum(c.depth[:i])
            self.stages.append(nn.Sequential(*(block(i, rates[first + j], c.topks[i]) for j in range(c.depth[i]))))

        self.layers_up = nn.ModuleList([PatchExpand(dims[3])])
        for i in (1, 2, 3):
            stage = 3 - i
            rates_up = _drop_path_rates(c.depths_decoder[i], c.drop_path_rate)
            blocks = [block(stage, rates_up[j], c.topks[stage]) for j in range(c.depths_decoder[i])]
            self.layers_up.append(DecoderStage(blocks, PatchExpand(dims[stage]) if i < 3 else None))
        self.concat_back_dim = nn.ModuleList([nn.Identity()] + [nn.Linear(2 * dims[3 - i], dims[3 - i]) for i in (1, 2, 3)])
        self.norm_up = nn.LayerNorm(dims[0])
        self.up4 = FinalPatchExpand(dims[0])
        self.output = nn.Conv2d(dims[0], c.num_classes, 1, bias=False)
        self.apply(_init_weights)

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder. x: (N, 3, S, S) -> bottleneck (N, S/32, S/32, C3) and skips at S/4, S/8, S/16 (NHWC)."""
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for i in range(3):
            x = self.downsample_layers[i](x).permute(0, 2, 3, 1)  # channels-last memory: a free view
            x = self.stages[i](x)
            skips.append(x)
            x = x.permute(0, 3, 1, 2)
        x = self.downsample_layers[3](x).permute(0, 2, 3, 1)
        if self.config.bottleneck_blocks:  # the paper's bottleneck; the official forward skips it
            x = self.stages[3](x)
        return x, skips

    def forward_decoder(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        """Decoder. Bottleneck (N, S/32, S/32, C3) -> features (N, S/4, S/4, C0) after norm_up."""
        x = self.layers_up[0](x)
        for i in (1, 2, 3):
            x = torch.cat([x, skips[3 - i]], dim=-1)  # decoder features first, skip second
            if self.config.use_sccsa:
                x = getattr(self, f"sccsa{4 - i}")(x)
            x = self.layers_up[i](self.concat_back_dim[i](x))
        return self.norm_up(x)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, in_chans or 1, S, S) -> logits (N, num_classes, S, S)."""
        self._check_input(x)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        features = self.forward_decoder(*self.forward_features(x))
        return self.up4.forward_logits(features, self.output.weight)

    def _check_input(self, x: Tensor) -> None:
        size, chans = self.config.img_size, self.config.in_chans
        if x.ndim != 4 or x.shape[-2:] != (size, size) or x.shape[1] not in (1, chans):
            raise ValueError(
                f"BRAUNet expects images of shape (N, {chans} or 1, {size}, {size}), got {tuple(x.shape)}; "
                "resize inputs to the model's img_size (braunet.infer does this for you)"
            )

    def bra_modules(self) -> list[tuple[str, nn.Module]]:
        """The BRA modules in execution order (encoder stages 0-2, then decoder stages 1-3)."""
        from braunet.model.bra import BiLevelRoutingAttention

        found: list[tuple[str, nn.Module]] = [
            (name, m) for name, m in self.named_modules() if isinstance(m, BiLevelRoutingAttention)
        ]
        encoder = [item for item in found if item[0].startswith("stages.")]
        decoder = [item for item in found if item[0].startswith("layers_up.")]
        return encoder + decoder


def _init_weights(module: nn.Module) -> None:
    """Official init: truncated-normal Linear weights (std 0.02), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
