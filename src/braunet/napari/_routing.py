"""Routing explorer dock widget: click a point, see where bi-level routing attention sends its window, and why.

For the chosen image, model and BRA block it runs the network on the shown slice with
:func:`braunet.model.record_routing` (in a worker, on a private CPU copy of the model so a running
segmentation is never disturbed; the copy is made and warmed up by one forward pass in a worker as
soon as the widget gets a model, so the first click does not stall the GUI), then draws

* ``"routing windows"``: a Shapes layer with the clicked query window (yellow, "Q") and its top-k
  routed windows (cyan, numbered best first), as rectangles on the image's own grid;
* ``"routing heatmap"``: an Image layer on the shown slice with a colour bar, only after a query:
  the query window's routing scores over all windows (softmax of the region-level ``q·k`` logits
  the top-k is taken over, or the logits themselves), or the share of all query windows of the
  slice that route to each window. It sits just above the image (below any labels) and is hidden
  in 3-D display.

A second model ("compare with", e.g. the version before fine-tuning) is run on the same slice and
the overlap of the routed windows of the query window is given per BRA block (Jaccard). The routing
of the slice or of the whole volume (indices, weights and scores per block) is exported with
:func:`braunet.infer.routing.route_slices` and :func:`braunet.model.routing.save_routing` (NPZ + JSON).

Both layers follow the dims slider. Window geometry (resize convention, slice view) lives in
:mod:`braunet.napari._routing_map`.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton
from qtpy.QtCore import QTimer

from braunet.napari._geometry import view_pixel_mm
from braunet.napari._jobs import Job
from braunet.napari._routing_map import SliceFrame, routing_frequency
from braunet.napari._store import ModelStore
from braunet.napari._widget_tools import (
    OVERLAY_KEY,
    add_native,
    collapsible,
    compact,
    connect_while_alive,
    current_slice,
    layer_combo,
    model_combo,
    wrap_labels,
)  # fmt: skip

__all__ = ["HEATMAP_MODES", "RoutingWidget", "block_label", "query_scores"]

SHAPES_NAME = "routing windows"
HEATMAP_NAME = "routing heatmap"
HEATMAP_MODES = ("score (softmax over windows)", "score (logit q·k)", "routing frequency (all queries)")
_QUERY_COLOR, _ROUTED_COLOR = "#ffd700", "#00e5ff"
_CACHE_SIZE = 16
_DRAW_GAP_MS = 40  # between the steps of a first drawing, so the canvas repaints and input is handled


def block_label(name: str, module: Any) -> str:
    """Readable name of a BRA module, e.g. ``encoder 1/4 · block 1 · top-2 of 49``."""
    found = re.match(r"stages\.(\d+)\.(\d+)\.attn", name)
    if found:
        stage, block = int(found[1]), int(found[2])
        where = f"encoder 1/{4 * 2**stage} · block {block + 1}"
    else:
        found = re.match(r"layers_up\.(\d+)\.blocks\.(\d+)\.attn", name)
        where = f"decoder 1/{4 * 2 ** (3 - int(found[1]))} · block {int(found[2]) + 1}" if found else name
    return f"{where} · top-{module.topk} of {module.n_win**2}"


def query_scores(logits: np.ndarray, query: int, mode: str) -> np.ndarray:
    """(n_win**2, n_win**2) region logits of one image -> (n_win**2,) what the heatmap shows for ``query``.

    ``mode`` is one of :data:`HEATMAP_MODES`: the softmax of the query's logits over all windows
    (the routing affinity; its top-k are the routed windows), the raw logits, or (independent of
    the query) the routing frequency is computed by the caller from the indices.
    """
    row = np.asarray(logits[query], dtype=np.float64)
    if mode == HEATMAP_MODES[1]:
        return row
    shifted = np.exp(row - row.max())
    return shifted / shifted.sum()


def _block_modules(card: Any) -> list[tuple[str, Any]]:
    """The BRA modules of a card's architecture, built on the meta device (no weights, milliseconds)."""
    import torch

    from braunet.model import BRAUNet

    with torch.device("meta"):
        return BRAUNet(card.config).bra_modules()


def _preimport_drawing() -> None:
    """Import, in a worker, the modules napari loads when the first Shapes layer appears.

    reason: napari imports the Shapes layer controls (0.4 s) on the GUI thread when the first
    Shapes layer is added, which would be the first click's rectangles; imports are thread-safe
    and this creates no widget.
    """
    import importlib

    for name in ("napari._qt.layer_controls.qt_shapes_controls", "napari._vispy.layers.shapes",
                 "napari._vispy.overlays.colorbar"):  # fmt: skip
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


