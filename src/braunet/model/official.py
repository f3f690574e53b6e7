"""Official BRAU-Net++ checkpoints: safe loading, key conversion and architecture inference.

Official checkpoints are ``torch.save(BRAUnet.state_dict())`` (keys ``bra_unet.*``, with an extra
``module.`` when saved from ``nn.DataParallel``), sometimes nested under ``model``/``state_dict``.
They are read with ``torch.load(weights_only=True)``, which refuses to run any pickled code; the
only classes allowed besides tensors and containers are those training scripts pickle beside the
weights (``argparse.Namespace``, pathlib paths): :data:`TRAINING_CHECKPOINT_GLOBALS`.

Widths, depths, MLP ratios, class count and the SCCSA switch are read from the weights. Head
count, n_win, top-k and input size leave no trace in the weights, so they come from ``config``
and default to the official wrapper's values (head_dim 32, top-k 2/4/8, 224 px, n_win 7).

:func:`convert_official` turns a checkpoint file into one of our model folders (weights, card with
class names, the official preprocessing recipe and provenance); ``braunet convert-official`` and
the napari Segment widget (through :func:`braunet.zoo.import_official`) both call it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import pathlib
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from braunet.errors import CheckpointError
from braunet.model.braunet import BRAUNet
from braunet.model.config import BRAUNetConfig, get_preset

__all__ = [
    "TRAINING_CHECKPOINT_GLOBALS",
    "convert_official",
    "convert_official_state_dict",
    "file_sha256",
    "infer_config",
    "load_official",
    "read_checkpoint_file",
    "read_training_checkpoint",
    "unwrap_state_dict",
]

_PREFIXES = ("module.", "bra_unet.")
_RGB_PRESETS = ("isic", "cpu-rgb")  # official ISIC/CVC recipe; the others get the Synapse CT recipe
_CT_PRESETS = ("synapse", "synapse-nosccsa", "cpu-ct")
_RENAMES = ((re.compile(r"\.attn\.qkv\.qkv\."), ".attn.qkv."),)  # official BRA wraps its Linear in QKVLinear


def read_checkpoint_file(path: str | os.PathLike, *, safe_globals: list[Any] | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into one CheckpointError line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    try:
        if safe_globals:
            with torch.serialization.safe_globals(safe_globals):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: refused to unpickle it: it contains objects other than tensors and plain "
            f"containers, which could run code ({first})"
        ) from error
    # reason: torch's readers fail on damaged bytes with whatever their parser hits (a KeyError for an
    # unknown opcode or record, struct.error for a short header...)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, TypeError,
            AttributeError, OverflowError, struct.error) as error:  # fmt: skip
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: {detail})") from error


# Pickled names that may appear in research training checkpoints, mapped to harmless classes.
# Paths become *pure* paths: they unpickle on every OS (the official code's import-time
# ``pathlib.PosixPath = pathlib.WindowsPath`` hack exists because concrete paths do not) and
# cannot open anything. Python 3.13 pickles paths as ``pathlib._local.*``.
TRAINING_CHECKPOINT_GLOBALS: list[Any] = [
    argparse.Namespace,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    (pathlib.PurePosixPath, "pathlib.PosixPath"),
    (pathlib.PureWindowsPath, "pathlib.WindowsPath"),
    (pathlib.PurePosixPath, "pathlib._local.PosixPath"),
    (pathlib.PureWindowsPath, "pathlib._local.WindowsPath"),
    (pathlib.PurePosixPath, "pathlib._local.PurePosixPath"),
    (pathlib.PureWindowsPath, "pathlib._local.PureWindowsPath"),
]


def read_training_checkpoint(path: str | os.PathLike) -> Any:
    """Load a research training checkpoint safely (see the module docstring).

    Raises:
        CheckpointError: missing, truncated or corrupt file, or a pickle naming any class outside
            :data:`TRAINING_CHECKPOINT_GLOBALS` (the message lists the offending names; nothing
            from the file is executed).
    """
    try:
        return read_checkpoint_file(path, safe_globals=TRAINING_CHECKPOINT_GLOBALS)
    except CheckpointError as error:
        if not isinstance(error.__cause__, pickle.UnpicklingError):
            raise
        try:  # reason: name the classes; this scan reads pickle opcodes and executes nothing
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - the original refusal is the message that matters
            names = []
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
                   for g in TRAINING_CHECKPOINT_GLOBALS}
        unknown = [n for n in names if n not in allowed]
        detail = f"it pickles {', '.join(unknown)}" if unknown else str(error)
        raise CheckpointError(
            f"{path}: refused to load: {detail}; only tensors, plain containers, argparse.Namespace and "
            "pathlib paths are accepted from training checkpoints (nothing was executed)"
        ) from error


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """Find the state dict in a loaded checkpoint (plain, or nested under ``model``/``state_dict``)."""
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: no state dict of tensors found (got {type(obj).__name__})")
    return dict(obj)


def convert_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official key names -> ours (strip ``module.``/``bra_unet.``, ``attn.qkv.qkv`` -> ``attn.qkv``)."""
    converted = {}
    for key, value in state_dict.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        for pattern, replacement in _RENAMES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted


