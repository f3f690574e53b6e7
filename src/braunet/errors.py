"""Exceptions raised on bad user input.

Every message names the file (or object) and the problem, so the CLI can print it as one line
and the napari widgets can show it in a notification instead of a traceback.
"""

from __future__ import annotations


class BraunetError(Exception):
    """Base class of the errors that the CLI turns into a one-line message and exit code 2."""


class InputError(BraunetError, ValueError):
    """An input image, label map or folder cannot be used (missing, corrupt, wrong shape...)."""


class CheckpointError(BraunetError, ValueError):
    """A checkpoint cannot be loaded (truncated, unsafe pickle, wrong keys or shapes...)."""


class OutputError(BraunetError, OSError):
    """An output cannot be written (missing or read-only folder, would overwrite the input...)."""


class Cancelled(BraunetError):
    """Raised inside long work (inference, training) when the user's cancel token is set."""


class InputWarning(UserWarning):
    """An input was read, but only by assuming something its header does not say (or says twice).

    One line, ``"PATH: what is wrong; what was assumed"``, issued with :func:`warnings.warn`: the CLI
    prints it as ``braunet COMMAND: warning: ...`` and napari shows it as a notification.
    """
