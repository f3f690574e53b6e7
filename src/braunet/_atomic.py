"""Crash-safe writes: files and folders are built under a hidden name beside the target, then renamed.

A rename within one folder is atomic on POSIX and Windows, so a reader never sees a half-written
file or model folder, and an interrupted write (an error, Ctrl-C, SIGTERM: the CLI turns both
signals into exceptions) removes its temporaries and never destroys an existing file.

- :func:`atomic_path` / :func:`write_atomically`: one file.
- :func:`atomic_paths`: several files that appear together or not at all (labels and confidence).
- :class:`StagedFolder` (:func:`stage_folder`): a new folder (a model folder: weights, card,
  anchors). Staging claims the target: the hidden ``.<name>.partial`` sibling is created with
  ``os.mkdir``, which fails if it exists, so a second writer of the same target is refused as soon
  as it asks, not after its work; the complete folder is renamed onto the target, which the
  operating system refuses if the target meanwhile holds anything (never a silent overwrite).

Contents are flushed to disk (``fsync``) before each rename, so a power cut cannot leave a renamed
but empty file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from braunet.errors import BraunetError, OutputError

__all__ = [
    "StagedFolder",
    "atomic_path",
    "atomic_paths",
    "check_new_folder",
    "check_writable_target",
    "stage_folder",
    "write_atomically",
    "write_checked",
    "write_text",
]

# reason: mkstemp creates files with mode 0600; outputs should get the usual umask-based mode.
_UMASK = os.umask(0)
os.umask(_UMASK)

_OWNER_FILE = ".owner"  # inside a staging folder: "pid host" of the process writing it


def check_writable_target(path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Return ``path`` as a Path after checking its folder exists, is writable and ``path`` is not an input.

    A target inside an input folder (a DICOM series) is refused too: the series folder is the
    input, and a label file in it would become part of the next read of that folder.

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
        if source_path.is_dir() and is_within(folder, source_path):
            raise OutputError(f"{target}: refusing to write into the input folder {source_path}")
    return target


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True if ``path`` is ``folder`` or lies inside it (symbolic links resolved)."""
    resolved, root = Path(path).resolve(), Path(folder).resolve()
    return resolved == root or root in resolved.parents


def _fsync(path: Path, *, folder: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk; folders cannot be opened on Windows."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if folder else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:  # reason: some file systems refuse fsync on a folder; the files were flushed
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike], *, suffixes: Sequence[str | None] | None = None) -> Iterator[list[Path]]:
    """Yield one temporary path next to each of ``paths``; on success move them all into place.

    The files appear together or not at all: nothing is renamed until the block has written every
    temporary file, and if a rename fails (or a signal arrives) the targets already renamed are put
    back as they were (the previous file restored from a hard link, or the new one removed). A
    :class:`~braunet.errors.BraunetError` raised in the block that names a temporary path is
    raised again naming its target, the file the user asked for.

    Args:
        suffixes: per path, the temporary file's suffix; default the full suffix of the path
            (``.nii.gz`` stays ``.nii.gz``) because writers such as nibabel choose the format from
            the file name.
    """
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    backups: dict[Path, Path | None] = {}  # target -> hard link to its previous file (None: there was none)
    try:
        for target, suffix in zip(targets, suffixes or [None] * len(targets), strict=True):
            suffix = suffix if suffix is not None else ("".join(target.suffixes) or ".tmp")
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent or ".")
            os.close(fd)
            temps.append(Path(tmp_name))
        try:
            yield list(temps)
        except BraunetError as error:
            raise _naming_targets(error, temps, targets) from error.__cause__
        for tmp in temps:
            os.chmod(tmp, 0o666 & ~_UMASK)
            _fsync(tmp)
        renamed: list[Path] = []
        try:
            for tmp, target in zip(temps, targets, strict=True):
                backups[target] = _hard_link_backup(target) if len(targets) > 1 else None
                os.replace(tmp, target)
                renamed.append(target)
        except BaseException:
            for target in renamed:
                backup = backups.pop(target)
                if backup is not None:
                    os.replace(backup, target)
                else:
                    target.unlink(missing_ok=True)
            raise
        for folder in {target.parent for target in targets}:
            _fsync(folder, folder=True)
    finally:
        for leftover in [*temps, *(b for b in backups.values() if b is not None)]:
            leftover.unlink(missing_ok=True)


def _naming_targets(error: BraunetError, temps: Sequence[Path], targets: Sequence[Path]) -> BraunetError:
    """``error`` with each temporary path in its message replaced by its target (what the user named)."""
    text = str(error)
    for tmp, target in zip(temps, targets, strict=True):
        text = text.replace(str(tmp), str(target))
    if text == str(error):
        return error
    renamed = type(error)(text)
    renamed.__traceback__ = error.__traceback__
    return renamed


