"""``braunet convert-official IN.pth OUT_DIR``: an official BRAU-Net++ checkpoint -> our model folder.

The weights are read without executing code (``torch.load(weights_only=True)``); widths, depths and
the class count come from the weights, what they cannot tell (input size, windows, top-k, heads)
from ``--preset`` (default: ``isic`` for a 1-class checkpoint, else ``synapse``). The folder gets
``model.safetensors`` and a ``card.json`` with the config, class names, the official
preprocessing recipe and provenance (source file name, SHA-256, date), and is usable as
``braunet predict --model OUT_DIR``. The conversion itself is
:func:`braunet.model.official.convert_official`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


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


def run(args: argparse.Namespace) -> int:
    from braunet.model import read_card
    from braunet.model.official import convert_official

    target = convert_official(
        args.checkpoint, args.out_dir, preset=args.preset, class_names=args.class_names, name=args.name
    )
    card = read_card(target)
    print(
        f"{args.checkpoint} -> {target} ({card.config.num_classes} output channel(s), "
        f"{card.config.img_size}px, {card.recipe.kind} preprocessing, classes: {', '.join(card.class_names)})"
    )
    return 0