class ColorBar(Container):
    """A colour bar under the controls: the heatmap's colormap from low to high, with the quantity."""

    def __init__(self) -> None:
        from qtpy.QtWidgets import QLabel

        self.title = Label(value="")
        super().__init__(widgets=[self.title], labels=False)
        self.bar = QLabel()
        self.bar.setFixedHeight(12)
        self.native.layout().addWidget(self.bar)
        self.low = self.high = 0.0
        self.colormap = "inferno"
        self.visible = False

    def show_range(self, colormap: str, low: float, high: float, quantity: str) -> None:
        from napari.utils.colormaps import ensure_colormap
        from qtpy.QtGui import QImage, QPixmap

        self.colormap, self.low, self.high = colormap, float(low), float(high)
        width = 256
        rgba = (ensure_colormap(colormap).map(np.linspace(0, 1, width)) * 255).astype(np.uint8)
        strip = np.ascontiguousarray(np.repeat(rgba[None], 12, axis=0))
        image = QImage(strip.data, width, 12, 4 * width, QImage.Format.Format_RGBA8888).copy()
        self.bar.setPixmap(QPixmap.fromImage(image).scaled(self.bar.width() or width, 12))
        self.bar.setScaledContents(True)
        self.title.value = f"{quantity}: {self.low:.3g} … {self.high:.3g}"
        self.visible = True


