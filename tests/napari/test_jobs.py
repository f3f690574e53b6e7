"""Job: napari's progress bar appears only for work that outlasts BAR_DELAY_S, and then shows the
progress reported before it existed; a quick job never creates one."""

from __future__ import annotations

import threading

import pytest

BAR_DELAY_S = 0.4  # braunet.napari._jobs.BAR_DELAY_S (imported in the tests: it needs Qt)


@pytest.fixture()
def bars(monkeypatch):
    """Every napari progress bar a Job creates, recorded (the real bar, so close() is exercised)."""
    import napari.utils

    from braunet.napari import _jobs

    assert _jobs.BAR_DELAY_S == BAR_DELAY_S
    made = []
    real = napari.utils.cancelable_progress

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(napari.utils, "cancelable_progress", recording)
    return made


def test_a_quick_job_shows_no_progress_bar(qtbot, bars, monkeypatch):
    from braunet.napari import _jobs

    monkeypatch.setattr(_jobs, "BAR_DELAY_S", 2.0)  # reason: "quick" must hold on a loaded 2-core machine too
    job = _jobs.Job(lambda progress, should_stop: 42, "quick", total=1)
    results = []
    job.done.connect(results.append)
    with qtbot.waitSignal(job.finished, timeout=5000):
        job.start()
    qtbot.wait(2200)  # past the moment the bar would have appeared
    assert results == [42] and bars == [] and not job.running


def test_a_long_job_shows_the_bar_with_its_earlier_progress_and_closes_it(qtbot, bars):
    from braunet.napari._jobs import Job

    release = threading.Event()

    def work(progress, should_stop):
        progress(3, 10)  # before the bar exists
        release.wait(10)
        return "done"

    job = Job(work, "long job", total=10)
    with qtbot.waitSignal(job.finished, timeout=10000):
        job.start()
        qtbot.waitUntil(lambda: len(bars) == 1, timeout=5000)
        assert bars[0].n == 3 and bars[0].total == 10 and bars[0].desc.startswith("long job")
        release.set()
    assert job._bar is None  # closed when the job ended


def test_cancel_from_the_bar_stops_the_job(qtbot, bars):
    from braunet.napari._jobs import Job

    def work(progress, should_stop):
        while not should_stop():
            threading.Event().wait(0.01)
        from braunet.errors import Cancelled

        raise Cancelled("stopped")

    job = Job(work, "cancellable", total=0)
    cancelled = []
    job.cancelled.connect(lambda: cancelled.append(True))
    with qtbot.waitSignal(job.finished, timeout=10000):
        job.start()
        qtbot.waitUntil(lambda: len(bars) == 1, timeout=5000)
        bars[0].cancel()  # napari's Cancel on the activity dock's bar
    assert cancelled == [True]
