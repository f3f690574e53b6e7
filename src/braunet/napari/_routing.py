"""Routing explorer dock widget: click a point, see where bi-level routing attention sends its window.

For the chosen image, model and BRA block it runs the network once on the shown slice with
:func:`braunet.model.record_routing` (in a worker, on a private CPU copy of the model so a running
segmentation is never disturbed), then draws

* ``"routing windows"``: a Shapes layer with the clicked query window (yellow, "Q") and its top-k
  routed windows (cyan, numbered best first), as rectangles on the image's own grid;
* ``"routing frequency"``: an Image layer on the shown slice, the share of all query windows of
  the slice that route to each window.

Both follow the dims slider: moving to another slice re-runs the slice and redraws the same query
point. Window geometry (resize convention, slice view) lives in :mod:`braunet.napari._routing_map`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label
from qtpy.QtCore import QTimer

from braunet.napari._jobs import Job
from braunet.napari._routing_map import SliceFrame, routing_frequency
from braunet.napari._store import ModelStore
from braunet.napari._widget_tools import (
    OVERLAY_KEY,
    connect_while_alive,
    current_slice,
    layer_combo,
    model_combo,
    wrap_labels,
)  # fmt: skip

__all__ = ["RoutingWidget", "block_label"]

SHAPES_NAME = "routing windows"
HEATMAP_NAME = "routing frequency"
_QUERY_COLOR, _ROUTED_COLOR = "#ffd700", "#00e5ff"
_CACHE_SIZE = 16


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


def _architecture(store: ModelStore, key: str) -> Any:
    """``key``'s network without weights (on PyTorch's meta device: no memory, no init cost)."""
    import torch

    from braunet.model import BRAUNet

    entry = store.entry(key)
    if entry.model is not None:
        return entry.model
    with torch.device("meta"):
        return BRAUNet(entry.source.card.config)


class RoutingWidget(Container):
    """Image + model + BRA block; click on the image to inspect a window's routing."""

    def __init__(self, napari_viewer: Any) -> None:
        from napari.layers import Image

        self.viewer = napari_viewer
        self.store = ModelStore.for_viewer(napari_viewer)
        self._models: dict[str, tuple[Any, Any]] = {}  # private CPU copies: key -> (model, card)
        self._routes: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
        self._frames: dict[tuple, SliceFrame] = {}
        self.query: tuple[float, float] | None = None  # display (r, c) of the clicked point
        self.job: Job | None = None
        self._pending = False
        self.last: dict[str, Any] = {}  # what is drawn now: slice, query window, routed windows, block
        self.status = Label(value="")
        self.image = layer_combo(napari_viewer, Image, "image")
        self.model = model_combo(self.store, follow_adopted=False)
        self.block = ComboBox(label="BRA block", choices=self._block_choices)
        self.inspect = CheckBox(label="inspect on click", value=True)
        self.info = Label(value="Click on the image to pick a query window.")
        super().__init__(widgets=[self.image, self.model, self.block, self.inspect, self.info, self.status])
        wrap_labels(self.info, self.status)

        self.model.changed.connect(self._model_chosen)
        self.block.changed.connect(lambda _v: self.refresh())
        self.image.changed.connect(lambda _v: self._reset())
        self._slice_timer = QTimer(self.native)
        self._slice_timer.setSingleShot(True)
        self._slice_timer.setInterval(150)
        self._slice_timer.timeout.connect(self.refresh)
        connect_while_alive(self.native, napari_viewer.dims.events.current_step, self._on_step)
        connect_while_alive(self.native, self.store.changed, self._store_changed)
        callbacks = napari_viewer.mouse_drag_callbacks
        callbacks.append(self._on_mouse)
        on_mouse = self._on_mouse
        self.native.destroyed.connect(lambda *_: on_mouse in callbacks and callbacks.remove(on_mouse))
        self._store_changed()

    # -- model and block -----------------------------------------------------------------------
    def _store_changed(self) -> None:
        self.model.reset_choices()
        self.block.reset_choices()

    def _model_chosen(self, key: str | None = None) -> None:
        self.block.reset_choices()
        self.refresh()

    def private_model(self, key: str) -> tuple[Any, Any]:
        """A CPU copy of ``key``'s model for routing (cached); recording hooks never touch the shared one."""
        if key not in self._models:
            self._models[key] = self.store.copy_model(key, "cpu")
        return self._models[key]

    def _block_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        model_combo = getattr(self, "model", None)
        key = model_combo.value if model_combo is not None and model_combo.value in self.store.keys() else None
        key = key or self.store.default_key()
        if not key:
            return []
        try:  # reason: the block list needs the architecture only; loading weights here stalled the GUI ~1 s
            model = _architecture(self.store, key)
        except Exception as error:  # noqa: BLE001 (shown to the user; the list just stays empty)
            self.status.value = f"{key}: {error}"
            return []
        return [(block_label(name, module), name) for name, module in model.bra_modules()]

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

    def refresh(self, *_args: Any) -> None:
        """(Re)draw the overlay for the current slice, computing its routing first if needed."""
        context = self._context()
        if context is None or not self.block.value:
            return
        layer, key, k, three_d = context
        cache_key = (id(layer), key, k)
        if cache_key in self._routes:
            self._routes.move_to_end(cache_key)
            self._draw(layer, k, three_d, self._frames[cache_key], self._routes[cache_key])
            return
        if self.job is not None and self.job.running:
            self._pending = True
            return
        self._start(layer, key, k, three_d, cache_key)

    def _start(self, layer: Any, key: str, k: int, three_d: bool, cache_key: tuple) -> None:
        from braunet.infer import SliceRunner
        from braunet.model import record_routing

        display = np.asarray(layer.data[k] if three_d else layer.data)
        widget = self

        def work(progress, should_stop):
            model, card = widget.private_model(key)
            recipe, config = card.recipe, card.config
            if (recipe.kind == "ct") != three_d:
                from braunet.errors import InputError

                kind = "3-D CT volumes" if recipe.kind == "ct" else "2-D RGB images"
                raise InputError(f"{layer.name}: model {card.name!r} segments {kind}")
            frame = SliceFrame(display.shape[:2], recipe.view if three_d else "radiological",
                               config.img_size, config.n_win, recipe.resize)  # fmt: skip
            runner = SliceRunner(model, recipe, config.img_size, config.num_classes, amp=False)
            with record_routing(model) as routes:
                runner.logits(runner.prepare(frame.display_slice_to_view(display)[None]))
            return frame, {route.name: route.indices[0].cpu().numpy() for route in routes}

        job = Job(work, f"Routing of slice {k}", parent=self.native)
        job.done.connect(lambda result: self._store_routes(cache_key, layer, k, three_d, *result))
        job.failed.connect(lambda text: setattr(self.status, "value", text))
        job.finished.connect(self._job_finished)
        self.job = job
        self.status.value = f"Computing routing of slice {k}..."
        job.start()

    def _store_routes(self, cache_key: tuple, layer: Any, k: int, three_d: bool, frame: SliceFrame,
                      routes: dict[str, np.ndarray]) -> None:  # fmt: skip
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
    def _draw(self, layer: Any, k: int, three_d: bool, frame: SliceFrame, routes: dict[str, np.ndarray]) -> None:
        block = self.block.value
        if block not in routes:
            return
        indices = routes[block]  # (n_win**2, topk)
        self._draw_heatmap(layer, k, three_d, frame, indices)
        if self.query is None:
            self.last = {"slice": k, "block": block}
            return
        q = frame.window_at(self.query)
        routed = [int(p) for p in indices[q]]
        rectangles = [frame.window_rectangle(q)] + [frame.window_rectangle(p) for p in routed]
        if three_d:
            rectangles = [np.column_stack([np.full(4, float(k)), rect]) for rect in rectangles]
        labels = ["Q"] + [str(rank) for rank in range(1, len(routed) + 1)]
        if q in routed:  # a window often routes to itself: one label, not two on top of each other
            rank = routed.index(q) + 1
            labels[0], labels[rank] = f"Q = {rank}", ""
        self._draw_shapes(layer, rectangles, labels)
        self.last = {"slice": k, "block": block, "query": q, "routed": routed, "n_win": frame.n_win}
        row, col = divmod(q, frame.n_win)
        self.info.value = (f"slice {k}: query window ({row}, {col}) routes to "
                           + ", ".join(f"({p // frame.n_win}, {p % frame.n_win})" for p in routed))  # fmt: skip

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
            )  # fmt: skip
            self.viewer.layers.selection.active = active  # adding a layer selects it; keep the user's choice
        else:
            shapes.scale, shapes.translate = layer.scale, layer.translate
            shapes.data = rectangles
            shapes.edge_color, shapes.face_color = edge, face
            shapes.features = {"label": labels}
            shapes.refresh_text()

    def _draw_heatmap(self, layer: Any, k: int, three_d: bool, frame: SliceFrame, indices: np.ndarray) -> None:
        share = routing_frequency(indices, frame.n_win)
        heat = share[frame.window_map()].astype(np.float32)  # (H, W): share of queries routed to each pixel's window
        scale, translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float).copy()
        if three_d:
            heat = heat[None]
            translate[0] += k * scale[0]  # the one slice shown, at its own z
        limits = (0.0, max(float(heat.max()), 1e-6))
        existing = self.viewer.layers[HEATMAP_NAME] if HEATMAP_NAME in self.viewer.layers else None
        if existing is not None and existing.data.shape == heat.shape:
            existing.data, existing.translate, existing.contrast_limits = heat, translate, limits
        else:
            if existing is not None:
                self.viewer.layers.remove(existing)
            active = self.viewer.layers.selection.active
            self.viewer.add_image(heat, name=HEATMAP_NAME, colormap="inferno", opacity=0.45, blending="additive",
                                  contrast_limits=limits, scale=scale, translate=translate,
                                  axis_labels=layer.axis_labels,
                                  metadata={OVERLAY_KEY: True})  # fmt: skip
            if SHAPES_NAME in self.viewer.layers:  # keep the rectangles above the heatmap
                shapes = self.viewer.layers[SHAPES_NAME]
                self.viewer.layers.move(self.viewer.layers.index(shapes), len(self.viewer.layers))
            self.viewer.layers.selection.active = active
