"""``braunet convert-official IN.pth OUT_DIR``: an official BRAU-Net++ checkpoint -> our model folder.

The weights are read without executing code (``torch.load(weights_only=True)``); widths, depths and
the class count come from the weights, what they cannot tell (input size, windows, top-k, heads)
from ``--preset`` (default: ``isic`` for a 1-class checkpoint, else ``synapse``). The folder gets
``model.safetensors`` and a ``card.json`` with the config, class names, the official
preprocessing recipe and provenance (source file name, SHA-256, date), and is usable as
``braunet predict --model OUT_DIR``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["add_parser", "convert_official", "run"]

_RGB_PRESETS = ("isic", "cpu-rgb")  # official ISIC/CVC recipe; the others get the Synapse CT recipe
_CT_PRESETS = ("synapse", "synapse-nosccsa", "cpu-ct")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-official",
        help="convert an official BRAU-Net++ .pth checkpoint into a model folder",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("checkpoint", metavar="IN.pth", help="official checkpoint (state dict)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="new model folder (must not exist, or be empty)")
    parser.add_argument(
        "--preset", help="architecture the weights were trained with: synapse or isic (any preset name is accepted)"
    )
    parser.add_argument("--class-names", nargs="+", metavar="NAME", help="class names, background first")
    parser.add_argument("--name", help="model name in the card (default: the folder name)")
    parser.set_defaults(run=run)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _class_names(given: list[str] | None, num_classes: int, kind: str, source: str) -> list[str]:
    from braunet.errors import InputError
    from braunet.zoo import LESION_CLASSES, SYNAPSE8_CLASSES

    expected = max(num_classes, 2)
    if given:
        if len(given) != expected:
            raise InputError(f"{source}: --class-names has {len(given)} names, the weights have {expected} classes")
        return list(given)
    if num_classes == 1:
        return list(LESION_CLASSES)
    if num_classes == 9 and kind == "ct":
        return list(SYNAPSE8_CLASSES)
    raise InputError(f"{source}: {num_classes} output classes; name them with --class-names (background first)")


def convert_official(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    preset: str | None = None,
    class_names: list[str] | None = None,
    name: str | None = None,
) -> Path:
    """Convert ``checkpoint`` into the model folder ``out_dir`` (written atomically); return it.

    Raises:
        CheckpointError: unreadable, unsafe or non-BRAU-Net++ weights.
        InputError: class names that do not match the weights.
        OutputError: ``out_dir`` exists and is not empty, or its parent is missing or read-only.
    """
    from braunet import __version__
    from braunet.errors import CheckpointError, OutputError
    from braunet.infer.preprocess import official_preprocessing
    from braunet.model import ModelCard, get_preset, load_official, save_checkpoint
    from braunet.model.official import convert_official_state_dict, read_checkpoint_file, unwrap_state_dict

    source, target = Path(checkpoint).expanduser(), Path(out_dir).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise OutputError(f"{target}: already exists and is not an empty folder; choose a new folder")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: parent folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: parent folder {target.parent} is not writable")

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
        class_names=_class_names(class_names, num_classes, kind, str(source)),
        preprocessing=official_preprocessing(kind),
        description=f"Official BRAU-Net++ weights from {source.name}, converted with braunet convert-official.",
        provenance={
            "source_file": source.name,
            "sha256": _sha256(source),
            "converted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "converter": f"napari-braunet {__version__} convert-official",
            "origin": "official BRAU-Net++ (github.com/Caipengzhou/BRAU-Netplusplus) state dict",
            "preset": preset,
        },
        extra={"preset": preset},
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_checkpoint(model, card, staging)
        staging.chmod(0o755)  # reason: mkdtemp makes it private; a model folder is meant to be shared
        os.replace(staging, target)  # reason: the folder appears complete or not at all
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def run(args: argparse.Namespace) -> int:
    from braunet.model import read_card

    target = convert_official(
        args.checkpoint, args.out_dir, preset=args.preset, class_names=args.class_names, name=args.name
    )
    card = read_card(target)
    print(
        f"{args.checkpoint} -> {target} ({card.config.num_classes} output channel(s), "
        f"{card.config.img_size}px, {card.recipe.kind} preprocessing, classes: {', '.join(card.class_names)})"
    )
    return 0
