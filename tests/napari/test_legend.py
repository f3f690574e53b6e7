"""Legend dock on the shared CT sample: volumes, mean HU, show/hide as rendered, counts after a brush stroke."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

PLUGIN = "napari-braunet"


class _Mouse:
    """A mouse event as napari's callbacks read it (type and position change during a drag)."""

    def __init__(self, position) -> None:
        self.type, self.position, self.is_dragging = "mouse_press", tuple(position), False
        self.view_direction, self.dims_displayed, self.modifiers, self.button, self.handled = None, [1, 2], (), 1, False


def _stroke(layer, points_world) -> None:
    """Press, drag through ``points_world`` and release on ``layer``, through napari's mouse callbacks."""
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    event = _Mouse(points_world[0])
    mouse_press_callbacks(layer, event)
    event.type, event.is_dragging = "mouse_move", True
    for point in points_world[1:]:
        event.position = tuple(point)
        mouse_move_callbacks(layer, event)
    event.type, event.is_dragging = "mouse_release", False
    mouse_release_callbacks(layer, event)


def _count_color(screenshot: np.ndarray, rgba: np.ndarray) -> int:
    target = np.round(np.asarray(rgba[:3]) * 255)
    return int(np.all(np.abs(screenshot[..., :3].astype(int) - target) <= 3, axis=-1).sum())


def _cell(widget, row: int, column: str) -> str:
    from braunet.napari._legend import COLUMNS

    return widget.table.item(row, COLUMNS.index(column)).text()


def test_legend_volumes_hiding_and_edits(make_napari_viewer, qtbot):
    from qtpy.QtCore import Qt

    from braunet.samples import load_sample

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "ct_abdomen")
    image, labels = viewer.layers["CT abdomen"], viewer.layers["CT abdomen reference labels"]
    _, legend = viewer.window.add_plugin_dock_widget(PLUGIN, "Legend")
    assert legend.labels_layer.value is labels  # the newest named Labels layer
    qtbot.waitUntil(lambda: bool(legend.records) and not legend.busy, timeout=30_000)

    # Independent path on the source file's grid: counts, |det(affine)| voxel volume, HU means.
    sample = load_sample("ct_abdomen")
    source_labels, hu = np.asarray(sample.labels), np.asarray(sample.image.array, dtype=np.float64)
    voxel_ml = abs(np.linalg.det(sample.image.affine[:3, :3])) / 1000.0
    counts = np.bincount(source_labels.ravel(), minlength=len(sample.sample.class_names))
    names = list(sample.sample.class_names)
    assert [r.name for r in legend.records] == names[1:]
    assert legend.ct
    for row, record in enumerate(legend.records):
        assert record.voxels == counts[record.index] > 0
        assert record.volume_ml == pytest.approx(counts[record.index] * voxel_ml, rel=1e-12)
        expected_mean = ndimage.mean(hu, labels=source_labels, index=record.index)
        assert record.mean == pytest.approx(expected_mean, rel=1e-6, abs=1e-3)
        assert _cell(legend, row, "voxels") == f"{counts[record.index]:,}"
        assert _cell(legend, row, "mL") == f"{counts[record.index] * voxel_ml:.1f}"
        assert _cell(legend, row, "class") == record.name

    # Hiding a class: its pixels are transparent in the colormap and vanish from the rendered canvas.
    k = int(np.argmax([(labels.data[z] > 0).sum() for z in range(labels.data.shape[0])]))
    on_slice = np.bincount(labels.data[k].ravel(), minlength=len(names))
    value = int(np.argmax(on_slice[1:]) + 1)
    other = int(np.argsort(on_slice[1:])[-2] + 1)
    viewer.dims.set_point(0, image.data_to_world((k, 0, 0))[0])
    image.visible, labels.opacity = False, 1.0
    color, other_color = legend._colors[value].copy(), legend._colors[other].copy()
    before = viewer.screenshot(canvas_only=True, flash=False)
    assert _count_color(before, color) > 50 and _count_color(before, other_color) > 50

    row = [r.index for r in legend.records].index(value)
    legend.table.item(row, 0).setCheckState(Qt.CheckState.Unchecked)  # the user unticks the class
    assert legend.hidden == {value}
    assert labels.colormap.map(np.array([value]))[0, 3] == 0
    np.testing.assert_allclose(labels.colormap.map(np.array([other]))[0], other_color)
    after = viewer.screenshot(canvas_only=True, flash=False)
    assert _count_color(after, color) == 0
    assert _count_color(after, other_color) == pytest.approx(_count_color(before, other_color), rel=0.02)
    assert legend.table.item(row, 0).checkState() == Qt.CheckState.Unchecked

    legend.table.item(row, 0).setCheckState(Qt.CheckState.Checked)
    np.testing.assert_allclose(labels.colormap.map(np.array([value]))[0], color)
    assert _count_color(viewer.screenshot(canvas_only=True, flash=False), color) == _count_color(before, color)

    # A brush stroke of napari's paint tool: one debounced recomputation, the new counts.
    labels.mode, labels.selected_label, labels.brush_size = "paint", other, 7
    viewer.layers.selection.active = labels
    old = np.bincount(labels.data.ravel(), minlength=len(names))
    row_other = [r.index for r in legend.records].index(other)
    path = [labels.data_to_world((k, 30.0, c)) for c in np.linspace(20, 100, 40)]
    _stroke(labels, path)
    new = np.bincount(labels.data.ravel(), minlength=len(names))
    assert new[other] > old[other]
    assert legend.busy  # waiting for the debounce, not recomputing per brush dab
    qtbot.waitUntil(lambda: not legend.busy and legend.records[row_other].voxels == new[other], timeout=30_000)
    assert [r.voxels for r in legend.records] == [int(n) for n in new[1:]]
    assert _cell(legend, row_other, "voxels") == f"{int(new[other]):,}"
    assert legend.records[row_other].volume_ml == pytest.approx(new[other] * voxel_ml, rel=1e-12)