class RoutingWidget(Container):
    """Image + model + BRA block; click on the image to inspect a window's routing."""

    def __init__(self, napari_viewer: Any) -> None:
        from napari.layers import Image

        self.viewer = napari_viewer
        self.store = ModelStore.for_viewer(napari_viewer)
        self._models: dict[str, tuple[Any, Any]] = {}  # private CPU copies: key -> (model, card)
        self._model_lock = threading.Lock()  # one copy per key, and one recorded forward pass at a time
        self._forward_lock = threading.Lock()
        self._blocks: dict[str, list[tuple[str, Any]]] = {}
        self._routes: OrderedDict[tuple, dict[str, Any]] = OrderedDict()  # (layer, key, k) -> {block: BlockRouting}
        self._frames: dict[tuple, SliceFrame] = {}
        self.query: tuple[float, float] | None = None  # display (r, c) of the clicked point
        self.job: Job | None = None
        self.export_job: Job | None = None
        self._warm: dict[str, Any] = {}  # key -> its warm-up worker (running or done)
        self.warmed: set[str] = set()  # keys whose private copy has run once
        self._pending = False
        self._drawing: tuple | None = None  # what the deferred half of _draw is to finish
        self.last: dict[str, Any] = {}  # what is drawn now: slice, query window, routed windows, scores, block
        self.status = Label(value="")
        self.image = layer_combo(napari_viewer, Image, "image")
        self.model = model_combo(self.store, follow_adopted=False)
        self.compare = ComboBox(label="compare with", choices=lambda _w: self.store.keys(), nullable=True, value=None)
        self.block = ComboBox(label="BRA block", choices=self._block_choices)
        self.heatmap = ComboBox(label="heatmap", choices=list(HEATMAP_MODES), value=HEATMAP_MODES[0])
        self.inspect = CheckBox(label="inspect on click", value=True)
        self.info = Label(value="Click on the image to pick a query window.")
        self.grid = Label(value="")
        self.colorbar = ColorBar()
        self.overlap = Label(value="")
        self.export_slice = PushButton(text="Export slice routing…")
        self.export_volume = PushButton(text="Export volume routing…")
        super().__init__(widgets=[self.image, self.model, self.block,
                                  Container(widgets=[self.heatmap, self.inspect], layout="horizontal", labels=True),
                                  self.info, self.colorbar, self.status])  # fmt: skip
        # The window grid, version comparison and export fold away: the three docks must fit 1000 px.
        self.more = collapsible("Grid, compare, export", self.grid, self.compare, self.overlap,
                                self.export_slice, self.export_volume)  # fmt: skip
        add_native(self, self.more, after=self.colorbar)
        compact(self, margin=2, spacing=2)
        wrap_labels(self.info, self.status, self.grid, self.overlap)

        self.model.changed.connect(self._model_chosen)
        self.compare.changed.connect(self._compare_chosen)
        self.block.changed.connect(lambda _v: self.refresh())
        self.heatmap.changed.connect(lambda _v: self.refresh())
        self.image.changed.connect(lambda _v: self._reset())
        self.export_slice.changed.connect(lambda _v: self._ask_export(False))
        self.export_volume.changed.connect(lambda _v: self._ask_export(True))
        self._slice_timer = QTimer(self.native)
        self._slice_timer.setSingleShot(True)
        self._slice_timer.setInterval(150)
        self._slice_timer.timeout.connect(self.refresh)
        connect_while_alive(self.native, napari_viewer.dims.events.current_step, self._on_step)
        connect_while_alive(self.native, napari_viewer.dims.events.ndisplay, self._on_ndisplay)
        connect_while_alive(self.native, self.store.changed, self._store_changed)
        callbacks = napari_viewer.mouse_drag_callbacks
        callbacks.append(self._on_mouse)
        on_mouse = self._on_mouse
        self.native.destroyed.connect(lambda *_: on_mouse in callbacks and callbacks.remove(on_mouse))
        self._store_changed()

    # -- model and block -----------------------------------------------------------------------
    def _store_changed(self) -> None:
        self.model.reset_choices()
        self.compare.reset_choices()
        self.block.reset_choices()
        self.warm_up(self.model.value)

    def _model_chosen(self, key: str | None = None) -> None:
        self.block.reset_choices()
        self.warm_up(key)
        self.refresh()  # redraws only once a query was made

    def _compare_chosen(self, key: str | None = None) -> None:
        self.warm_up(key)
        self.refresh()

    def private_model(self, key: str) -> tuple[Any, Any]:
        """A CPU copy of ``key``'s model for routing (cached); recording hooks never touch the shared one."""
        with self._model_lock:
            if key not in self._models:
                self._models[key] = self.store.copy_model(key, "cpu")
            return self._models[key]

    def warm_up(self, key: str | None) -> Any:
        """Copy ``key``'s model and run it once, in a worker: the first click then costs one forward pass only."""
        from napari.qt.threading import create_worker

        if not key or key not in self.store.keys() or key in self._warm:
            return self._warm.get(key or "")

        def work() -> None:
            import torch

            from braunet.infer import SliceRunner

            _preimport_drawing()

            model, card = self.private_model(key)
            config = card.config
            runner = SliceRunner(model, None, config.img_size, config.num_classes, amp=False)
            with self._forward_lock:
                runner.logits(torch.zeros(1, config.in_chans, config.img_size, config.img_size))

        worker = create_worker(work, _start_thread=False)
        worker.errored.connect(lambda error: setattr(self.status, "value", f"{key}: {error}"))
        worker.returned.connect(lambda _result: self.warmed.add(key))
        self._warm[key] = worker
        worker.start()
        return worker

    def _card(self, key: str) -> Any:
        entry = self.store.entry(key)
        return entry.card if entry.card is not None else entry.source.card

    def _block_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        model_combo = getattr(self, "model", None)
        key = model_combo.value if model_combo is not None and model_combo.value in self.store.keys() else None
        key = key or self.store.default_key()
        if not key:
            return []
        if key not in self._blocks:
            try:
                self._blocks[key] = _block_modules(self._card(key))
            except Exception as error:  # noqa: BLE001 (shown to the user; the list just stays empty)
                self.status.value = f"{key}: {error}"
                return []
        return [(block_label(name, module), name) for name, module in self._blocks[key]]

    # -- events --------------------------------------------------------------------------------
    def _on_mouse(self, viewer: Any, event: Any) -> None:
        """A click inspects the point, unless the active layer is being edited (painting, drawing...)."""
        active = viewer.layers.selection.active
        editing = getattr(active, "mode", "pan_zoom") not in ("pan_zoom", "transform")
        if event.type == "mouse_press" and self.inspect.value and self.image.value is not None and not editing:
            self.inspect_world(event.position)

    def _on_step(self, event: Any = None) -> None:
        if self.query is not None:
            self._slice_timer.start()

    def _on_ndisplay(self, event: Any = None) -> None:
        if HEATMAP_NAME in self.viewer.layers:  # a flat slice would cover the labels in a 3-D rendering
            self.viewer.layers[HEATMAP_NAME].visible = self.viewer.dims.ndisplay == 2

    def _reset(self) -> None:
        self.query = None
        self.last = {}

    def inspect_world(self, position: Any) -> bool:
        """Pick the query window under world ``position`` (as a click does); False if outside the image."""
        layer = self.image.value
        if layer is None:
            return False
        point = np.asarray(layer.world_to_data(position), dtype=np.float64)
        spatial = layer.data.shape[: 3 if point.size >= 3 else 2]
        rc = point[-2:]
        if np.any(rc < -0.5) or rc[0] > spatial[-2] - 0.5 or rc[1] > spatial[-1] - 0.5:
            return False
        self.query = (float(rc[0]), float(rc[1]))
        if point.size >= 3 and not layer.rgb:  # the clicked slice is the shown one; make sure of it
            k = int(np.clip(np.round(point[-3]), 0, layer.data.shape[0] - 1))
            if k != current_slice(self.viewer, layer):
                self.viewer.dims.set_point(0, layer.data_to_world((k, 0, 0))[0])
                self._slice_timer.stop()  # the slider's debounced redraw: the refresh below draws this slice
        self.refresh()
        return True

    # -- routing -------------------------------------------------------------------------------
    def _context(self) -> tuple[Any, str, int, bool] | None:
        layer, key = self.image.value, self.model.value or self.store.default_key()
        if layer is None or not key:
            return None
        three_d = not layer.rgb and layer.ndim >= 3
        k = current_slice(self.viewer, layer) if three_d else 0
        return layer, key, k, three_d

    def _keys(self, key: str) -> list[str]:
        compare = self.compare.value
        return [key] + ([compare] if compare and compare != key and compare in self.store.keys() else [])

    def refresh(self, *_args: Any) -> None:
        """(Re)draw the overlay for the current slice once a query was made, computing its routing first if needed."""
        context = self._context()
        if context is None or not self.block.value or self.query is None:
            return
        layer, key, k, three_d = context
        missing = [m for m in self._keys(key) if (id(layer), m, k) not in self._routes]
        if not missing:
            self._routes.move_to_end((id(layer), key, k))
            self._draw(layer, key, k, three_d)
            return
        if self.job is not None and self.job.running:
            self._pending = True
            return
        self._start(layer, missing, k, three_d)

    def _frame(self, card: Any, display_shape: tuple[int, int], three_d: bool,
               scale: tuple[float, ...] = (1.0, 1.0)) -> SliceFrame:  # fmt: skip
        """The frame of a displayed slice for this model; ``scale``: the image layer's scale."""
        recipe, config = card.recipe, card.config
        if (recipe.kind == "ct") != three_d:
            from braunet.errors import InputError

            kind = "3-D CT volumes" if recipe.kind == "ct" else "2-D RGB images"
            raise InputError(f"{self.image.value.name if self.image.value else 'image'}: model {card.name!r} "
                             f"segments {kind}")  # fmt: skip
        view = recipe.view if three_d else "radiological"
        return SliceFrame(display_shape, view, config.img_size, config.n_win, recipe.resize,
                          spacing_mm=recipe.spacing_mm, pixel_mm=view_pixel_mm(scale, view))  # fmt: skip

    def _route(self, key: str, display_slices: np.ndarray, three_d: bool, scale: tuple[float, ...] = (1.0, 1.0),
               **kwargs: Any) -> tuple[SliceFrame, dict]:  # fmt: skip
        """Worker thread: (frame, {block: BlockRouting}) of displayed slices (S, H, W[, 3]) for model ``key``.

        ``scale``: the image layer's scale (its in-plane pixel size, :func:`view_pixel_mm`).
        """
        from braunet.infer.routing import route_slices

        model, card = self.private_model(key)
        frame = self._frame(card, display_slices.shape[1:3], three_d, scale)
        raw = np.stack([frame.display_slice_to_view(s) for s in display_slices])
        with self._forward_lock:
            return frame, route_slices(model, card, raw, spacing=frame.pixel_mm, **kwargs)

    def _start(self, layer: Any, keys: list[str], k: int, three_d: bool) -> None:
        display = np.asarray(layer.data[k] if three_d else layer.data)[None]
        scale = tuple(layer.scale)

        def work(progress, should_stop):
            return {key: self._route(key, display, three_d, scale) for key in keys}

        job = Job(work, f"Routing of slice {k}", parent=self.native)
        job.done.connect(lambda result: self._store_routes(layer, k, result))
        job.failed.connect(lambda text: setattr(self.status, "value", text))
        job.finished.connect(self._job_finished)
        self.job = job
        self.status.value = f"Computing routing of slice {k}..."
        job.start()

    def _store_routes(self, layer: Any, k: int, result: dict[str, tuple[SliceFrame, dict]]) -> None:
        for key, (frame, routes) in result.items():
            cache_key = (id(layer), key, k)
            self._routes[cache_key], self._frames[cache_key] = routes, frame
        while len(self._routes) > _CACHE_SIZE:
            old, _ = self._routes.popitem(last=False)
            self._frames.pop(old, None)
        self.status.value = ""
        self.refresh()  # draws this slice if it is still the one shown, else computes the shown one

    def _job_finished(self) -> None:
        if self._pending:
            self._pending = False
            self.refresh()

    # -- drawing -------------------------------------------------------------------------------
    def _draw(self, layer: Any, key: str, k: int, three_d: bool) -> None:
        """Rectangles now, the heatmap and texts on the next turn of the event loop.

        reason: the first Shapes and the first float Image layer each build their vispy visuals
        (0.2-0.9 s on a CPU-only machine, plus their first paint); separate turns of the event
        loop (rectangles, heatmap, its canvas colour bar), ``_DRAW_GAP_MS`` apart, keep every GUI
        stall under 0.3 s. Once both layers exist and keep their shapes, a click only updates
        them: the heatmap follows on the very next turn, without the gap.
        """
        block = self.block.value
        routes, frame = self._routes[(id(layer), key, k)], self._frames[(id(layer), key, k)]
        if block not in routes or self.query is None:
            return
        routing = routes[block]
        indices = routing.indices[0]  # (n_win**2, topk)
        q = frame.window_at(self.query)
        routed = [int(p) for p in indices[q]]
        rectangles = [frame.window_rectangle(q)] + [frame.window_rectangle(p) for p in routed]
        if three_d:
            rectangles = [np.column_stack([np.full(4, float(k)), rect]) for rect in rectangles]
        labels = ["Q"] + [str(rank) for rank in range(1, len(routed) + 1)]
        if q in routed:  # a window often routes to itself: one label, not two on top of each other
            rank = routed.index(q) + 1
            labels[0], labels[rank] = f"Q = {rank}", ""
        layers = self.viewer.layers
        shapes = layers[SHAPES_NAME] if SHAPES_NAME in layers else None
        heat_shape = ((1,) if three_d else ()) + tuple(frame.display_shape)
        # Both layers stay (as _draw_shapes and _draw_heatmap decide); identity checks fail on napari's viewer proxy.
        updating = (shapes is not None and len(shapes.data) == len(rectangles) and shapes.ndim == rectangles[0].shape[1]
                    and HEATMAP_NAME in layers and layers[HEATMAP_NAME].data.shape == heat_shape)  # fmt: skip
        self._draw_shapes(layer, rectangles, labels)
        drawing = (id(layer), key, k, block, q, self.heatmap.value)
        self._drawing = drawing
        QTimer.singleShot(0 if updating else _DRAW_GAP_MS, lambda: self._finish_draw(drawing, layer, key, k, three_d))

    def _finish_draw(self, drawing: tuple, layer: Any, key: str, k: int, three_d: bool) -> None:
        with contextlib.suppress(RuntimeError):  # reason: the dock may be closed before the timer fires
            self._finish_draw_now(drawing, layer, key, k, three_d)

    def _finish_draw_now(self, drawing: tuple, layer: Any, key: str, k: int, three_d: bool) -> None:
        if drawing != self._drawing or (id(layer), key, k) not in self._routes:
            return  # a newer query or slice is being drawn
        _, _, _, block, q, _ = drawing
        routing, frame = self._routes[(id(layer), key, k)][block], self._frames[(id(layer), key, k)]
        indices, logits = routing.indices[0], routing.logits[0]  # (n_win**2, topk), (n_win**2, n_win**2)
        routed = [int(p) for p in indices[q]]
        self._draw_heatmap(layer, k, three_d, frame, indices, logits, q)
        softmax = query_scores(logits, q, HEATMAP_MODES[0])
        row, col = divmod(q, frame.n_win)
        self.info.value = (f"slice {k}: query window ({row}, {col}) routes to "
                           + ", ".join(f"({p // frame.n_win}, {p % frame.n_win}) {softmax[p]:.2f}" for p in routed)
                           + " (window, softmax score over all windows)")  # fmt: skip
        self.grid.value = self._grid_text(layer, frame, routing)
        self.last = {"slice": k, "block": block, "query": q, "routed": routed, "n_win": frame.n_win,
                     "logits": logits[q].copy(), "scores": softmax, "weights": routing.weights[0, q].copy()}  # fmt: skip
        self._show_overlap(layer, key, k, q)

    def _grid_text(self, layer: Any, frame: SliceFrame, routing: Any) -> str:
        """What the window grid is, in the network's pixels and on this slice."""
        corners = frame.window_rectangle(0)
        extent = corners.max(axis=0) - corners.min(axis=0)  # display pixels (rows, columns) of one window
        spacing = np.asarray(layer.scale, dtype=float)[-2:]
        unit = "mm" if layer.ndim - (1 if layer.rgb else 0) >= 3 else "px"
        size = extent * spacing if unit == "mm" else extent
        view = (" The network sees the slice transposed and flipped (its 'ras' view); the rectangles are mapped back."
                if frame.view == "ras" else "")  # fmt: skip
        return (f"Window grid: the slice is resized to the {frame.img_size} x {frame.img_size} px network input, "
                f"split into {frame.n_win} x {frame.n_win} windows of {frame.window_px:g} px (on this slice "
                f"{size[0]:.1f} x {size[1]:.1f} {unit}); window (row, col) counts from the input's top left. "
                f"This block works on a {routing.map_size[0]} x {routing.map_size[1]} map and every query window "
                f"attends to its top-{routing.topk} windows by q·k score of window means.{view}")  # fmt: skip

    def _show_overlap(self, layer: Any, key: str, k: int, q: int) -> None:
        from braunet.model.routing import routed_jaccard

        compare = self._keys(key)[1:]
        if not compare:
            self.overlap.value = ""
            self.last.pop("jaccard", None)
            return
        other = self._routes.get((id(layer), compare[0], k))
        mine = self._routes[(id(layer), key, k)]
        if other is None:
            return
        jaccard = {name: float(routed_jaccard(mine[name].indices[0, q], other[name].indices[0, q]))
                   for name in mine if name in other}  # fmt: skip
        self.last["jaccard"] = jaccard
        self.last["compare_routed"] = [int(p) for p in other[self.block.value].indices[0, q]]
        names = {name: block_label(name, module) for name, module in self._blocks.get(key, [])}
        lines = [f"{names.get(name, name).split(' · top')[0]}: {value:.2f}" for name, value in jaccard.items()]
        self.overlap.value = (f"Routed windows of this query, {key} vs {compare[0]} (Jaccard, 1 = same windows): "
                              + "; ".join(lines))  # fmt: skip

    def _draw_shapes(self, layer: Any, rectangles: list[np.ndarray], labels: list[str]) -> None:
        n = len(rectangles)
        edge = [_QUERY_COLOR] + [_ROUTED_COLOR] * (n - 1)
        face = [[0, 0, 0, 0]] + [[0.0, 0.9, 1.0, 0.12]] * (n - 1)
        shapes = self.viewer.layers[SHAPES_NAME] if SHAPES_NAME in self.viewer.layers else None
        if shapes is not None and (len(shapes.data) != n or shapes.ndim != rectangles[0].shape[1]):
            self.viewer.layers.remove(shapes)
            shapes = None
        if shapes is None:
            active = self.viewer.layers.selection.active
            self.viewer.add_shapes(
                rectangles, shape_type="rectangle", name=SHAPES_NAME, edge_color=edge, face_color=face,
                edge_width=[1.5] + [1.0] * (n - 1), features={"label": labels},
                text={"string": "{label}", "color": "white", "size": 10, "anchor": "upper_left"},
                scale=layer.scale, translate=layer.translate, axis_labels=layer.axis_labels,
                metadata={OVERLAY_KEY: True},
            )  # fmt: skip
            self.viewer.layers.selection.active = active  # adding a layer selects it; keep the user's choice
        else:
            shapes.scale, shapes.translate = layer.scale, layer.translate
            shapes.data = rectangles
            shapes.edge_color, shapes.face_color = edge, face
            shapes.features = {"label": labels}
            shapes.refresh_text()

    def _draw_heatmap(self, layer: Any, k: int, three_d: bool, frame: SliceFrame, indices: np.ndarray,
                      logits: np.ndarray, q: int) -> None:  # fmt: skip
        mode = self.heatmap.value
        if mode == HEATMAP_MODES[2]:
            per_window, quantity = routing_frequency(indices, frame.n_win), "share of queries routed here"
        else:
            per_window = query_scores(logits, q, mode)
            quantity = "routing score (softmax)" if mode == HEATMAP_MODES[0] else "routing logit q·k"
        heat = per_window[frame.window_map()].astype(np.float32)  # (H, W): each pixel shows its window's value
        scale, translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float).copy()
        if three_d:
            heat = heat[None]
            translate[0] += k * scale[0]  # the one slice shown, at its own z
        low = 0.0 if mode != HEATMAP_MODES[1] else float(per_window.min())
        limits = (low, max(float(per_window.max()), low + 1e-6))
        existing = self.viewer.layers[HEATMAP_NAME] if HEATMAP_NAME in self.viewer.layers else None
        if existing is not None and existing.data.shape == heat.shape:
            existing.data, existing.translate, existing.contrast_limits = heat, translate, limits
        else:
            if existing is not None:
                self.viewer.layers.remove(existing)
            from napari.layers import Image

            active = self.viewer.layers.selection.active
            existing = Image(heat, name=HEATMAP_NAME, colormap="inferno", opacity=0.45, blending="additive",
                             contrast_limits=limits, scale=scale, translate=translate, axis_labels=layer.axis_labels,
                             metadata={OVERLAY_KEY: True})  # fmt: skip
            # Just above the image, so labels and the rectangles stay on top of it (inserted there: no move).
            where = self.viewer.layers.index(layer) + 1 if layer in self.viewer.layers else len(self.viewer.layers)
            self.viewer.layers.insert(where, existing)
            self.viewer.layers.selection.active = active
            new_layer = existing
            QTimer.singleShot(_DRAW_GAP_MS, lambda: setattr(new_layer.colorbar, "visible", True))  # 0.1 s: a step of its own
        existing.visible = self.viewer.dims.ndisplay == 2
        self.colorbar.show_range("inferno", *limits, quantity)

    # -- export --------------------------------------------------------------------------------
    def _ask_export(self, whole_volume: bool) -> None:
        from qtpy.QtWidgets import QFileDialog

        layer = self.image.value
        if layer is None:
            self.status.value = "Choose an image first."
            return
        suggested = f"{layer.name} routing{'' if whole_volume else f' slice {current_slice(self.viewer, layer)}'}.npz"
        path, _ = QFileDialog.getSaveFileName(self.native, "Export routing (NPZ + JSON)", suggested, "NumPy (*.npz)")
        if path:
            self.export(path, whole_volume=whole_volume)

    def export(self, path: str | Path, *, whole_volume: bool = False) -> Job | None:
        """Write the routing of the shown slice (or every slice) with the chosen model to ``path`` .npz + .json.

        Runs in a worker (cancellable for volumes); returns the job, whose ``done`` carries the two paths.
        """
        from braunet.model.routing import save_routing

        context = self._context()
        if context is None:
            self.status.value = "Choose an image and a model first."
            return None
        layer, key, k, three_d = context
        slices = list(range(layer.data.shape[0])) if three_d and whole_volume else [k]
        data, scale = layer.data, tuple(layer.scale)

        def work(progress, should_stop):
            display = np.asarray(data[slices] if three_d else data[None])
            frame, blocks = self._route(key, display, three_d, scale, progress=progress, should_stop=should_stop)
            card = self.private_model(key)[1]
            about = {"image": layer.name, "model": key, "model_name": card.name,
                     "model_version": getattr(card, "version", None), "slices": slices if three_d else None,
                     "slice_axis": "layer axis 0 (axial, feet to head)" if three_d else None,
                     "display_shape": list(frame.display_shape), "view": frame.view, "img_size": frame.img_size,
                     "n_win": frame.n_win, "window_px": frame.window_px, "resize": frame.resize}  # fmt: skip
            return save_routing(path, blocks, about)

        job = Job(work, f"Routing export of {len(slices)} slice(s)", total=len(slices), parent=self.native)
        job.done.connect(lambda paths: setattr(self.status, "value", f"Routing saved: {paths[0]} + {paths[1].name}"))
        job.failed.connect(lambda text: setattr(self.status, "value", text))
        self.export_job = job
        self.status.value = f"Exporting the routing of {len(slices)} slice(s)..."
        job.start()
        return job
