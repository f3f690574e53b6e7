"""Which model: one resolver from a reference to a model folder, its card and its anchors.

A model reference is one of

* a bundled name (``polyp``): the folders shipped inside the package, ``models/<name>/`` at the
  repository root, ``importlib.resources.files("braunet") / "models"`` when installed; always
  reachable, they are version 1 of their name;
* a saved version ``NAME@N``: ``<library>/<NAME>/v<N>/``, where the library is the one folder that
  ``braunet finetune``, the napari Fine-tune widget and official-checkpoint imports write to:
  ``$BRAUNET_MODELS_DIR``, default ``~/.braunet/models`` (:func:`library_dir`). ``NAME@1`` of a
  bundled model that has no saved version 1 is the bundled model;
* a path: anything with a path separator (``./polyp``, ``~/models/x``, ``/data/ckpt``), or a bare
  name that is an existing model folder in the working directory.

A bare name that is both a bundled model and a model folder in the working directory is refused
with both candidates named, never silently shadowed. :func:`resolve_model` turns a reference into a
:class:`ModelSource` (folder, card, kind, anchors); :func:`load_model` loads it. Fine-tuning takes
its replay set from the source's folder (:attr:`ModelSource.anchors`), never from a name lookup.
:func:`default_model` is the one rule for the model used when none is named.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from braunet.errors import CheckpointError
from braunet.model import BRAUNet, ModelCard, load_checkpoint, read_card
from braunet.model.checkpoint import CARD_FILE

__all__ = [
    "ANCHORS_FILE", "ModelSource", "bundled_dir", "default_model", "import_official", "library_dir", "list_models",
    "list_versions", "load_model", "parse_ref", "resolve_model", "version_dir",
]  # fmt: skip

ANCHORS_FILE = "anchors.npz"  # the replay set stored beside a model's weights (braunet.train.anchors)

# The model used when none is named: by sample (the plugin's demo data) first, else by kind of input.
_DEFAULT_BY_INPUT = {"volume": "ct-abdomen-8", "image": "polyp"}

_VERSION_REF = re.compile(r"^(?P<name>[^/\\]+)@(?P<version>\d+)$")
_OFFICIAL_SUFFIXES = (".pth", ".pt", ".ckpt")


@dataclass(frozen=True, eq=False)
class ModelSource:
    """A resolved model: where its files are and what its card says (weights not loaded).

    ``kind`` is "bundled", "version" (a folder of the library) or "path"; ``ref`` is the
    reference that names it again: ``polyp``, ``polyp@2`` or the folder's path.
    """

    ref: str
    kind: str
    folder: Path
    card: ModelCard

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return self.card.version

    @property
    def parent(self) -> str | None:
        """``NAME@N`` of the model this one was fine-tuned from (None for an original)."""
        return self.card.parent

    @property
    def anchors(self) -> Path | None:
        """The replay set stored with this model (``folder/anchors.npz``), if it has one."""
        path = self.folder / ANCHORS_FILE
        return path if path.is_file() else None

    def load(self, device: str | torch.device = "cpu") -> tuple[BRAUNet, ModelCard]:
        """(model in eval mode on ``device``, card); ``device`` may be "auto" (CUDA, then MPS, then CPU).

        Raises:
            CheckpointError: missing or inconsistent files.
            InputError: the device is not available.
        """
        from braunet.infer.device import resolve_device

        return load_checkpoint(self.folder, resolve_device(device))


def bundled_dir() -> Path:
    """The folder holding the bundled models (inside the package; not configurable)."""
    return Path(str(resources.files("braunet") / "models"))


def library_dir() -> Path:
    """The user's model library, where saved versions live: ``$BRAUNET_MODELS_DIR`` or ``~/.braunet/models``."""
    override = os.environ.get("BRAUNET_MODELS_DIR")
    return Path(override).expanduser() if override else Path.home() / ".braunet" / "models"


