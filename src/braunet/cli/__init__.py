"""The ``braunet`` command line: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (argparse only, cheap)
and ``run(args) -> int`` (imports torch and friends lazily), so ``braunet --help`` stays fast.
Errors derived from :class:`braunet.errors.BraunetError`, and missing files, become one line on
stderr and exit code 2 instead of a traceback; an :class:`~braunet.errors.InputWarning` (an input
read under an assumption) becomes one ``braunet COMMAND: warning: PATH: ...`` line. Ctrl-C (SIGINT) and
SIGTERM (``kill``, a job scheduler's stop) both raise inside the running command, so every temporary
file and staging folder is removed on the way out (``braunet._atomic``); the exit codes are 130 and 143.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

from braunet.errors import BraunetError, InputWarning

__all__ = ["Terminated", "main"]

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


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, as Python raises KeyboardInterrupt on SIGINT.

    A BaseException, like KeyboardInterrupt, so ``except Exception`` clauses do not swallow it
    while ``finally`` blocks (temporary files, staging folders) still run.
    """


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # reason: signal handlers can only be set from the main thread (e.g. main() in a test's thread)
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        show = warnings.showwarning

        def one_line(message: Warning | str, category: type[Warning], *rest: Any, **options: Any) -> None:
            if issubclass(category, InputWarning):
                print(f"braunet {args.command}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, *rest, **options)

        warnings.showwarning = one_line
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        with _sigterm_raises():
            return int(args.run(args) or 0)
    except (BraunetError, FileNotFoundError, PermissionError, IsADirectoryError) as error:
        print(f"braunet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"braunet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"braunet {args.command}: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
