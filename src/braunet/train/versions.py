"""Writing model versions and rolling back: one folder per version, each card naming its parent.

Layout under a versions root (the library, :func:`braunet.zoo.library_dir`: ``$BRAUNET_MODELS_DIR``
or ``~/.braunet/models``; a project folder in tests)::

    root/<name>/v1/   model.safetensors  card.json  [anchors.npz]
    root/<name>/v2/   ...                card.json: "version": 2, "parent": "<name>@1"

``braunet finetune`` and the napari Fine-tune widget both save through :func:`save_version`, so a
version saved in either is ``--model <name>@2`` everywhere (:func:`braunet.zoo.resolve_model` reads
the layout; ``braunet models`` lists it). A fine-tune never overwrites: :func:`save_version` refuses
an existing version folder, and a version folder is staged and renamed into place complete, so two
writers of one version cannot both succeed (:func:`claim_version` refuses the second up front).
Rolling back does not delete anything either: :func:`rollback` loads the parent of a version, and
the caller decides which version to use. The bundled models (version 1) are the root of every chain.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from braunet._atomic import StagedFolder, stage_folder
from braunet.errors import OutputError
from braunet.model import BRAUNet, ModelCard, load_checkpoint, read_card, save_checkpoint
from braunet.zoo import ANCHORS_FILE, resolve_model, version_dir

__all__ = ["claim_version", "rollback", "save_version", "write_version"]


def write_version(
    model: BRAUNet,
    card: ModelCard,
    folder: str | os.PathLike | StagedFolder,
    *,
    anchors_from: str | os.PathLike | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` and ``card`` as the model folder ``folder`` (atomically); return it.

    The weights, card and anchors are written into a staging folder that is renamed into place
    only when complete (:class:`braunet._atomic.StagedFolder`), so an interrupt leaves no folder
    that fails to load or blocks the next attempt.

    Args:
        folder: the new folder, or a :class:`~braunet._atomic.StagedFolder` claimed earlier with
            :func:`claim_version` (a caller that must refuse a taken target before long work).
        anchors_from: a model folder whose ``anchors.npz`` (replay set for fine-tuning) is copied
            along, so the next fine-tune of this version can replay it too.
        half: store float16 weights.

    Raises:
        OutputError: ``folder`` exists and is not an empty folder, is being written by another
            process, or cannot be written.
    """
    stage = folder if isinstance(folder, StagedFolder) else claim_version(folder)
    with stage:
        save_checkpoint(model, card, stage.path, half=half)
        if anchors_from is not None and (Path(anchors_from) / ANCHORS_FILE).is_file():
            shutil.copy2(Path(anchors_from) / ANCHORS_FILE, stage.path / ANCHORS_FILE)
        return stage.commit()


def claim_version(folder: str | os.PathLike) -> StagedFolder:
    """Claim the new model folder ``folder`` now (missing parents are created when it is written).

    Returns the staging folder to pass to :func:`write_version`; a second claim of the same folder
    (another process, the same slot ``NAME@N``) is refused until this one is committed or
    discarded. Leave it unused (or call ``discard``) when nothing is to be written.

    Raises:
        OutputError: the folder is taken, being written, or cannot be created.
    """
    return stage_folder(folder, parents=True)


def save_version(
    model: BRAUNet,
    card: ModelCard,
    root: str | os.PathLike | None = None,
    *,
    anchors_from: str | os.PathLike | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` as ``root/<card.name>/v<card.version>`` and return that folder.

    Args:
        root: the versions root; default the library (:func:`braunet.zoo.library_dir`).
        anchors_from, half: as for :func:`write_version`.

    Raises:
        OutputError: the version folder already exists (versions are never overwritten) or
            ``root`` cannot be written.
    """
    from braunet.zoo import library_dir

    folder = version_dir(library_dir() if root is None else root, card.name, card.version)
    if folder.exists():
        raise OutputError(f"{folder}: version {card.version} of {card.name!r} exists; versions are never overwritten")
    return write_version(model, card, folder, anchors_from=anchors_from, half=half)


def rollback(
    folder: str | os.PathLike, root: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[BRAUNet, ModelCard, Path]:
    """Load the parent of the model in ``folder``: ``(model, card, parent_folder)``.

    The parent is resolved from its ``name@version`` reference (:func:`braunet.zoo.resolve_model`)
    under ``root`` (default: the folder that holds ``folder``'s own version folders, i.e.
    ``folder/../..``), else among the bundled models. Nothing is deleted.

    Raises:
        CheckpointError: the model has no parent (an original) or the parent cannot be found.
    """
    from braunet.errors import CheckpointError

    folder = Path(folder)
    card = read_card(folder)
    if not card.parent:
        raise CheckpointError(f"{folder}: {card.name} v{card.version} has no parent version to roll back to")
    if root is None:
        root = folder.resolve().parent.parent
    parent_folder = resolve_model(card.parent, root=root).folder
    model, parent_card = load_checkpoint(parent_folder, device)
    return model, parent_card, parent_folder
