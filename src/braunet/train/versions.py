"""Model versions on disk: one folder per version, each card naming its parent, and rollback.

Layout under a versions root (e.g. ``~/.braunet/models`` or a project folder)::

    root/<name>/v1/   model.safetensors  card.json  [anchors.npz]
    root/<name>/v2/   ...                card.json: "version": 2, "parent": "<name>@1"

A fine-tune never overwrites: :func:`save_version` refuses an existing version folder. Rolling back
does not delete anything either: :func:`rollback` loads the parent of a version, and the caller
decides which version to use. The bundled models (``braunet/models/<name>``, version 1) are the
root of every chain; :func:`find_version` looks there after the versions root.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from braunet.errors import CheckpointError, OutputError
from braunet.model import BRAUNet, ModelCard, load_checkpoint, read_card, save_checkpoint
from braunet.train.anchors import ANCHORS_FILE

__all__ = [
    "ANCHORS_FILE",
    "VersionInfo",
    "bundled_models_dir",
    "find_version",
    "list_versions",
    "parse_ref",
    "rollback",
    "save_version",
    "version_dir",
]

_REF = re.compile(r"^(?P<name>.+)@(?P<version>\d+)$")


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    parent: str | None
    created: str
    path: Path


def bundled_models_dir() -> Path:
    """Folder of the bundled models (``braunet/models``, or ``$BRAUNET_MODELS_DIR``; see braunet.zoo)."""
    from braunet.zoo import models_dir

    return models_dir()


def version_dir(root: str | os.PathLike, name: str, version: int) -> Path:
    return Path(root) / name / f"v{version}"


def parse_ref(ref: str) -> tuple[str, int]:
    """``"polyp@2"`` -> ``("polyp", 2)``."""
    match = _REF.match(ref.strip())
    if not match:
        raise CheckpointError(f"{ref!r}: not a model reference of the form name@version")
    return match["name"], int(match["version"])


def save_version(
    model: BRAUNet,
    card: ModelCard,
    root: str | os.PathLike,
    *,
    anchors_from: str | os.PathLike | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` as ``root/<card.name>/v<card.version>`` and return that folder.

    Args:
        anchors_from: a model folder whose ``anchors.npz`` (replay set for fine-tuning) is copied
            along, so the next fine-tune of this version can replay it too.
        half: store float16 weights.

    Raises:
        OutputError: the version folder already exists (versions are never overwritten) or
            ``root`` cannot be written.
    """
    folder = version_dir(root, card.name, card.version)
    if folder.exists():
        raise OutputError(f"{folder}: version {card.version} of {card.name!r} exists; versions are never overwritten")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder.parent}: cannot create the versions folder ({error})") from None
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_checkpoint(model, card, tmp, half=half)
    if anchors_from is not None and (Path(anchors_from) / ANCHORS_FILE).is_file():
        shutil.copy2(Path(anchors_from) / ANCHORS_FILE, tmp / ANCHORS_FILE)
    os.replace(tmp, folder)  # reason: a reader never sees a half-written version
    return folder


def list_versions(root: str | os.PathLike, name: str) -> list[VersionInfo]:
    """The versions of ``name`` under ``root``, oldest first (unreadable folders are skipped)."""
    base = Path(root) / name
    found = []
    if base.is_dir():
        for folder in base.iterdir():
            if folder.is_dir() and re.fullmatch(r"v\d+", folder.name):
                try:
                    card = read_card(folder)
                except CheckpointError:
                    continue
                found.append(VersionInfo(card.name, card.version, card.parent, card.created, folder))
    return sorted(found, key=lambda v: v.version)


def find_version(ref: str, root: str | os.PathLike | None = None) -> Path:
    """Folder of model ``name@version``: ``root/<name>/v<version>``, else a bundled model.

    Raises:
        CheckpointError: no such version.
    """
    name, version = parse_ref(ref)
    candidates = []
    if root is not None:
        candidates.append(version_dir(root, name, version))
    candidates.append(bundled_models_dir() / name)
    for folder in candidates:
        if (folder / "card.json").is_file():
            card = read_card(folder)
            if card.name == name and card.version == version:
                return folder
    searched = ", ".join(str(c) for c in candidates)
    raise CheckpointError(f"model {ref} not found (looked in {searched})")


def rollback(
    folder: str | os.PathLike, root: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[BRAUNet, ModelCard, Path]:
    """Load the parent of the model in ``folder``: ``(model, card, parent_folder)``.

    The parent is looked up by its ``name@version`` reference under ``root`` (default: the folder
    that holds ``folder``'s own version folders, i.e. ``folder/../..``) and then among the bundled
    models. Nothing is deleted.

    Raises:
        CheckpointError: the model has no parent (an original) or the parent cannot be found.
    """
    folder = Path(folder)
    card = read_card(folder)
    if not card.parent:
        raise CheckpointError(f"{folder}: {card.name} v{card.version} has no parent version to roll back to")
    if root is None:
        root = folder.resolve().parent.parent
    parent_folder = find_version(card.parent, root)
    model, parent_card = load_checkpoint(parent_folder, device)
    return model, parent_card, parent_folder
