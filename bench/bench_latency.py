"""Interactive latency of the napari widgets: from the user's action to the layer update, against the network alone.

In a real napari viewer (``show=True``, on Xvfb when there is no display: started here if
``$DISPLAY`` is unset), with the bundled models and real shared data opened through our reader:

* ``segment``: the Segment widget in "current slice" mode on the shared CT (``ct-abdomen-8``), and on a
  CVC-ClinicDB frame (``polyp``, the whole frame): the Run button is clicked and the time runs until
  the segmentation layer holds the new labels (``update_s``) and until the canvas has painted them
  (``paint_s``; null when nothing changed on screen). The first click loads the model (cold); later
  clicks go to the slices below it (warm); a repeated run on the frame rewrites the same labels.
* ``routing``: the Routing explorer on the same images: a mouse press through the viewer's callbacks
  until the overlay is drawn (rectangles and heatmap; ``widget.last`` holds the new query). ``first``
  is the first click right after the dock opens (its warm-up worker may still run), ``same_slice``
  another point of a slice already computed (drawing only), ``new_slice`` a point on a slice not yet
  computed (one recorded forward pass).

Each record also has ``network_s``: the network alone on the same input in the same process
(``SliceRunner.logits`` on the prepared slice, same precision, best of ``--network-repeats`` after a
warm-up),
``overhead_s`` = ``update_s - network_s``, and ``breakdown``: seconds spent in the widget's steps
during that action, measured by wrapping them in this process (model loading, input and output
conversions, preprocessing, the network as run in the action, job creation and thread start-up,
the queued hand-over to the GUI thread, the layer write, the drawing steps). Spans nest:
``click_handler`` holds ``job_create`` and ``job_start``, which holds ``progress_bar`` (napari's
activity-dock bar; its creation and every ``progress_update`` run ``QApplication.processEvents``,
that is any pending repaint, inside the handler); ``predict`` holds ``prepare``, ``network``
and ``engine_other`` (input checks, reorientation, label restore). Steps absent from an action are
left out. Lines are JSON (bench/_common.emit) with the date, CPU, torch threads and load
average; on a busy machine the numbers are not figures.

Usage: ``python bench/bench_latency.py [--repeats 5] [--network-repeats 5] [--ct PATH] [--frame PATH]
[--at 0.85] [--only segment|routing] [--data ct|frame] [--threads N]``. A large CT (e.g.
``--ct $BRAUNET_DATA_DIR/msd_spleen_ct/spleen_8_ct.nii.gz --at 0.5``, 512x512 slices) shows the
per-click cost of whole-volume work that the 122x101x112 default hides.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import functools
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import REPO, emit  # noqa: E402

DATA = Path(os.environ.get("BRAUNET_DATA_DIR") or REPO.parent / "shared" / "data")
CT = DATA / "totalseg_ct" / "case01_ct.nii.gz"
FRAME = DATA / "cvc_clinicdb" / "images" / "139.tif"
PLUGIN = "napari-braunet"
MODELS = {"ct": "ct-abdomen-8", "frame": "polyp"}
_TIMEOUT_S = 600.0


# -- environment -----------------------------------------------------------------------------------
def ensure_display() -> None:
    """Start Xvfb (1280x1024x24) for this process when there is no display; napari layers need GLX."""
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SystemExit("no $DISPLAY and no Xvfb: run under xvfb-run -a, or install xvfb")
    read, write = os.pipe()
    process = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                               pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(write)
    number = b""
    while not number.endswith(b"\n"):
        chunk = os.read(read, 16)
        if not chunk:
            raise SystemExit("Xvfb did not start")
        number += chunk
    os.close(read)
    os.environ["DISPLAY"] = f":{number.decode().strip()}"
    os.environ.pop("QT_QPA_PLATFORM", None)  # xcb on Xvfb: real rendering (offscreen has no GL context)

    def stop() -> None:
        process.terminate()
        process.wait(10)

    atexit.register(stop)


def machine() -> dict[str, Any]:
    """Date, CPU, threads and load: every line carries them, so noisy figures can be recognised."""
    import torch

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


# -- spans of the widgets' steps -------------------------------------------------------------------
class Probe:
    """Wall-clock spans ``(label, start, end, thread id)`` of wrapped functions, from any thread."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float, int]] = []
        self._lock = threading.Lock()
        self.clock = time.perf_counter

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Replace ``owner.name`` (a module function or a class's method) by a timed wrapper."""
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.spans.append((label, start, time.perf_counter(), threading.get_ident()))

        setattr(owner, name, timed)

    def reset(self) -> None:
        with self._lock:
            self.spans.clear()

    def of(self, label: str, thread: int | None = None) -> list[tuple[float, float]]:
        with self._lock:
            return [(s, e) for name, s, e, t in self.spans if name == label and (thread is None or t == thread)]

    def total(self, label: str, thread: int | None = None) -> float:
        return sum(e - s for s, e in self.of(label, thread))

    def first(self, label: str) -> tuple[float, float] | None:
        found = self.of(label)
        return min(found) if found else None


def install_probes(probe: Probe) -> None:
    """Wrap the steps of both widgets (before any widget exists: Qt connections hold bound methods)."""
    import napari.utils

    import braunet.infer
    from braunet.infer.slices import SliceRunner
    from braunet.napari import _routing, _segment
    from braunet.napari._jobs import Job
    from braunet.napari._store import ModelStore

    probe.wrap(SliceRunner, "logits", "network")
    probe.wrap(SliceRunner, "prepare", "prepare")
    probe.wrap(ModelStore, "load", "model_load")
    probe.wrap(ModelStore, "copy_model", "model_copy")
    probe.wrap(Job, "__init__", "job_create")
    probe.wrap(Job, "start", "job_start")
    probe.wrap(Job, "_run", "worker")
    probe.wrap(Job, "_on_progress", "progress_update")  # napari's bar: each update spins the Qt event loop
    probe.wrap(napari.utils, "cancelable_progress", "progress_bar")  # Job.start imports it when it runs
    probe.wrap(braunet.infer, "predict", "predict")  # the widget imports it when Run is clicked
    probe.wrap(_segment, "layer_volume", "input_to_source")
    probe.wrap(_segment, "layer_from_source", "labels_to_layer")
    probe.wrap(_segment.SegmentWidget, "run", "click_handler")
    probe.wrap(_segment.SegmentWidget, "_write_result", "write_layer")
    probe.wrap(_routing.RoutingWidget, "inspect_world", "click_handler")
    probe.wrap(_routing.RoutingWidget, "_route", "route")
    probe.wrap(_routing.RoutingWidget, "_draw", "draw_rectangles")
    probe.wrap(_routing.RoutingWidget, "_finish_draw_now", "draw_heatmap")


class Painted:
    """Time of the canvas's next draw event after ``arm()`` (vispy's SceneCanvas of the viewer)."""

    def __init__(self, viewer: Any) -> None:
        self.at: float | None = None
        self._armed = False
        canvas = viewer.window._qt_viewer.canvas  # reason: napari has no public paint event
        scene = getattr(canvas, "_scene_canvas", canvas)
        scene.events.draw.connect(self._on_draw)

    def arm(self) -> None:
        self.at, self._armed = None, True

    def _on_draw(self, event: Any = None) -> None:
        if self._armed:
            self.at, self._armed = time.perf_counter(), False


def wait_for(condition: Callable[[], bool], timeout: float = _TIMEOUT_S) -> None:
    """Run the Qt event loop until ``condition()`` (checked every 5 ms; events are handled as they come)."""
    from qtpy.QtCore import QEventLoop, QTimer

    if condition():
        return
    loop, timer, deadline = QEventLoop(), QTimer(), time.perf_counter() + timeout

    def check() -> None:
        if condition() or time.perf_counter() > deadline:
            loop.quit()

    timer.timeout.connect(check)
    timer.start(5)
    loop.exec()
    timer.stop()
    if not condition():
        raise TimeoutError(f"gave up after {timeout:.0f} s")


def settle(seconds: float = 0.3) -> None:
    """Let pending timers and repaints run (between actions, so one does not leak into the next)."""
    end = time.perf_counter() + seconds
    wait_for(lambda: time.perf_counter() > end, timeout=seconds + 5)


# -- the network alone -----------------------------------------------------------------------------
def network_alone(model: Any, card: Any, raw: np.ndarray, repeats: int, pixel_mm: tuple[float, float] | None = None,
                  **runner_options: Any) -> tuple[float, str]:  # fmt: skip
    """Best-of ``repeats`` seconds of ``SliceRunner.logits`` on the prepared ``raw`` (B, H, W[, 3]); and its precision.

    ``pixel_mm``: the slices' pixel size (rows, cols) in the model's view, for a ``spacing_mm`` recipe.
    """
    from braunet.infer.slices import SliceRunner

    runner = SliceRunner(model, card.recipe, card.config.img_size, card.config.num_classes, **runner_options)
    x = runner.prepare(raw, pixel_mm)
    runner.logits(x)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        runner.logits(x)
        best = min(best, time.perf_counter() - start)
    return best, runner.precision


def raw_slices(layer: Any, card: Any, k: int | None) -> np.ndarray:
    """What the network is given for layer slice ``k`` (None: a 2-D image): (1, H, W[, 3]) in the model's view."""
    from braunet.infer.views import convert_view

    if k is None:
        return np.asarray(layer.data)[None]
    return np.ascontiguousarray(convert_view(np.asarray(layer.data[k])[None], "radiological", card.recipe.view))


def breakdown(probe: Probe, worker_threads: set[int] | None = None) -> dict[str, float]:
    """Seconds per step during one action; ``network`` counts only the action's own worker threads."""
    parts: dict[str, float] = {}
    for label in ("click_handler", "job_create", "job_start", "progress_bar", "progress_update", "model_load",
                  "model_copy", "input_to_source", "predict", "prepare", "labels_to_layer", "route", "write_layer",
                  "draw_rectangles", "draw_heatmap"):  # fmt: skip
        seconds = probe.total(label)
        if seconds:
            parts[label] = seconds
    threads = worker_threads if worker_threads is not None else {t for name, _s, _e, t in probe.spans if name == "worker"}
    network = sum(probe.total("network", t) for t in threads) if threads else probe.total("network")
    if network:
        parts["network"] = network
    if "predict" in parts:  # engine work around the network: checks, reorientation, label restore
        parts["engine_other"] = parts["predict"] - parts.get("network", 0.0) - parts.get("prepare", 0.0)
    start, worker = probe.first("job_start"), probe.first("worker")
    if start and worker:
        parts["thread_start"] = max(0.0, worker[0] - start[1])
    write = probe.first("write_layer") or probe.first("draw_rectangles")
    if worker and write and write[0] > worker[1]:
        parts["hand_over"] = write[0] - worker[1]  # queued signal to the GUI thread
    rectangles, heatmap = probe.first("draw_rectangles"), probe.first("draw_heatmap")
    if rectangles and heatmap:
        parts["draw_gap"] = max(0.0, heatmap[0] - rectangles[1])  # the deferred half of the drawing
    return {key: round(value, 4) for key, value in parts.items()}


# -- Segment ---------------------------------------------------------------------------------------
def start_slice(depth: int, at: float) -> int:
    """Layer slice ``at`` (a fraction) of the way from feet to head."""
    return int(np.clip(round(at * (depth - 1)), 0, depth - 1))


def bench_segment(kind: str, path: Path, probe: Probe, repeats: int, network_repeats: int, at: float) -> None:
    import napari

    from braunet.napari._geometry import view_pixel_mm

    viewer = napari.Viewer(show=True)
    try:
        image = viewer.open(path, plugin=PLUGIN)[0]
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
        widget.image.value = image
        widget.model.value = MODELS[kind]
        three_d = kind == "ct"
        if three_d:
            widget.slice_mode.value = "current slice"
        painted = Painted(viewer)
        depth = image.data.shape[0] if three_d else 1
        first = start_slice(depth, at)
        slices = [(first - n) % depth for n in range(1 + repeats)] if three_d else [None] * (1 + repeats)
        settle()
        for number, k in enumerate(slices):
            if k is not None:
                viewer.dims.set_point(0, image.data_to_world((k, 0, 0))[0])
                assert widget.slices_to_run() == [k]
            settle()
            probe.reset()
            painted.arm()
            clicked = time.perf_counter()
            widget.run_button.native.click()  # the user's action: changed -> SegmentWidget.run
            wait_for(lambda: bool(probe.of("write_layer")))
            updated = probe.first("write_layer")[1]
            with contextlib.suppress(TimeoutError):  # an unchanged layer is not painted again
                wait_for(lambda: painted.at is not None, timeout=2)
            assert not widget.job.running and widget.status.value.startswith(MODELS[kind]), widget.status.value
            steps = breakdown(probe)
            model, card = widget.store.load(MODELS[kind])
            network, precision = network_alone(model, card, raw_slices(image, card, k), repeats=network_repeats,
                                               pixel_mm=view_pixel_mm(image.scale, card.recipe.view),
                                               precision=str(widget.precision.value),
                                               bf16_validated=_validated(card))  # fmt: skip
            update = updated - clicked
            emit(bench="latency", widget="segment", data=kind, image=path.name, shape=list(image.data.shape),
                 model=MODELS[kind], click="first" if number == 0 else "warm", slice=k, update_s=round(update, 4),
                 paint_s=None if painted.at is None else round(painted.at - clicked, 4),
                 network_s=round(network, 4), overhead_s=round(update - network, 4), precision=precision,
                 status=widget.status.value, breakdown=steps, **machine())  # fmt: skip
    finally:
        viewer.close()


def _validated(card: Any) -> bool:
    from braunet.infer.device import bf16_validated

    return bf16_validated(card.extra)


# -- Routing explorer ------------------------------------------------------------------------------
class _Press:
    """A mouse press at a world position, as napari's mouse callbacks receive it."""

    type, view_direction, modifiers, button = "mouse_press", None, (), 1

    def __init__(self, position: tuple[float, ...], dims_displayed: list[int]) -> None:
        self.position, self.dims_displayed = position, dims_displayed


def bench_routing(kind: str, path: Path, probe: Probe, repeats: int, network_repeats: int, at: float) -> None:
    import napari
    from napari.utils.interactions import mouse_press_callbacks

    from braunet.napari._geometry import view_pixel_mm

    viewer = napari.Viewer(show=True)
    try:
        image = viewer.open(path, plugin=PLUGIN)[0]
        three_d = kind == "ct"
        rows, cols = image.data.shape[1:3] if three_d else image.data.shape[:2]
        depth = image.data.shape[0] if three_d else 1
        middle = start_slice(depth, at)
        if three_d:
            viewer.dims.set_point(0, image.data_to_world((middle, 0, 0))[0])
        settle()
        probe.reset()
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Routing explorer")
        widget.image.value = image
        widget.model.value = MODELS[kind]
        rng = np.random.default_rng(0)
        plan = [("first", middle)] + [("same_slice", middle)] * repeats
        if three_d:
            plan += [("new_slice", (middle - 1 - n) % depth) for n in range(repeats)]
        model = card = None
        for number, (click, k) in enumerate(plan):
            point = (rng.uniform(0.1, 0.9) * (rows - 1), rng.uniform(0.1, 0.9) * (cols - 1))
            world = image.data_to_world((k, *point) if three_d else point)
            if number:
                settle()
                probe.reset()
            warmed = widget.model.value in widget.warmed
            before = widget.last
            clicked = time.perf_counter()
            mouse_press_callbacks(viewer, _Press(tuple(world), [1, 2] if three_d else [0, 1]))
            wait_for(lambda: widget.last is not before and "query" in widget.last)
            updated = probe.of("draw_heatmap")[-1][1]
            assert widget.last["slice"] == (k if three_d else 0)
            threads = {t for name, _s, _e, t in probe.spans if name == "route"}
            steps = breakdown(probe, threads)
            if model is None:
                model, card = widget.private_model(widget.model.value)
            network, precision = network_alone(model, card, raw_slices(image, card, k if three_d else None),
                                               repeats=network_repeats, pixel_mm=view_pixel_mm(image.scale, card.recipe.view),
                                               amp=False)  # fmt: skip
            update = updated - clicked
            record = dict(bench="latency", widget="routing", data=kind, image=path.name,
                          shape=list(image.data.shape), model=MODELS[kind], click=click, slice=k if three_d else None,
                          update_s=round(update, 4), network_s=round(network, 4),
                          overhead_s=round(update - network, 4), precision=precision,
                          breakdown=steps, **machine())  # fmt: skip
            if click == "first":
                record["warmed_before_click"] = warmed
            emit(**record)
    finally:
        viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="warm clicks of each kind after the first")
    parser.add_argument("--network-repeats", type=int, default=5, help="runs of the network alone per click (best)")
    parser.add_argument("--ct", type=Path, default=CT, help="a CT the reader opens (default: the shared case01)")
    parser.add_argument("--frame", type=Path, default=FRAME, help="a 2-D colonoscopy frame (default: CVC 139)")
    parser.add_argument("--at", type=float, default=0.85,
                        help="first slice as a fraction of the CT's depth, then the slices below it (default 0.85: "
                             "the upper abdomen of the shared CT, where the organs are; its pelvis has none)")  # fmt: skip
    parser.add_argument("--only", choices=("segment", "routing"))
    parser.add_argument("--data", choices=("ct", "frame"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    ensure_display()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from braunet import zoo

    probe = Probe()
    install_probes(probe)
    for kind, path in (("ct", args.ct), ("frame", args.frame)):
        if args.data and kind != args.data:
            continue
        if MODELS[kind] not in zoo.list_models():
            emit(bench="latency", data=kind, skipped=f"bundled model {MODELS[kind]} not installed", **machine())
            continue
        if args.only != "routing":
            bench_segment(kind, path, probe, args.repeats, args.network_repeats, args.at)
        if args.only != "segment":
            bench_routing(kind, path, probe, args.repeats, args.network_repeats, args.at)


if __name__ == "__main__":
    main()