def _hard_link_backup(target: Path) -> Path | None:
    """A hidden hard link to the file at ``target`` (so it survives a rename onto it), or None."""
    if not target.is_file():
        return None
    backup = target.with_name(f".{target.name}.{os.getpid()}.previous")
    backup.unlink(missing_ok=True)
    try:
        os.link(target, backup)
    except OSError:  # reason: a file system without hard links; the single-file promise still holds
        return None
    return backup


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else delete it.

    ``suffix`` defaults to the full suffix of ``path``, as for :func:`atomic_paths`.
    """
    with atomic_paths([path], suffixes=[suffix]) as (tmp,):
        yield tmp


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


def check_new_folder(path: str | os.PathLike, *, parents: bool = False) -> Path:
    """Return ``path`` as a Path after checking a new folder can be written there.

    The target must not exist, or be an empty folder; its parent must be a writable folder (with
    ``parents``: its nearest existing ancestor, the rest is created when staging).

    Raises:
        OutputError: naming the path and the problem.
    """
    target = Path(path).expanduser()
    if (target.exists() or target.is_symlink()) and (not target.is_dir() or any(target.iterdir())):
        what = "a folder with files" if target.is_dir() else "a file"
        raise OutputError(f"{target}: already exists as {what}, not an empty folder; choose a new folder")
    parent = target.parent
    if parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{target}: parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: parent folder {parent} is not writable")
    return target


class StagedFolder:
    """A new folder written under the hidden sibling ``.<name>.partial`` and renamed into place.

    Use as a context manager: write into :attr:`path`, call :meth:`commit`; leaving the block
    without committing (an error, an interrupt, a rejected result) removes the staging folder and
    leaves the target as it was. Create it with :func:`stage_folder`.

    Attributes:
        target: the folder that appears on :meth:`commit`.
        path: the staging folder to write into.
    """

    def __init__(self, target: Path, path: Path) -> None:
        self.target, self.path = target, path
        self.committed = False

    def __enter__(self) -> StagedFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.discard()

    def commit(self) -> Path:
        """Flush the staged files, rename the staging folder onto :attr:`target` and return it.

        Raises:
            OutputError: the target meanwhile became a file or a folder with contents.
        """
        (self.path / _OWNER_FILE).unlink(missing_ok=True)
        for file in self.path.rglob("*"):
            if file.is_file():
                _fsync(file)
        _fsync(self.path, folder=True)
        try:
            os.rename(self.path, self.target)  # reason: POSIX replaces only an empty folder, atomically
        except OSError as first:
            if not (self.target.is_dir() and not any(self.target.iterdir())):
                self.discard()
                raise OutputError(f"{self.target}: was written by another process meanwhile; nothing was "
                                  f"overwritten ({first.strerror or first})") from None
            self.target.rmdir()  # reason: Windows renames onto no existing folder, not even an empty one
            os.rename(self.path, self.target)
        self.committed = True
        _fsync(self.target.parent, folder=True)
        return self.target

    def discard(self) -> None:
        """Remove the staging folder and what was written into it."""
        shutil.rmtree(self.path, ignore_errors=True)


def stage_folder(target: str | os.PathLike, *, parents: bool = False) -> StagedFolder:
    """Claim ``target`` (checked with :func:`check_new_folder`) and create its staging folder.

    A staging folder left by a process that is gone (killed with SIGKILL, a power cut) is removed
    and the claim retried; one whose process still runs means another writer: refused.

    Args:
        parents: create missing parent folders (a library's ``<name>/`` folder).

    Raises:
        OutputError: the target is taken, being written by another process, or not writable.
    """
    folder = check_new_folder(target, parents=parents)
    staging = folder.with_name(f".{folder.name}.partial")
    try:
        folder.parent.mkdir(parents=parents, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot create its folder {folder.parent} ({error.strerror or error})") from None
    for attempt in range(2):
        try:
            os.mkdir(staging)
            break
        except FileExistsError:
            if attempt == 0 and _abandoned(staging):
                shutil.rmtree(staging, ignore_errors=True)
                continue
            raise OutputError(f"{folder}: another process is writing it (remove {staging} if none is)") from None
        except OSError as error:
            raise OutputError(f"{folder}: cannot create {staging} ({error.strerror or error})") from None
    (staging / _OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    return StagedFolder(folder, staging)


def _abandoned(staging: Path) -> bool:
    """True if the staging folder's owner was a process of this machine that no longer runs."""
    try:
        pid_text, host = (staging / _OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False  # reason: no owner yet (being created) or unreadable: assume a live writer
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False  # reason: this process claimed it (another thread, or an earlier claim not released)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # reason: PermissionError means it runs under another user
        return False
    return False
