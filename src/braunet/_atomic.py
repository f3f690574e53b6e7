"""Crash-safe file writes: write a temporary file in the target folder, then rename it into place.

A rename within one folder is atomic on POSIX and Windows (``os.replace``), so a reader never sees
a half-written file and an interrupted write never destroys an existing one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from braunet.errors import OutputError

__all__ = ["atomic_path", "check_writable_target", "write_atomically", "write_checked", "write_text"]

# reason: mkstemp creates files with mode 0600; outputs should get the usual umask-based mode.
_UMASK = os.umask(0)
os.umask(_UMASK)


def check_writable_target(path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Return ``path`` as a Path after checking its folder exists, is writable and ``path`` is not an input.

    Raises:
        OutputError: naming the path and the problem.
    """
    target = Path(path).expanduser()
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{target}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: output folder {folder} is not writable")
    if target.is_dir():
        raise OutputError(f"{target}: is a folder, expected a file path")
    for source in inputs:
        source_path = Path(source).expanduser()
        if source_path.exists() and target.exists() and os.path.samefile(source_path, target):
            raise OutputError(f"{target}: refusing to overwrite the input image")
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else delete it.

    ``suffix`` defaults to the full suffix of ``path`` (``.nii.gz`` stays ``.nii.gz``) because
    writers such as nibabel choose the format from the file name.
    """
    target = Path(path)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path``; return ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_checked(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """:func:`check_writable_target`, then :func:`write_atomically`; return ``path`` as a Path.

    reason: ``os.access`` can say yes where creating the file fails (root in a read-only folder,
    network file systems), so an OSError while writing becomes one OutputError naming ``path``.
    """
    target = check_writable_target(path)
    try:
        return write_atomically(target, write)
    except OSError as error:
        raise OutputError(f"{target}: cannot write ({error.strerror or error})") from error


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` with :func:`write_checked`."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    return write_checked(path, write)
