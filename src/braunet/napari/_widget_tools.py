"""Small pieces the dock widgets share: layer and model pickers, the current slice, layer lookup, collapsible parts."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox

from braunet.napari._geometry import LayerGeometry, geometry_from_layer_state

__all__ = [
    "OVERLAY_KEY", "collapsible", "connect_while_alive", "current_slice", "layer_combo", "layer_geometry",
    "add_native", "compact", "model_combo", "wrap_labels",
]  # fmt: skip

OVERLAY_KEY = "braunet_overlay"  # metadata flag of derived layers (confidence, routing heatmap): not offered as inputs


def connect_while_alive(qwidget: Any, emitter: Any, callback: Any) -> None:
    """Connect ``callback`` to a viewer event and disconnect it when ``qwidget`` is destroyed.

    reason: the viewer outlives a closed dock widget; its events must not call into deleted Qt objects.
    """
    emitter.connect(callback)

    def disconnect(*_args: Any) -> None:
        with contextlib.suppress(RuntimeError, TypeError, ValueError):
            emitter.disconnect(callback)

    qwidget.destroyed.connect(disconnect)


def layer_combo(viewer: Any, layer_type: type, label: str, *, nullable: bool = False) -> ComboBox:
    """A ComboBox of the viewer's layers of ``layer_type``, refreshed when layers come, go or are renamed."""

    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers
                if isinstance(layer, layer_type) and not layer.metadata.get(OVERLAY_KEY)]  # fmt: skip

    combo = ComboBox(label=label, choices=choices, nullable=nullable)

    def refresh(event: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the widget was deleted
            combo.reset_choices()

    def watch_name(event: Any) -> None:
        event.value.events.name.connect(refresh)

    for emitter, callback in ((viewer.layers.events.inserted, refresh), (viewer.layers.events.removed, refresh),
                              (viewer.layers.events.moved, refresh), (viewer.layers.events.inserted, watch_name)):
        connect_while_alive(combo.native, emitter, callback)
    for layer in viewer.layers:
        layer.events.name.connect(refresh)
    return combo


def model_combo(store: Any, *, label: str = "model", follow_adopted: bool = True, tooltip: str = "") -> ComboBox:
    """A ComboBox of ``store``'s models holding this widget's own choice.

    It starts on :meth:`ModelStore.default_key` (the model last chosen anywhere), keeps its value when
    other widgets add or choose models (the list is refreshed), and, with ``follow_adopted``, moves
    to the new version when Accept or Rollback replaces the model it shows.
    """
    combo = ComboBox(label=label, choices=lambda _w: store.keys() or [""], tooltip=tooltip or None)
    default = store.default_key()
    if default:
        combo.value = default

    def refresh() -> None:
        with contextlib.suppress(RuntimeError):  # the widget was deleted
            combo.reset_choices()

    def adopted(new: str, old: str) -> None:
        with contextlib.suppress(RuntimeError):
            combo.reset_choices()
            if combo.value == old and new in store.keys():
                combo.value = new

    connect_while_alive(combo.native, store.changed, refresh)
    if follow_adopted:
        connect_while_alive(combo.native, store.adopted, adopted)
    combo.changed.connect(store.note_choice)
    return combo


def collapsible(title: str, *widgets: Any, expanded: bool = False) -> Any:
    """A collapsible section (superqt ``QCollapsible``) holding magicgui ``widgets`` as labelled rows.

    Why: the three docks together must fit a 1000 px tall window; options a user rarely changes
    fold away. Returns the QWidget to put into a Container's layout; the widgets keep working
    (and stay attributes of their dock) while folded.
    """
    from magicgui.widgets import Container
    from superqt import QCollapsible

    section = QCollapsible(title)
    section.addWidget(Container(widgets=list(widgets)).native)
    section.layout().setContentsMargins(0, 0, 0, 0)
    if expanded:
        section.expand(animate=False)
    else:
        section.collapse(animate=False)
    return section


def add_native(container: Any, qwidget: Any, after: Any = None) -> None:
    """Insert a plain QWidget into a magicgui Container's layout (after the row of ``after``, else last)."""
    layout = container.native.layout()
    if after is None:
        layout.addWidget(qwidget)
        return
    row = after.native
    while row.parentWidget() is not None and row.parentWidget() is not container.native:
        row = row.parentWidget()  # magicgui wraps labelled widgets in a row
    layout.insertWidget(layout.indexOf(row) + 1, qwidget)


def compact(container: Any, *, margin: int = 4, spacing: int = 3) -> None:
    """Tighten a dock's layout and its nested rows (magicgui's 9 px margins, 6 px spacing add up:
    the three docks together must fit a 1000 px tall window)."""
    from magicgui.widgets import Container

    layout = container.native.layout()
    layout.setContentsMargins(margin, margin, margin, margin)
    layout.setSpacing(spacing)
    for widget in container:
        if isinstance(widget, Container):
            widget.native.layout().setContentsMargins(0, 0, 0, 0)


def wrap_labels(*labels: Any) -> None:
    """Let long status texts wrap instead of widening the dock (and squeezing the canvas).

    Their minimum height is one line: a wrapped label's own minimum is its text at the narrowest
    width (five lines for a long status), which kept the three docks from fitting a 1000 px window.
    """
    for label in labels:
        label.native.setWordWrap(True)
        label.native.setMinimumHeight(label.native.fontMetrics().height())


def layer_geometry(layer: Any) -> LayerGeometry:
    """The :class:`LayerGeometry` of an image or labels layer (ours, or built from scale/translate)."""
    rgb = bool(getattr(layer, "rgb", False))
    return geometry_from_layer_state(layer.data, tuple(layer.scale), tuple(layer.translate), layer.metadata, rgb)


def current_slice(viewer: Any, layer: Any) -> int:
    """Index along the layer's first axis (the axial slice) that the viewer shows now (0 for 2-D)."""
    if layer.ndim - (1 if getattr(layer, "rgb", False) else 0) < 3:
        return 0
    position = layer.world_to_data(viewer.dims.point)
    depth = layer.data.shape[0]
    return int(np.clip(np.round(position[0]), 0, depth - 1))
