"""Argument types shared by the subcommand parsers (argparse only: importing this costs nothing)."""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts (batch sizes, top-N): an int >= 1, else a usage error."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
