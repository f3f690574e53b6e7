"""Small pieces the dock widgets share: layer pickers, the current slice, layer lookup."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox

from braunet.napari._geometry import LayerGeometry, geometry_from_layer_state

__all__ = [
    "OVERLAY_KEY", "connect_while_alive", "current_slice", "layer_combo", "layer_geometry", "wrap_labels",
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


def wrap_labels(*labels: Any) -> None:
    """Let long status texts wrap instead of widening the dock (and squeezing the canvas)."""
    for label in labels:
        label.native.setWordWrap(True)


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