def version_dir(root: str | os.PathLike, name: str, version: int) -> Path:
    """Folder of version ``version`` of ``name`` under a versions root: ``root/<name>/v<version>``."""
    return Path(root) / name / f"v{version}"


def parse_ref(ref: str) -> tuple[str, int]:
    """``"polyp@2"`` -> ``("polyp", 2)``.

    Raises:
        CheckpointError: not of the form ``name@version``.
    """
    match = _VERSION_REF.match(ref.strip())
    if not match:
        raise CheckpointError(f"{ref!r}: not a model reference of the form name@version")
    return match["name"], int(match["version"])


def list_models() -> list[str]:
    """Names of the bundled models (folders with a card.json), sorted."""
    root = bundled_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CARD_FILE).is_file())


def list_versions(name: str | None = None, root: str | os.PathLike | None = None) -> list[ModelSource]:
    """The saved versions under ``root`` (default: the library), by name then version; of ``name`` only if given.

    Folders whose card is unreadable or names another model/version are skipped.
    """
    root = Path(root) if root is not None else library_dir()
    if name is not None:
        names = [name]
    else:
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = []
    for model_name in names:
        base = root / model_name
        if not base.is_dir():
            continue
        for folder in base.iterdir():
            match = re.fullmatch(r"v(\d+)", folder.name)
            if not (match and (folder / CARD_FILE).is_file()):
                continue
            try:
                card = read_card(folder)
            except CheckpointError:
                continue
            if card.name == model_name and card.version == int(match[1]):
                found.append(ModelSource(f"{model_name}@{card.version}", "version", folder, card))
    return sorted(found, key=lambda s: (s.name, s.version))


def _is_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith("~") or text in (".", "..")


def _from_path(path: Path) -> ModelSource:
    if path.is_file():
        hint = (" (an official .pth: convert it first with `braunet convert-official IN.pth OUT_DIR`)"
                if path.suffix in _OFFICIAL_SUFFIXES else "")  # fmt: skip
        raise CheckpointError(f"{path}: is a file; a model is a folder with model.safetensors and card.json{hint}")
    if not path.is_dir():
        raise CheckpointError(f"model {str(path)!r}: no such checkpoint folder")
    return ModelSource(str(path), "path", path, read_card(path))


def _bundled(name: str) -> ModelSource | None:
    folder = bundled_dir() / name
    return ModelSource(name, "bundled", folder, read_card(folder)) if (folder / CARD_FILE).is_file() else None


def _from_version(text: str, root: Path) -> ModelSource:
    name, version = parse_ref(text)
    folder = version_dir(root, name, version)
    if (folder / CARD_FILE).is_file():
        card = read_card(folder)
        if card.name == name and card.version == version:
            return ModelSource(f"{name}@{version}", "version", folder, card)
    bundled = _bundled(name)
    if bundled is not None and bundled.version == version:
        return bundled
    saved = ", ".join(s.ref for s in list_versions(name, root))
    known = f"; saved versions: {saved}" if saved else ""
    looked = f"{folder}" + (f", bundled {bundled.folder}" if bundled is not None else "")
    raise CheckpointError(f"model {name}@{version} not found (looked in {looked}){known}")


