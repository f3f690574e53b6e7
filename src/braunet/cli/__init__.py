"""The ``braunet`` command line: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (argparse only, cheap)
and ``run(args) -> int`` (imports torch and friends lazily), so ``braunet --help`` stays fast.
Errors derived from :class:`braunet.errors.BraunetError`, and missing files, become one line on
stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from braunet.errors import BraunetError

__all__ = ["main"]

# Order is the order shown by ``braunet --help``.
SUBCOMMANDS = ("demo", "predict", "models", "convert", "train", "suggest", "finetune", "evaluate")


def _build_parser() -> argparse.ArgumentParser:
    from braunet import __version__

    parser = argparse.ArgumentParser(prog="braunet", description="BRAU-Net++ medical image segmentation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"braunet.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"braunet.cli.{name}":
                raise
            continue  # reason: subcommand not written yet in this checkout
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (BraunetError, FileNotFoundError, PermissionError, IsADirectoryError) as error:
        print(f"braunet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"braunet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
