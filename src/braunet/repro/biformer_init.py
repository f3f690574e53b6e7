"""Start the encoder from a BiFormer ImageNet checkpoint, as the official ``BRAUnet.load_from()`` does.

The official rule (``shared/fixtures/biformer/README.md`` documents it on the real key layout):
take the checkpoint's ``model`` entry; a key whose name (without ``bra_unet.``) exists in the
network with the same shape is copied; a key with the same name but another shape is dropped; a
key with no such name is ignored; every network key that got nothing keeps its random init. No
renaming, no encoder-to-decoder mirroring. For BiFormer-base that means depth truncation: encoder
stage i, block j gets BiFormer's stage i, block j (the first 2, 2, 8 and 2 blocks), the stem and
the four downsampling convs; the decoder, SCCSA and head stay random.

Our module names equal the official ones except BRA's ``attn.qkv`` Linear (official
``attn.qkv.qkv``, a wrapper module); names are translated with
:func:`braunet.model.official.convert_official_state_dict` and reported in official spelling, so a
report compares line by line with the official ``load_from`` print.

Training checkpoints (BiFormer's ``best.pth``, official BRAU-Net++ saves) pickle more than tensors:
an ``argparse.Namespace`` of the run's arguments (possibly holding ``pathlib`` paths), optimizer and
scheduler state (plain dicts), numbers. They are read with ``torch.load(weights_only=True)`` plus an
allow-list of exactly those harmless classes (:data:`TRAINING_CHECKPOINT_GLOBALS`); paths become
pure paths, which never touch the file system. Any other class is refused before anything runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from braunet.errors import CheckpointError
from braunet.model.official import (  # noqa: F401 - the allow-list and its reader are re-exported here
    TRAINING_CHECKPOINT_GLOBALS,
    convert_official_state_dict,
    read_training_checkpoint,
    unwrap_state_dict,
)

__all__ = [
    "TRAINING_CHECKPOINT_GLOBALS",
    "InitReport",
    "init_encoder_from_biformer",
    "official_key_names",
    "read_training_checkpoint",
]

def official_key_names(model: nn.Module) -> dict[str, str]:
    """Our state-dict key -> the official ``BRAUnetSystem`` key (without ``bra_unet.``).

    Only BRA's fused projection differs: ours ``<block>.attn.qkv.weight``, official
    ``<block>.attn.qkv.qkv.weight``. The global-attention blocks of ``stages[3]`` keep ``attn.qkv``.
    """
    from braunet.model.bra import BiLevelRoutingAttention

    bra_prefixes = {f"{name}.qkv." for name, module in model.named_modules()
                    if isinstance(module, BiLevelRoutingAttention)}
    names = {}
    for key in model.state_dict():
        prefix = next((p for p in bra_prefixes if key.startswith(p)), None)
        names[key] = f"{prefix}qkv.{key[len(prefix):]}" if prefix else key
    return names


@dataclass
class InitReport:
    """What :func:`init_encoder_from_biformer` did, in official key names and checkpoint order.

    Attributes:
        source: the checkpoint (file name or "state dict").
        loaded: checkpoint keys copied into the network.
        dropped_missing: checkpoint keys with no network key of that name (ignored).
        dropped_shape: ``(key, checkpoint shape, network shape)`` of same-name keys that differ in shape.
        left_random: network keys that received nothing (network order).
        loaded_unused: loaded keys of modules the forward pass never runs (``stages.3`` unless
            ``bottleneck_blocks``).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    dropped_missing: list[str] = field(default_factory=list)
    dropped_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    left_random: list[str] = field(default_factory=list)
    loaded_unused: list[str] = field(default_factory=list)
    loaded_elements: int = 0

    def summary(self) -> str:
        """One paragraph for logs and the CLI."""
        lines = [
            (
                f"encoder initialised from {self.source}: {len(self.loaded)} tensors loaded "
                f"({self.loaded_elements:,} values; {len(self.loaded_unused)} of them in the never-run "
                f"bottleneck blocks), {len(self.dropped_missing)} checkpoint tensors without a matching name "
                f"dropped, {len(self.dropped_shape)} dropped for their shape, {len(self.left_random)} network "
                "tensors left at random init"
            ),
        ]
        for key, ckpt, ours in self.dropped_shape[:5]:
            lines.append(f"  shape mismatch: {key} checkpoint {list(ckpt)} vs network {list(ours)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Counts and the key lists, for the model card."""
        return {
            "source": self.source,
            "n_loaded": len(self.loaded), "n_dropped_missing": len(self.dropped_missing),
            "n_dropped_shape": len(self.dropped_shape), "n_left_random": len(self.left_random),
            "n_loaded_unused": len(self.loaded_unused), "loaded_elements": self.loaded_elements,
            "dropped_shape": [[k, list(a), list(b)] for k, a, b in self.dropped_shape],
        }


def init_encoder_from_biformer(
    model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, Any]
) -> InitReport:
    """Copy the matching tensors of a BiFormer (or any BRAU-Net++-named) checkpoint into ``model``.

    Args:
        model: a :class:`braunet.model.BRAUNet` (changed in place; tensors not loaded are untouched,
            BatchNorm counters included).
        checkpoint: a ``.pth`` file (read with :func:`read_training_checkpoint`) or an already loaded
            object: a state dict, or a dict holding it under ``model``/``state_dict``.
    Returns:
        :class:`InitReport`.
    Raises:
        CheckpointError: unreadable or unsafe file, no tensors, or nothing at all matched.
    """
    if isinstance(checkpoint, Mapping):
        source, raw = "state dict", checkpoint
    else:
        source, raw = Path(checkpoint).name, read_training_checkpoint(checkpoint)
    state = unwrap_state_dict(raw, source)
    ours_to_official = official_key_names(model)
    target = model.state_dict()
    report = InitReport(source=source)
    copied: set[str] = set()
    unused_prefix = None if getattr(getattr(model, "config", None), "bottleneck_blocks", True) else "stages.3."
    with torch.no_grad():
        for official_key, value in state.items():
            ours = next(iter(convert_official_state_dict({official_key: value})))
            name = ours_to_official.get(ours, official_key.removeprefix("module.").removeprefix("bra_unet."))
            if ours not in target:
                report.dropped_missing.append(name)
                continue
            if tuple(value.shape) != tuple(target[ours].shape):
                report.dropped_shape.append((name, tuple(value.shape), tuple(target[ours].shape)))
                continue
            _copy(target[ours], value)
            copied.add(ours)
            report.loaded.append(name)
            report.loaded_elements += value.numel()
            if unused_prefix and ours.startswith(unused_prefix):
                report.loaded_unused.append(name)
    report.left_random = [ours_to_official[k] for k in target if k not in copied]
    if not report.loaded:
        raise CheckpointError(
            f"{source}: no tensor matches the network by name and shape ({len(state)} checkpoint tensors, "
            f"e.g. {next(iter(state))!r}); is it a BiFormer or BRAU-Net++ checkpoint?"
        )
    return report


def _copy(destination: Tensor, value: Tensor) -> None:
    """Copy in place (state_dict tensors share storage with the parameters and buffers)."""
    destination.copy_(value.to(device=destination.device, dtype=destination.dtype))