def test_legend_follows_a_new_segmentation_and_keeps_hidden_classes(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "dermoscopy")
    _, legend = viewer.window.add_plugin_dock_widget(PLUGIN, "Legend")
    labels = legend.labels_layer.value
    qtbot.waitUntil(lambda: bool(legend.records) and not legend.busy, timeout=30_000)
    mask = np.asarray(labels.data)
    assert [(r.name, r.voxels, r.volume_ml) for r in legend.records] == [("lesion", int((mask == 1).sum()), None)]
    assert not legend.ct and legend.table.isColumnHidden(3)  # 2-D photo: pixels, no mL, no HU

    legend.set_class_visible(1, False)
    labels.colormap = {None: "transparent", 0: "transparent", 1: "#ff0000"}  # e.g. Segment sets new colours
    assert labels.colormap.map(np.array([1]))[0, 3] == 0  # still hidden
    np.testing.assert_allclose(legend._colors[1], [1, 0, 0, 1])
    legend.set_class_visible(1, True)
    np.testing.assert_allclose(labels.colormap.map(np.array([1]))[0], [1, 0, 0, 1])

    added = viewer.add_labels(np.zeros_like(mask), name="new", metadata={"braunet_class_names": ["bg", "polyp"]})
    assert legend.labels_layer.value is added
    qtbot.waitUntil(lambda: not legend.busy and [r.name for r in legend.records] == ["polyp"], timeout=30_000)
    added.data = np.ones_like(mask)  # a new prediction written as a whole
    qtbot.waitUntil(lambda: not legend.busy and legend.records[0].voxels == mask.size, timeout=30_000)


def test_legend_follows_segment_runs(make_napari_viewer, qtbot, tiny_ct_checkpoint):
    """The Segment widget's new layer is listed at once; a re-run on other slices updates the counts."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    _, legend = viewer.window.add_plugin_dock_widget(PLUGIN, "Legend")
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.checkpoint.value = str(tiny_ct_checkpoint)
    segment.slice_mode.value = "slice range"
    segment.first.value, segment.last.value = 60, 61
    segment.run_button.native.click()
    qtbot.waitUntil(lambda: "CT abdomen segmentation" in viewer.layers, timeout=60_000)
    labels = viewer.layers["CT abdomen segmentation"]
    assert legend.labels_layer.value is labels

    def shown() -> list[int]:
        return [r.voxels for r in legend.records]

    def expected() -> list[int]:
        return [int(n) for n in np.bincount(labels.data.ravel(), minlength=len(legend.class_names()))[1:]]

    qtbot.waitUntil(lambda: not legend.busy and bool(legend.records) and shown() == expected(), timeout=30_000)
    first = shown()
    segment.first.value, segment.last.value = 80, 81
    segment.run_button.native.click()  # written into the same layer (one undoable edit)
    qtbot.waitUntil(lambda: not legend.busy and shown() == expected() != first, timeout=60_000)
    assert legend.ct and all(r.voxels == 0 or r.mean is not None for r in legend.records)
