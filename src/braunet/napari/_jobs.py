"""Run one engine call on a napari thread worker, with progress, cancel and clean error reporting.

The engine functions (``predict_volume``, ``finetune``) take a ``progress`` callback and a
``should_stop`` check. :class:`Job` passes them a callback that emits a Qt signal (queued to the GUI
thread, so widgets update safely) and a stop flag that :meth:`Job.cancel` sets. The result, a
cancellation or a one-line :class:`~braunet.errors.BraunetError` message arrive on the GUI thread
through ``done``, ``cancelled`` and ``failed``; layers are only written in those handlers, so a
cancelled run never leaves a half-written layer. Other exceptions go to napari's notification
manager with their traceback (they are bugs).

napari's progress bar (with its own Cancel) appears only once a job has run for
``BAR_DELAY_S``: creating it forces a Qt event pass that cost 0.02-0.06 s of every
"current slice" click (bench/bench_latency.py), and a bar that flashes for a tenth of a second
tells the user nothing. The widget's own Cancel button works from the start either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

from braunet.errors import BraunetError, Cancelled

__all__ = ["BAR_DELAY_S", "Job"]

BAR_DELAY_S = 0.4
_CANCELLED = object()


class _Failure:
    """A BraunetError's message (returned, not raised: superqt treats a returned exception as an error)."""

    def __init__(self, message: str) -> None:
        self.message = message


class Job(QObject):
    """``func(progress, should_stop) -> result`` on a worker thread.

    Signals (all delivered on the GUI thread):
        progressed(tuple): the arguments of each ``progress(...)`` call.
        done(object): the result.
        cancelled(): the run stopped at the user's request.
        failed(str): a BraunetError message (bad input, checkpoint, output...).
        finished(): after any of the three above.
    """

    progressed = Signal(object)
    done = Signal(object)
    cancelled = Signal()
    failed = Signal(str)
    finished = Signal()

    def __init__(self, func: Callable[[Callable[..., None], Callable[[], bool]], Any], description: str,
                 total: int | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        from napari.qt.threading import create_worker

        self._func = func
        self._stop = threading.Event()
        self.description = description
        self.running = False
        self.started_at = 0.0
        self.cancel_requested_at: float | None = None
        self._bar = None
        self._total = total
        self._last_progress: tuple = ()  # reported before the bar existed: applied when it appears
        self.worker = create_worker(self._run, _start_thread=False)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.progressed.connect(self._on_progress)

    # -- worker thread -------------------------------------------------------------------------
    def _run(self) -> Any:
        try:
            return self._func(self._report, self._should_stop)
        except Cancelled:
            return _CANCELLED
        except BraunetError as error:
            return _Failure(str(error))

    def _report(self, *args: Any) -> None:
        self.progressed.emit(args)

    def _should_stop(self) -> bool:
        """The engine's stop check: the widget's Cancel, or the Cancel of napari's progress bar.

        reason: napari's bar only flags ``is_canceled`` (its callback runs only while the bar is
        iterated, which a Job never does), so the flag is read here.
        """
        bar = self._bar
        if bar is not None and bar.is_canceled:
            self.cancel()
        return self._stop.is_set()

    # -- GUI thread ----------------------------------------------------------------------------
    def start(self) -> Job:
        from qtpy.QtCore import QTimer

        self.running = True
        self.started_at = time.perf_counter()
        QTimer.singleShot(round(BAR_DELAY_S * 1000), self._show_bar)
        self.worker.start()
        return self

    def _show_bar(self) -> None:
        """napari's progress bar for a job still running after BAR_DELAY_S (GUI thread)."""
        from napari.utils import cancelable_progress

        if not self.running or self._bar is not None:
            return
        self._bar = cancelable_progress(desc=self.description, total=self._total or 0, cancel_callback=self.cancel)
        if self._last_progress:
            self._on_progress(self._last_progress)

    def cancel(self) -> None:
        """Ask the engine to stop at its next check (between batches / steps)."""
        if self.running and not self._stop.is_set():
            self.cancel_requested_at = time.perf_counter()
            self._stop.set()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def _on_progress(self, args: tuple) -> None:
        """Move napari's progress bar: ``(done, total)`` counts, or an object with ``elapsed_s`` (seconds)."""
        if not args:
            return
        if self._bar is None:
            self._last_progress = args
            return
        if hasattr(args[0], "elapsed_s"):
            done, total = int(args[0].elapsed_s), self._total
        elif len(args) >= 2 and all(isinstance(a, int) for a in args[:2]):
            done, total = args[0], args[1]
        else:
            return
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.n = min(done, total) if total else done
        self._bar.refresh()

    def _on_returned(self, result: Any) -> None:
        self.running = False
        if result is _CANCELLED:
            self.cancelled.emit()
        elif isinstance(result, _Failure):
            from napari.utils.notifications import show_error

            show_error(result.message)
            self.failed.emit(result.message)
        else:
            self.done.emit(result)

    def _on_errored(self, error: Exception) -> None:
        """A bug, not bad input: napari shows the traceback; the widget gets one line."""
        self.running = False
        self.failed.emit(f"{type(error).__name__}: {error}")

    def _on_finished(self) -> None:
        self.running = False
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.finished.emit()
