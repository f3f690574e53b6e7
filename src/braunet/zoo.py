"""The bundled models: named checkpoint folders shipped inside the package.

Each model is a folder ``models/<name>/`` (``model.safetensors`` + ``card.json``) at the repository
root, reachable in the installed package as ``importlib.resources.files("braunet") / "models"``.
``BRAUNET_MODELS_DIR`` points at another folder of the same layout (a site's own model library).

:func:`load_model` accepts a bundled name or the path of any checkpoint folder, including one
written by ``braunet convert-official``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

from braunet.errors import CheckpointError
from braunet.model import BRAUNet, ModelCard, load_checkpoint, read_card
from braunet.model.checkpoint import CARD_FILE

__all__ = ["DEFAULT_MODELS", "list_models", "load_model", "model_card", "model_path", "models_dir"]

# The model `braunet predict` uses when --model is not given, by kind of input.
DEFAULT_MODELS = {"volume": "ct-abdomen-8", "image": "polyp"}


def models_dir() -> Path:
    """The folder holding the bundled models (``$BRAUNET_MODELS_DIR`` if set)."""
    override = os.environ.get("BRAUNET_MODELS_DIR")
    if override:
        return Path(override).expanduser()
    return Path(str(resources.files("braunet") / "models"))


def list_models() -> list[str]:
    """Names of the bundled models (folders with a card.json), sorted."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CARD_FILE).is_file())


def model_path(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint folder of a bundled name or of an explicit path.

    Raises:
        CheckpointError: neither a checkpoint folder nor a bundled model; lists the bundled ones.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        hint = " (an official .pth: convert it first with `braunet convert-official IN.pth OUT_DIR`)" if path.suffix in (
            ".pth", ".pt", ".ckpt"
        ) else ""
        raise CheckpointError(f"{path}: is a file; a model is a folder with model.safetensors and card.json{hint}")
    bundled = models_dir() / text
    if os.sep not in text and "/" not in text and (bundled / CARD_FILE).is_file():
        return bundled
    available = ", ".join(list_models()) or "none installed"
    raise CheckpointError(
        f"model {text!r}: no such checkpoint folder or bundled model (bundled models in {models_dir()}: {available})"
    )


def model_card(name_or_path: str | os.PathLike) -> ModelCard:
    """The card of a bundled or on-disk model, without loading its weights."""
    return read_card(model_path(name_or_path))


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[BRAUNet, ModelCard]:
    """Load a bundled model by name, or any checkpoint folder; the model is in eval mode on ``device``.

    ``device`` may be "auto" (CUDA, then MPS, then CPU).

    Raises:
        CheckpointError: unknown name, missing or inconsistent files.
        InputError: the device is not available.
    """
    from braunet.infer.device import resolve_device

    return load_checkpoint(model_path(name_or_path), resolve_device(device))
