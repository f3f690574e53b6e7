"""Legend dock widget: the classes of a Labels layer with colour, show/hide, voxel count, volume and mean HU.

What Slicer's segment list gives clinicians, for the selected Labels layer (by default the plugin's
segmentation or a sample's reference labels): one row per class with

* a show/hide check box with the class colour as its swatch. Hiding sets the class colour
  transparent in the layer's ``DirectLabelColormap`` (napari 0.9 has no per-label visibility, and
  ``show_selected_label`` shows one label only); the true colours are kept here and put back;
* the voxel count and the volume in mL from :func:`braunet.stats.label_statistics`, on the layer
  grid with an affine built from the layer's :class:`~braunet.napari._geometry.LayerGeometry` (so
  the voxel volume is the source file's, oblique and flipped grids included), no copy of the data;
* the mean HU inside the class for CT, from the image the labels belong to.

Class names come from the layer's metadata (``braunet_class_names``, set by the Segment widget, the
reader and the sample data), colours from its colormap. The numbers are recomputed after Segment
writes the layer and after edits (the layer's ``paint`` and ``data`` events), debounced by
:data:`DEBOUNCE_MS` so a brush stroke costs one recomputation, in a thread worker (a 512 x 512 x 300
CT takes about a second) whose result is dropped if the data changed meanwhile.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from magicgui.widgets import Container, Label

from braunet.io import Volume
from braunet.napari._geometry import METADATA_KEY, LayerGeometry
from braunet.napari._layers import CLASS_NAMES_KEY, class_names_of, looks_like_ct
from braunet.napari._widget_tools import OVERLAY_KEY, connect_while_alive, layer_combo, layer_geometry, wrap_labels

__all__ = ["DEBOUNCE_MS", "LegendWidget", "layer_grid_volume"]

DEBOUNCE_MS = 300
_SOURCE_KEY = "braunet_prediction_of"  # set by the Segment widget: {"image": name, "model": key}
_TRANSPARENT = np.zeros(4, dtype=np.float32)
COLUMNS = ("show", "class", "voxels", "mL", "mean HU")


def layer_grid_volume(array: Any, geometry: LayerGeometry, modality: str | None = None) -> Volume:
    """A Volume whose array is a layer's array as is ((K, J, I) or (H, W[, 3])), with the matching affine.

    The layer array is ``layer[k, r, c] = canonical[I-1-c, J-1-r, k]`` (see
    :mod:`braunet.napari._geometry`), so the affine is the canonical affine times that index map:
    voxel volumes and world boxes are the source's, and nothing is transposed or copied.
    """
    modality = modality or geometry.like.modality
    if geometry.is_2d:
        return Volume(array=array, affine=np.eye(4), source=geometry.like.source, modality=modality, is_2d=True)
    i, j, _ = geometry.reorientation.canonical_shape
    index_map = np.array([[0, 0, -1, i - 1], [0, -1, 0, j - 1], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    affine = geometry.reorientation.canonical_affine @ index_map
    return Volume(array=array, affine=affine, source=geometry.like.source, modality=modality, is_2d=False)


def _statistics(labels: np.ndarray, image: Any, geometry: LayerGeometry, names: list[str]) -> tuple[list, bool]:
    """Worker thread: (ClassStatistics per named class, whether the means are HU)."""
    from braunet.stats import label_statistics

    labels = np.asarray(labels)
    ct = False
    if image is not None:
        volume = layer_grid_volume(np.asarray(image.data), geometry, _modality(image))
        ct = looks_like_ct(volume)
    if not ct:  # only the geometry is needed: a zero-stride stand-in of the labels' shape
        volume = layer_grid_volume(np.broadcast_to(np.zeros((), np.uint8), labels.shape), geometry)
    return label_statistics(labels, volume, names, intensities=ct), ct


def _modality(image: Any) -> str:
    found = image.metadata.get(METADATA_KEY)
    return found.like.modality if isinstance(found, LayerGeometry) else "unknown"


class LegendWidget(Container):
    """Class list of a Labels layer; check boxes show and hide classes, numbers follow edits."""

    def __init__(self, napari_viewer: Any) -> None:
        from napari.layers import Labels
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget

        self.viewer = napari_viewer
        self.labels_layer = layer_combo(napari_viewer, Labels, "labels", nullable=True)
        self.summary = Label(value="")
        super().__init__(widgets=[self.labels_layer, self.summary])
        wrap_labels(self.summary)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.native.layout().addWidget(self.table)
        self.native.layout().addStretch(1)  # keep the rows under the picker, not spread over the dock
        self.table.itemChanged.connect(self._item_changed)

        self.records: list[Any] = []  # ClassStatistics of the shown rows
        self.ct = False
        self.hidden: set[int] = set()
        self._colors: dict[int, np.ndarray] = {}  # true RGBA of every class, also while hidden
        self._layer: Any = None
        self._applying = False  # our own colormap writes, not to be read back as new colours
        self._worker: Any = None
        self._dirty = False
        self._generation = 0  # bumped by every edit; a result of an older generation is stale
        self._filling = False
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.recompute)

        self.labels_layer.changed.connect(self._watch)
        connect_while_alive(self.native, napari_viewer.layers.events.inserted, self._layer_inserted)
        connect_while_alive(self.native, napari_viewer.layers.selection.events.active, self._active_changed)
        self.native.destroyed.connect(lambda *_: self._unwatch())
        self.labels_layer.value = self._default_layer()
        self._watch(self.labels_layer.value)

    # -- which layer ---------------------------------------------------------------------------
    def _default_layer(self) -> Any:
        """The active Labels layer, else the newest one with class names, else the newest Labels layer."""
        from napari.layers import Labels

        candidates = [layer for layer in self.viewer.layers
                      if isinstance(layer, Labels) and not layer.metadata.get(OVERLAY_KEY)]  # fmt: skip
        active = self.viewer.layers.selection.active
        if active in candidates:
            return active
        named = [layer for layer in candidates if layer.metadata.get(CLASS_NAMES_KEY)]
        return (named or candidates or [None])[-1]

    def _layer_inserted(self, event: Any) -> None:
        from napari.layers import Labels

        layer = event.value
        if isinstance(layer, Labels) and (layer.metadata.get(CLASS_NAMES_KEY) or self.labels_layer.value is None):
            self.labels_layer.reset_choices()
            self.labels_layer.value = layer  # a new segmentation is what the user wants to see

    def _active_changed(self, event: Any) -> None:
        from napari.layers import Labels

        layer = event.value
        if isinstance(layer, Labels) and layer is not self.labels_layer.value and not layer.metadata.get(OVERLAY_KEY):
            self.labels_layer.value = layer

    def _watch(self, layer: Any) -> None:
        if layer is self._layer:
            return
        self._unwatch()
        self._layer, self.hidden, self._colors, self.records = layer, set(), {}, []
        if layer is not None:
            layer.events.paint.connect(self._edited)
            layer.events.data.connect(self._edited)
            layer.events.colormap.connect(self._colormap_changed)
            self._read_colors()
        self._fill_table()
        self._edited()
        self._timer.stop()
        self.recompute()

    def _unwatch(self) -> None:
        if self._layer is None:
            return
        for emitter, callback in ((self._layer.events.paint, self._edited), (self._layer.events.data, self._edited),
                                  (self._layer.events.colormap, self._colormap_changed)):  # fmt: skip
            with contextlib.suppress(RuntimeError, TypeError, ValueError):
                emitter.disconnect(callback)
        self._layer = None

    def class_names(self) -> list[str]:
        layer = self._layer
        if layer is None:
            return []
        names = class_names_of(layer.metadata, layer.features)
        if names is None:  # unnamed labels: the values present, as "class N"
            top = int(np.max(layer.data)) if np.size(layer.data) else 0
            names = ["background"] + [f"class {v}" for v in range(1, top + 1)]
        return names

    def source_image(self) -> Any:
        """The image the labels were made from: Segment's record, else a layer of the same geometry."""
        from napari.layers import Image

        layer = self._layer
        if layer is None:
            return None
        images = [im for im in self.viewer.layers if isinstance(im, Image) and not im.metadata.get(OVERLAY_KEY)]
        made_from = (layer.metadata.get(_SOURCE_KEY) or {}).get("image")
        for image in images:
            if image.name == made_from:
                return image
        geometry = layer.metadata.get(METADATA_KEY)
        for image in images:
            if geometry is not None and image.metadata.get(METADATA_KEY) is geometry:
                return image
        spatial = tuple(layer.data.shape)
        for image in images:
            shape = tuple(image.data.shape[:-1] if image.rgb else image.data.shape)
            if shape == spatial and np.allclose(image.scale, layer.scale):
                return image
        return None

    # -- colours and visibility ----------------------------------------------------------------
    def _read_colors(self) -> None:
        """Take the class colours from the layer's colormap (keeping the true colour of hidden classes)."""
        colormap = self._layer.colormap
        for value in range(1, len(self.class_names())):
            color = np.asarray(colormap.map(np.array([value]))[0], dtype=np.float32)
            if value not in self.hidden or color[3] > 0:
                self._colors[value] = color

    def _colormap_changed(self, event: Any = None) -> None:
        if self._applying or self._layer is None:
            return
        self._read_colors()  # e.g. Segment set new class colours: keep hidden classes hidden
        if self.hidden:
            self._apply_visibility()
        self._fill_table()

    def _apply_visibility(self) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        layer = self._layer
        colors = dict(layer.colormap.color_dict)
        colors.setdefault(None, _TRANSPARENT)
        for value, color in self._colors.items():
            colors[value] = _TRANSPARENT if value in self.hidden else color
        self._applying = True
        try:
            layer.colormap = DirectLabelColormap(color_dict=colors)
        finally:
            self._applying = False

    def set_class_visible(self, value: int, visible: bool) -> None:
        """Show or hide label ``value`` (its pixels drawn transparent); the check box follows."""
        if self._layer is None or value not in self._colors:
            return
        (self.hidden.discard if visible else self.hidden.add)(value)
        self._apply_visibility()
        self._fill_table()

    def _item_changed(self, item: Any) -> None:
        from qtpy.QtCore import Qt

        if self._filling or item.column() != 0:
            return
        value = item.data(Qt.ItemDataRole.UserRole)
        self.set_class_visible(int(value), item.checkState() == Qt.CheckState.Checked)

    # -- numbers -------------------------------------------------------------------------------
    def _edited(self, event: Any = None) -> None:
        self._generation += 1
        self._timer.start()

    @property
    def busy(self) -> bool:
        """Numbers are pending: an edit waits for the debounce, or a computation runs."""
        return self._timer.isActive() or self._worker is not None

    def recompute(self) -> None:
        """Start the statistics of the current data in a worker (again after it, if an edit came meanwhile)."""
        from napari.qt.threading import create_worker

        layer = self._layer
        if layer is None:
            return
        if self._worker is not None:
            self._dirty = True
            return
        generation, names = self._generation, self.class_names()
        geometry, image = layer_geometry(layer), self.source_image()
        worker = create_worker(_statistics, layer.data, image, geometry, names, _start_thread=False)
        worker.returned.connect(lambda result: self._show(layer, generation, *result))
        worker.errored.connect(lambda error: setattr(self.summary, "value", f"{type(error).__name__}: {error}"))
        worker.finished.connect(self._worker_finished)
        self._worker = worker
        worker.start()

    def _worker_finished(self) -> None:
        self._worker = None
        if self._dirty:
            self._dirty = False
            self.recompute()

    def _show(self, layer: Any, generation: int, records: list, ct: bool) -> None:
        if layer is not self._layer:
            return
        if generation != self._generation:  # edited while computing: the next run gives the numbers
            self._dirty = True
            return
        self.records, self.ct = records, ct
        self._fill_table()

    def _fill_table(self) -> None:
        from qtpy.QtCore import Qt
        from qtpy.QtGui import QColor, QIcon, QPixmap
        from qtpy.QtWidgets import QTableWidgetItem

        self._filling = True
        try:
            rows = self.records or [_Empty(v, n) for v, n in enumerate(self.class_names()) if v]
            self.table.setRowCount(len(rows))
            self.table.setColumnHidden(COLUMNS.index("mean HU"), not self.ct)
            self.table.setColumnHidden(COLUMNS.index("mL"), self._layer is not None and layer_geometry(self._layer).is_2d)
            for row, record in enumerate(rows):
                check = QTableWidgetItem()
                check.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
                check.setCheckState(Qt.CheckState.Unchecked if record.index in self.hidden else Qt.CheckState.Checked)
                check.setData(Qt.ItemDataRole.UserRole, record.index)
                rgba = self._colors.get(record.index)
                if rgba is not None:
                    pixmap = QPixmap(14, 14)
                    pixmap.fill(QColor.fromRgbF(*(float(c) for c in rgba[:3])))
                    check.setIcon(QIcon(pixmap))
                check.setToolTip("show / hide this class")
                cells = [check, QTableWidgetItem(record.name), _number(record.voxels, "{:,}"),
                         _number(record.volume_ml, "{:.1f}"), _number(record.mean, "{:.0f}")]  # fmt: skip
                for column, item in enumerate(cells):
                    self.table.setItem(row, column, item)
            self.table.resizeColumnsToContents()
            height = self.table.horizontalHeader().height() + sum(self.table.rowHeight(r) for r in range(len(rows)))
            self.table.setFixedHeight(min(height + 4, 320))
        finally:
            self._filling = False
        self.summary.value = self._summary()

    def _summary(self) -> str:
        if self._layer is None:
            return "No Labels layer."
        if not self.records:
            return f"{self._layer.name}: computing..."
        total = sum(r.voxels for r in self.records)
        text = f"{self._layer.name}: {total:,} labelled {'pixels' if self.records[0].volume_ml is None else 'voxels'}"
        if self.records[0].volume_ml is not None:
            text += f", {sum(r.volume_ml for r in self.records):.1f} mL"
        if self.ct:
            text += f"; mean HU from {self.source_image().name}"
        return text + "."


class _Empty:
    """A row before the first numbers arrive."""

    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name
        self.voxels = self.volume_ml = self.mean = None


def _number(value: float | int | None, form: str) -> Any:
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTableWidgetItem

    item = QTableWidgetItem("" if value is None else form.format(value))
    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item