def resolve_model(ref: str | os.PathLike | ModelSource, *, root: str | os.PathLike | None = None) -> ModelSource:
    """The model a reference names: a bundled name, ``NAME@N`` or a path (module docstring).

    Args:
        ref: the reference (a ModelSource is returned as it is).
        root: the versions root ``NAME@N`` is looked up in (default: :func:`library_dir`).

    Raises:
        CheckpointError: nothing of that name, an ambiguous bare name (both candidates named), a
            file instead of a model folder (official ``.pth`` files get the conversion hint), or
            an unreadable card.
    """
    if isinstance(ref, ModelSource):
        return ref
    if isinstance(ref, os.PathLike):
        return _from_path(Path(ref).expanduser())
    text = str(ref).strip()
    if _is_path(text):
        return _from_path(Path(text).expanduser())
    if _VERSION_REF.match(text):
        return _from_version(text, Path(root) if root is not None else library_dir())
    bundled = _bundled(text)
    local = Path(text)
    local_model = (local / CARD_FILE).is_file()
    if bundled is not None and local_model:
        raise CheckpointError(
            f"model {text!r} is ambiguous: the bundled model {text} and the model folder {local.resolve()}; "
            f"write {text}@{bundled.version} for the bundled model or ./{text} for the folder"
        )
    if bundled is not None:
        return bundled
    if local.exists():
        return _from_path(local)
    saved = ", ".join(s.ref for s in list_versions(text, root))
    if saved:
        raise CheckpointError(f"model {text!r} is not a bundled model; name one of its saved versions: {saved}")
    available = ", ".join(list_models()) or "none installed"
    raise CheckpointError(
        f"model {text!r}: no such checkpoint folder, saved version or bundled model "
        f"(bundled models in {bundled_dir()}: {available})"
    )


def load_model(ref: str | os.PathLike | ModelSource, device: str | torch.device = "cpu") -> tuple[BRAUNet, ModelCard]:
    """Load the model ``ref`` names (see :func:`resolve_model`); in eval mode on ``device``.

    ``device`` may be "auto" (CUDA, then MPS, then CPU).

    Raises:
        CheckpointError: unknown or ambiguous reference, missing or inconsistent files.
        InputError: the device is not available.
    """
    return resolve_model(ref).load(device)


def default_model(input_kind: str, sample: str | None = None) -> str:
    """The bundled model used when none is named: the sample's own model, else by kind of input.

    Args:
        input_kind: "volume" (CT) or "image" (a 2-D photograph).
        sample: a sample key of the plugin's demo data ("ct_abdomen", "colonoscopy", "dermoscopy").
    """
    from braunet.samples import SAMPLES  # reason: each sample names its own model (one table)

    if sample in SAMPLES:
        return SAMPLES[sample].default_model
    if input_kind not in _DEFAULT_BY_INPUT:
        raise ValueError(f"input kind must be one of {', '.join(_DEFAULT_BY_INPUT)}, got {input_kind!r}")
    return _DEFAULT_BY_INPUT[input_kind]


def import_official(checkpoint: str | os.PathLike, root: str | os.PathLike | None = None) -> ModelSource:
    """Convert an official BRAU-Net++ ``.pth`` into the library as ``official-<stem>@1`` and resolve it.

    The conversion is :func:`braunet.model.official.convert_official` with its defaults (preset by
    class count). Importing the same file again returns the existing version (same SHA-256);
    another file of the same name is refused instead of overwriting it.

    Raises:
        CheckpointError: unreadable or non-BRAU-Net++ weights, or a different file already
            imported under that name.
        InputError: a class count without default names (use ``braunet convert-official``).
        OutputError: the library cannot be written.
    """
    from braunet.errors import OutputError
    from braunet.model.official import convert_official, file_sha256

    source = Path(checkpoint).expanduser()
    root = Path(root) if root is not None else library_dir()
    name = "official-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", source.stem).strip("-.") or "model")
    folder = version_dir(root, name, 1)
    if (folder / CARD_FILE).is_file():
        existing = read_card(folder)
        if existing.provenance.get("sha256") == file_sha256(source):
            return ModelSource(f"{name}@1", "version", folder, existing)
        raise CheckpointError(
            f"{source}: another checkpoint was already imported as {name}@1 ({folder}); rename the file"
        )
    created = not folder.parent.exists()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder.parent}: cannot create the library folder ({error})") from None
    try:
        convert_official(source, folder, name=name)
    except BaseException:
        if created and not any(folder.parent.iterdir()):
            folder.parent.rmdir()  # reason: a failed import leaves no empty model folder in the library
        raise
    return ModelSource(f"{name}@1", "version", folder, read_card(folder))