def _count(keys: set[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def infer_config(state_dict: Mapping[str, Tensor], base: BRAUNetConfig) -> BRAUNetConfig:
    """Read widths, depths, MLP ratios, classes, in_chans and SCCSA from converted weights."""
    keys = set(state_dict)
    try:
        dims = [state_dict["downsample_layers.0.3.weight"].shape[0]] + [
            state_dict[f"downsample_layers.{i}.0.weight"].shape[0] for i in (1, 2, 3)
        ]
        in_chans = state_dict["downsample_layers.0.0.weight"].shape[1]
        num_classes = state_dict["output.weight"].shape[0]
    except KeyError as error:
        raise CheckpointError(f"not a BRAU-Net++ state dict: key {error.args[0]!r} is missing") from None
    depth = [_count(keys, rf"stages\.{i}\.(\d+)\.norm1\.weight") for i in range(4)]
    decoder = [base.depths_decoder[0]] + [_count(keys, rf"layers_up\.{i}\.blocks\.(\d+)\.norm1\.weight") for i in (1, 2, 3)]
    qk_dims, mlp_ratios = [], []
    for i in range(4):
        qkv = state_dict.get(f"stages.{i}.0.attn.qkv.weight") if depth[i] else None
        qk = (qkv.shape[0] - dims[i]) // 2 if qkv is not None and i < 3 else base.qk_dims[i] * dims[i] // base.embed_dim[i]
        qk_dims.append(qk)
        mlp = state_dict.get(f"stages.{i}.0.mlp.0.weight") if depth[i] else None
        mlp_ratios.append(mlp.shape[0] // dims[i] if mlp is not None else base.mlp_ratios[i])
    lepe = state_dict.get("stages.0.0.attn.lepe.weight")
    pos = state_dict.get("stages.0.0.pos_embed.weight")
    try:
        return base.replace(
            in_chans=in_chans, num_classes=num_classes, embed_dim=tuple(dims), qk_dims=tuple(qk_dims),
            depth=tuple(depth), depths_decoder=tuple(decoder), mlp_ratios=tuple(mlp_ratios),
            use_sccsa=any(k.startswith("sccsa1.") for k in keys),
            side_dwconv=lepe.shape[-1] if lepe is not None else base.side_dwconv,
            before_attn_dwconv=pos.shape[-1] if pos is not None else base.before_attn_dwconv,
        )
    except ValueError as error:
        raise CheckpointError(f"weights do not fit a valid BRAU-Net++ configuration: {error}") from None


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_state_dict_strict(model: BRAUNet, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load with every mismatch (missing, unexpected, misshapen keys) reported in one error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshapen = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = [
        f"{label}: {_describe(items)}"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("misshapen keys", misshapen))
        if items
    ]
    if problems:
        raise CheckpointError(f"{source}: weights do not match the BRAU-Net++ architecture; " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def load_official(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any],
    config: BRAUNetConfig | str | None = None,
) -> BRAUNet:
    """Build a :class:`BRAUNet` from an official BRAU-Net++ checkpoint, in eval mode.

    Args:
        path_or_state_dict: a ``.pth`` file or an already loaded (possibly nested) state dict.
        config: a :class:`BRAUNetConfig` or preset name giving what the weights cannot tell
            (head_dim, n_win, topks, img_size); default the official Synapse build.
    Raises:
        CheckpointError: unreadable or unsafe file, or weights that do not match the architecture.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, raw = "state dict", path_or_state_dict
    else:
        source, raw = str(path_or_state_dict), read_training_checkpoint(path_or_state_dict)
    base = get_preset(config) if isinstance(config, str) else (config or get_preset("synapse"))
    state_dict = convert_official_state_dict(unwrap_state_dict(raw, source))
    model = BRAUNet(infer_config(state_dict, base))
    load_state_dict_strict(model, state_dict, source)
    return model.eval()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (recorded in a converted model's provenance)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_official(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    preset: str | None = None,
    class_names: list[str] | None = None,
    name: str | None = None,
) -> Path:
    """Convert the official checkpoint file ``checkpoint`` into the model folder ``out_dir``; return it.

    The weights are read without executing code; widths, depths and the class count come from the
    weights, the rest from ``preset`` (default ``isic`` for a 1-class checkpoint, else
    ``synapse``). The folder (written atomically) gets ``model.safetensors`` and a card with the
    config, class names (Synapse's 8 organs or background/lesion by default), the official
    preprocessing recipe and provenance (source file name, SHA-256, date).

    Raises:
        CheckpointError: unreadable, unsafe or non-BRAU-Net++ weights.
        InputError: class names that do not match the weights.
        OutputError: ``out_dir`` exists and is not empty, or its parent is missing or read-only.
    """
    from braunet import __version__
    from braunet._atomic import check_new_folder, stage_folder
    from braunet.classes import LESION_CLASSES, class_names_for
    from braunet.infer.preprocess import official_preprocessing  # reason: lazy, braunet.infer builds on this package
    from braunet.model.checkpoint import ModelCard, save_checkpoint

    source, target = Path(checkpoint).expanduser(), check_new_folder(out_dir)

    state_dict = convert_official_state_dict(unwrap_state_dict(read_checkpoint_file(source), str(source)))
    if "output.weight" not in state_dict:
        raise CheckpointError(f"{source}: not a BRAU-Net++ checkpoint (no output.weight classifier)")
    num_classes = int(state_dict["output.weight"].shape[0])
    preset = preset or ("isic" if num_classes == 1 else "synapse")
    try:
        base = get_preset(preset)
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    try:
        model = load_official(state_dict, base)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error} (with --preset {preset})") from None
    # reason: presets of neither family (e.g. "tiny") follow the class count, as the official builds do
    kind = "rgb" if preset in _RGB_PRESETS or (preset not in _CT_PRESETS and num_classes == 1) else "ct"
    card = ModelCard(
        name=name or target.name,
        config=model.config,
        class_names=class_names_for(
            num_classes, class_names, kind=kind, binary=LESION_CLASSES, generic=False, source=str(source)
        ),
        preprocessing=official_preprocessing(kind),
        description=f"Official BRAU-Net++ weights from {source.name}, converted with braunet convert-official.",
        provenance={
            "source_file": source.name,
            "sha256": file_sha256(source),
            "converted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "converter": f"napari-braunet {__version__} convert-official",
            "origin": "official BRAU-Net++ (github.com/Caipengzhou/BRAU-Netplusplus) state dict",
            "preset": preset,
        },
        extra={"preset": preset},
    )
    with stage_folder(target) as stage:  # reason: the folder appears complete or not at all
        save_checkpoint(model, card, stage.path)
        return stage.commit()
