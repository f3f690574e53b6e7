"""Routing explorer: a click shows exactly the windows and scores record_routing reports for the clicked window."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nibabel.affines import apply_affine

from braunet.infer import preprocess_slices, to_view
from braunet.io import to_canonical
from braunet.model import record_routing
from braunet.zoo import load_model

PLUGIN = "napari-braunet"


def _expected_routing(volume, model, card, world_lps, block):
    """Independent path: world mm -> RAS -> canonical voxel -> model pixel -> window -> record_routing."""
    canonical, reorientation = to_canonical(volume)
    ras = np.array([-world_lps[2], -world_lps[1], world_lps[0]])
    i, j, k = apply_affine(np.linalg.inv(reorientation.canonical_affine), ras)
    k = int(round(k))
    raw = to_view(canonical, [k], "radiological")  # (1, J, I): row = J-1-j, column = I-1-i
    rows, cols = raw.shape[1:]
    size, n_win = model.config.img_size, model.config.n_win
    r, c = rows - 1 - j, cols - 1 - i
    m_r, m_c = r * (size - 1) / (rows - 1), c * (size - 1) / (cols - 1)  # spline3 zoom: corner-aligned centres
    window = int(np.floor((m_r + 0.5) / (size / n_win))) * n_win + int(np.floor((m_c + 0.5) / (size / n_win)))
    with torch.inference_mode(), record_routing(model) as routes:
        model(preprocess_slices(raw, card.preprocessing, size))
    route = next(route for route in routes if route.name == block)
    indices = route.indices[0]
    return k, window, indices[window].tolist(), indices.numpy(), route.logits[0].numpy()


@pytest.mark.parametrize("block_index", [0, -1])  # first encoder block, last decoder block
def test_click_shows_what_record_routing_predicts(make_napari_viewer, qtbot, cpu_ct_checkpoint, block_index,
                                                  heartbeat):  # fmt: skip
    from braunet.napari._routing import HEATMAP_MODES
    from braunet.samples import load_sample

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    image = viewer.layers["CT abdomen"]
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.checkpoint.value = str(cpu_ct_checkpoint)  # the explorer follows the viewer's current model
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Routing explorer")
    assert widget.model.value == segment.model.value
    blocks = list(widget.block.choices)
    widget.block.value = blocks[block_index]
    qtbot.waitUntil(lambda: widget.model.value in widget.warmed, timeout=60_000)  # warmed up in a worker
    assert "routing heatmap" not in viewer.layers and "routing windows" not in viewer.layers  # before any query

    viewer.dims.set_point(0, image.data_to_world((95, 0, 0))[0])
    click = image.data_to_world((95, 61.2, 20.7))  # a point on the patient's right, world mm (LPS)
    # A real mouse press through the viewer's callbacks.
    from napari.utils.interactions import mouse_press_callbacks

    class Event:
        type, position, view_direction, dims_displayed, modifiers, button = (
            "mouse_press", tuple(click), None, [1, 2], (), 1)  # fmt: skip

    with heartbeat() as beat:  # the first click: one forward pass in a worker, the GUI keeps ticking
        mouse_press_callbacks(viewer, Event())
        qtbot.waitUntil(lambda: "query" in widget.last, timeout=60_000)
    assert beat.max_gap < 0.3, f"GUI stalled {beat.max_gap:.2f} s on the first click"

    model, card = load_model(cpu_ct_checkpoint)
    k, window, routed, indices, logits = _expected_routing(load_sample("ct_abdomen").image, model, card, click,
                                                   widget.block.value)  # fmt: skip
    assert (widget.last["slice"], widget.last["query"], widget.last["routed"]) == (k, window, routed)

    # The drawn rectangles are those windows, on the image's grid, at the clicked slice.
    shapes = viewer.layers["routing windows"]
    np.testing.assert_array_equal(shapes.scale, image.scale)
    np.testing.assert_array_equal(shapes.translate, image.translate)
    assert len(shapes.data) == 1 + model.bra_modules()[block_index][1].topk
    frame_windows = []
    for rect in shapes.data:
        assert np.all(rect[:, 0] == 95)
        centre = rect[:, 1:].mean(axis=0)
        frame_windows.append(widget._frames[(id(image), widget.model.value, 95)].window_at(centre))
    assert frame_windows == [window, *routed]
    texts = list(shapes.features["label"])
    ranks = [str(rank) for rank in range(1, len(routed) + 1)]
    if window in routed:  # the query window routes to itself: labelled once, "Q = rank"
        rank = routed.index(window) + 1
        assert texts[0] == f"Q = {rank}" and texts[rank] == ""
    else:
        assert texts == ["Q", *ranks]
    query_rect = shapes.data[0][:, 1:]
    assert query_rect[:, 0].min() <= 61.2 <= query_rect[:, 0].max()  # the clicked point is inside its window
    assert query_rect[:, 1].min() <= 20.7 <= query_rect[:, 1].max()

    # The scores: the region-level logits of the query window, softmax over all windows; top-k = routed.
    np.testing.assert_allclose(widget.last["logits"], logits[window], rtol=1e-5, atol=1e-5)
    softmax = np.exp(logits[window] - logits[window].max())
    softmax /= softmax.sum()
    np.testing.assert_allclose(widget.last["scores"], softmax, rtol=1e-5, atol=1e-7)
    assert list(np.argsort(-logits[window], kind="stable")[: len(routed)]) == routed
    heat = viewer.layers["routing heatmap"]
    assert heat.data.shape == (1, 101, 122)
    np.testing.assert_allclose(heat.translate, np.asarray(image.translate) + [95 * 3.0, 0, 0])
    assert heat.data[0, 61, 20] == pytest.approx(softmax[window], rel=1e-5)
    assert heat.data.max() == pytest.approx(softmax.max(), rel=1e-5)
    qtbot.waitUntil(lambda: heat.colorbar.visible, timeout=10_000)
    assert widget.colorbar.high == pytest.approx(softmax.max(), rel=1e-5)
    assert "7 x 7 windows of 32 px" in widget.grid.value and f"top-{len(routed)}" in widget.grid.value
    # Below the labels, and hidden in 3-D display.
    labels_index = viewer.layers.index(viewer.layers["CT abdomen reference labels"])
    assert viewer.layers.index(heat) < labels_index
    viewer.dims.ndisplay = 3
    assert not heat.visible
    viewer.dims.ndisplay = 2
    assert heat.visible

    # The frequency heatmap: the share of this slice's query windows that route into each window.
    widget.heatmap.value = HEATMAP_MODES[2]
    qtbot.waitUntil(lambda: widget.colorbar.title.value.startswith("share of queries"), timeout=10_000)
    heat = viewer.layers["routing heatmap"]
    expected_share = np.bincount(indices.reshape(-1), minlength=indices.shape[0]) / indices.shape[0]
    assert heat.data[0, 61, 20] == pytest.approx(expected_share[window])
    assert heat.data.max() == pytest.approx(expected_share.max())

    # It follows the slider: the same point on the next slice.
    viewer.dims.set_point(0, image.data_to_world((96, 0, 0))[0])
    qtbot.waitUntil(lambda: widget.last.get("slice") == 96, timeout=60_000)
    k2, window2, routed2, _, _ = _expected_routing(load_sample("ct_abdomen").image, model, card,
                                                image.data_to_world((96, 61.2, 20.7)), widget.block.value)  # fmt: skip
    assert (widget.last["query"], widget.last["routed"]) == (window2, routed2)
    assert np.all(viewer.layers["routing windows"].data[0][:, 0] == 96)


def test_routing_on_a_2d_image(make_napari_viewer, qtbot, tiny_rgb_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "dermoscopy")
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.checkpoint.value = str(tiny_rgb_checkpoint)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Routing explorer")
    image = viewer.layers["ISIC_0000198"]
    widget.image.value = image
    assert widget.inspect_world((300.0, 100.0))
    qtbot.waitUntil(lambda: "query" in widget.last, timeout=60_000)
    # tiny: 128 px input, 4 x 4 windows; bilinear half-pixel resize of 512 px -> 128 windows of 128 px.
    assert widget.last["query"] == (300 // 128) * 4 + 100 // 128
    rect = viewer.layers["routing windows"].data[0]
    np.testing.assert_allclose(rect.min(axis=0), [255.5, -0.5])
    np.testing.assert_allclose(rect.max(axis=0), [383.5, 127.5])
    assert viewer.layers["routing heatmap"].data.shape == (512, 512)


def test_later_clicks_update_the_overlay_without_the_first_drawings_gap(make_napari_viewer, qtbot, tiny_rgb_checkpoint,
                                                                       monkeypatch):  # fmt: skip
    """The gap between rectangles and heatmap is for building the layers' visuals; a later click
    on the same image only updates both layers, on the next turn of the event loop."""
    from braunet.napari import _routing

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "dermoscopy")
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.checkpoint.value = str(tiny_rgb_checkpoint)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Routing explorer")
    widget.image.value = viewer.layers["ISIC_0000198"]
    assert widget.inspect_world((300.0, 100.0))
    qtbot.waitUntil(lambda: "query" in widget.last, timeout=60_000)
    shapes, heat = viewer.layers["routing windows"], viewer.layers["routing heatmap"]
    monkeypatch.setattr(_routing, "_DRAW_GAP_MS", 600_000)  # a gap now would never end within the test
    assert widget.inspect_world((50.0, 450.0))  # the routing of this image is cached: drawing only
    qtbot.waitUntil(lambda: widget.last.get("query") == (50 // 128) * 4 + 450 // 128, timeout=5_000)
    assert viewer.layers["routing windows"] is shapes and viewer.layers["routing heatmap"] is heat
    rect = shapes.data[0]
    np.testing.assert_allclose(rect.min(axis=0), [-0.5, 383.5])
    assert heat.data[50, 450] == pytest.approx(widget.last["scores"][widget.last["query"]], rel=1e-6)


def test_export_round_trip_and_model_comparison(make_napari_viewer, qtbot, tiny_ct_checkpoint, tmp_path):
    """Volume export = record_routing slice by slice; a second model's routed windows give the Jaccard per block."""
    from braunet.infer.routing import route_volume
    from braunet.model.routing import load_routing, routed_jaccard
    from braunet.samples import load_sample

    from .conftest import make_checkpoint

    other_checkpoint = make_checkpoint(tmp_path, "tiny", "ct", "tiny-ct-other", seed=1)
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    image = viewer.layers["CT abdomen"]
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.checkpoint.value = str(other_checkpoint)
    other_key = segment.model.value
    segment.checkpoint.value = str(tiny_ct_checkpoint)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Routing explorer")
    key = widget.model.value
    assert key != other_key
    widget.compare.value = other_key
    assert "routing heatmap" not in viewer.layers  # choosing models draws nothing before a query

    # Export of the whole volume (layer slices 0..K-1), read back with NumPy + JSON only.
    job = widget.export(tmp_path / "ct routing.npz", whole_volume=True)
    with qtbot.waitSignal(job.finished, timeout=120_000):
        pass
    blocks, about = load_routing(tmp_path / "ct routing")
    assert about["format"] == "braunet-routing/1" and about["model"] == key
    assert about["slices"] == list(range(image.data.shape[0])) and about["n_win"] == 4
    model, card = load_model(tiny_ct_checkpoint)
    volume = load_sample("ct_abdomen").image
    # Layer slice k is canonical slice k of the canonical grid (the layer is the radiological stack).
    expected = route_volume(model, card, volume)
    assert set(blocks) == set(expected) == {name for name, _ in model.bra_modules()}
    for name, block in expected.items():
        np.testing.assert_array_equal(blocks[name].indices, block.indices)
        np.testing.assert_allclose(blocks[name].logits, block.logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(blocks[name].weights, block.weights, rtol=1e-5, atol=1e-6)
    # One slice, directly through record_routing (an independent path from route_volume).
    k = 60
    _, window, routed, indices, logits = _expected_routing(volume, model, card, image.data_to_world((k, 50, 60)),
                                                            "stages.0.0.attn")  # fmt: skip
    np.testing.assert_array_equal(blocks["stages.0.0.attn"].indices[k], indices)
    np.testing.assert_allclose(blocks["stages.0.0.attn"].logits[k], logits, rtol=1e-5, atol=1e-5)

    # Comparison: a click routes both models; Jaccard per block of the query window's routed windows.
    viewer.dims.set_point(0, image.data_to_world((k, 0, 0))[0])
    assert widget.inspect_world(image.data_to_world((k, 50, 60)))
    qtbot.waitUntil(lambda: "jaccard" in widget.last, timeout=60_000)
    assert widget.last["query"] == window and widget.last["routed"] == routed
    other_model, other_card = load_model(other_checkpoint)
    other = route_volume(other_model, other_card, volume, slices=[k])
    for name, value in widget.last["jaccard"].items():
        assert value == pytest.approx(float(routed_jaccard(expected[name].indices[k, window],
                                                           other[name].indices[0, window])))  # fmt: skip
    assert set(widget.last["jaccard"]) == set(expected)
    assert "Jaccard" in widget.overlap.value


def test_a_click_on_another_slice_draws_it_once(make_napari_viewer, qtbot, tiny_ct_checkpoint, monkeypatch):
    """Clicking a point of another slice moves the slider there and draws that slice's routing, once
    (not again when the slider's debounce timer fires)."""
    from braunet.napari._routing import RoutingWidget

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    image = viewer.layers["CT abdomen"]
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.checkpoint.value = str(tiny_ct_checkpoint)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Routing explorer")
    widget.image.value = image
    viewer.dims.set_point(0, image.data_to_world((90, 0, 0))[0])
    assert widget.inspect_world(image.data_to_world((90, 50.0, 60.0)))
    qtbot.waitUntil(lambda: widget.last.get("slice") == 90, timeout=60_000)
    drawn = []
    original = RoutingWidget._draw
    monkeypatch.setattr(RoutingWidget, "_draw", lambda self, *args: (drawn.append(args[2]), original(self, *args)))
    assert widget.inspect_world(image.data_to_world((93, 50.0, 60.0)))
    qtbot.waitUntil(lambda: widget.last.get("slice") == 93, timeout=60_000)
    qtbot.wait(500)  # past the slider's 150 ms debounce
    assert drawn == [93]
    assert np.all(viewer.layers["routing windows"].data[0][:, 0] == 93)
