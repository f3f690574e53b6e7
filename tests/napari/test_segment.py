"""Segment widget: geometry, class names, undoable re-runs, organ Dice, cancel, GUI responsiveness."""

from __future__ import annotations

import time

import numpy as np

from braunet.infer import predict
from braunet.io import Volume
from braunet.zoo import load_model

PLUGIN = "napari-braunet"


def _segment_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    return widget


def _run(qtbot, widget, timeout=120_000):
    job = widget.run()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=timeout)
    return job


def test_2d_image_with_a_checkpoint_folder(make_napari_viewer, qtbot, tiny_rgb_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "colonoscopy")
    image = viewer.layers[0]
    widget = _segment_widget(viewer)
    widget.checkpoint.value = str(tiny_rgb_checkpoint)  # the "add model folder" picker
    assert widget.model.value.startswith("tiny-rgb")
    widget.image.value = image
    widget.confidence.value = True
    assert not widget.slice_mode.enabled and not widget.window.enabled  # 2-D RGB: no slices, no CT window
    _run(qtbot, widget)

    labels = viewer.layers["CVC-ClinicDB 139 segmentation"]
    assert labels.data.shape == (288, 384) and labels.data.dtype == np.uint8
    np.testing.assert_array_equal(labels.scale, image.scale)
    np.testing.assert_array_equal(labels.translate, image.translate)
    assert list(labels.features["name"]) == ["background", "polyp"]
    # Exactly what the engine predicts for the same image.
    model, card = load_model(tiny_rgb_checkpoint)
    frame = Volume(array=image.data, affine=np.eye(4), source=None, modality="RGB", is_2d=True)
    expected = predict(model, card, frame, confidence=True)
    np.testing.assert_array_equal(labels.data, expected.labels)
    confidence = viewer.layers["CVC-ClinicDB 139 confidence"]
    np.testing.assert_allclose(confidence.data, expected.confidence, atol=1e-6)
    assert widget.progress.value == widget.progress.max == 1

    # A second run updates the same layer instead of adding one.
    count = len(viewer.layers)
    _run(qtbot, widget)
    assert len(viewer.layers) == count
    assert widget.status.value.endswith(": CVC-ClinicDB 139, 0 pixels changed.")


def test_ct_sample_organs_where_the_reference_labels_are(make_napari_viewer, qtbot, bundled_ct_model):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    image, reference = viewer.layers
    widget = _segment_widget(viewer)
    widget.model.value = bundled_ct_model
    widget.slice_mode.value = "slice range"
    # The model's validation slab: the bundled model was trained on slices 0-96 of this CT only.
    widget.first.value, widget.last.value = 100, 111
    widget.batch_size.value = 8
    _run(qtbot, widget)

    labels = viewer.layers["CT abdomen segmentation"]
    assert labels.data.shape == image.data.shape == (112, 101, 122)
    np.testing.assert_array_equal(labels.scale, image.scale)
    np.testing.assert_array_equal(labels.translate, image.translate)
    assert labels.metadata["braunet"] is image.metadata["braunet"]
    assert list(labels.features["name"])[5] == "liver"
    assert labels.colormap.map(5)[:3].tolist() != labels.colormap.map(7)[:3].tolist()
    assert not labels.data[:100].any() and labels.data[100:].any()  # only the chosen slices

    pred, truth = labels.data[100:], reference.data[100:]
    dice = {}
    for value in range(1, 9):
        a, b = pred == value, truth == value
        if b.sum() > 200:
            dice[value] = 2 * (a & b).sum() / (a.sum() + b.sum())
    print("Dice per organ:", {labels.features["name"][v]: round(d, 3) for v, d in dice.items()})
    assert dice[5] > 0.85  # liver
    assert np.mean(list(dice.values())) > 0.4  # chance level (a random organ per voxel) is below 0.05
    # Geometry, not luck: the same labels mirrored left-right (a classic orientation bug) do not fit.
    mirrored = truth[:, :, ::-1] == 5
    assert 2 * ((pred == 5) & mirrored).sum() / ((pred == 5).sum() + mirrored.sum()) < 0.5


def test_cleanup_checkbox_cleans_the_volume_labels(make_napari_viewer, qtbot, bundled_ct_model):
    from braunet.cleanup import clean_labels

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    widget = _segment_widget(viewer)
    widget.model.value = bundled_ct_model
    widget.slice_mode.value = "slice range"
    widget.first.value, widget.last.value = 100, 111
    _run(qtbot, widget)
    labels = viewer.layers["CT abdomen segmentation"]
    raw = labels.data.copy()
    expected = clean_labels(raw)  # 26-connectivity and hole filling do not depend on axis order or flips
    assert not np.array_equal(expected, raw)
    widget.cleanup.value = True
    _run(qtbot, widget)
    np.testing.assert_array_equal(labels.data, expected)


def test_rerun_on_the_current_slice_is_one_undo_step(make_napari_viewer, qtbot, tiny_ct_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    widget = _segment_widget(viewer)
    widget.checkpoint.value = str(tiny_ct_checkpoint)
    widget.slice_mode.value = "slice range"
    widget.first.value, widget.last.value = 60, 63
    _run(qtbot, widget)
    labels = viewer.layers["CT abdomen segmentation"]
    predicted = labels.data.copy()
    assert predicted[60:64].any()

    # The user erases slice 61; running "current slice" there, asked to overwrite corrections, paints the
    # prediction back...
    erased = np.nonzero(labels.data[61])
    labels.data_setitem((np.full(erased[0].size, 61),) + erased, 0)
    viewer.dims.set_point(0, labels.data_to_world((61, 0, 0))[0])
    widget.slice_mode.value = "current slice"
    widget.overwrite.value = True
    assert widget.slices_to_run() == [61]
    _run(qtbot, widget)
    np.testing.assert_array_equal(labels.data, predicted)
    assert len([layer for layer in viewer.layers if "segmentation" in layer.name]) == 1
    # ...as one undoable step: Ctrl+Z brings the erased slice back.
    labels.undo()
    assert not labels.data[61].any()
    np.testing.assert_array_equal(labels.data[62], predicted[62])


def test_cancel_stops_within_two_seconds_and_writes_nothing(make_napari_viewer, qtbot, cpu_ct_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    widget = _segment_widget(viewer)
    widget.checkpoint.value = str(cpu_ct_checkpoint)
    widget.device.value = "cpu"  # a GPU could finish before the click
    widget.batch_size.value = 2
    widget.slice_mode.value = "all slices"
    job = widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=60_000)  # running: a batch is done
    assert job.running
    widget.cancel_button.clicked.emit()  # the Cancel button
    asked = time.perf_counter()
    qtbot.waitUntil(lambda: not job.running, timeout=2_000)
    print(f"stopped {time.perf_counter() - asked:.2f} s after Cancel")
    assert widget.progress.value < widget.progress.max
    assert "CT abdomen segmentation" not in viewer.layers
    assert widget.status.value.startswith("Cancelled")
    assert widget.run_button.enabled and not widget.cancel_button.enabled

    # With a segmentation layer already there, a cancelled re-run leaves it exactly as it was.
    widget.slice_mode.value = "slice range"
    widget.first.value, widget.last.value = 60, 61
    job = widget.run()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    labels = viewer.layers["CT abdomen segmentation"]
    before, count = labels.data.copy(), len(viewer.layers)
    widget.slice_mode.value = "all slices"
    job = widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not job.running, timeout=2_000)
    np.testing.assert_array_equal(labels.data, before)
    assert len(viewer.layers) == count


def test_gui_stays_responsive_during_inference(make_napari_viewer, qtbot, cpu_ct_checkpoint, heartbeat):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    widget = _segment_widget(viewer)
    widget.checkpoint.value = str(cpu_ct_checkpoint)
    widget.slice_mode.value = "slice range"
    widget.first.value, widget.last.value = 40, 79
    widget.batch_size.value = 4
    with heartbeat() as beat:
        _run(qtbot, widget)
    assert "CT abdomen segmentation" in viewer.layers
    print(f"heartbeat: {len(beat.ticks)} ticks, longest gap {beat.max_gap * 1000:.0f} ms")
    assert beat.max_gap < 0.5


def test_model_follows_the_kind_of_image(make_napari_viewer):
    from braunet import zoo

    if not {"ct-abdomen-8", "polyp", "skin-lesion"} <= set(zoo.list_models()):
        import pytest

        pytest.skip("the bundled models are not installed")
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    widget = _segment_widget(viewer)
    assert widget.model.value == "ct-abdomen-8"
    viewer.open_sample(PLUGIN, "dermoscopy")
    widget.image.value = viewer.layers["ISIC_0000198"]
    assert widget.model.value == "skin-lesion"  # a CT model cannot segment a photograph
    viewer.open_sample(PLUGIN, "colonoscopy")
    widget.image.value = viewer.layers["CVC-ClinicDB 139"]
    assert widget.model.value == "skin-lesion"  # an RGB model stays the user's choice
    widget.image.value = viewer.layers["CT abdomen"]
    assert widget.model.value == "ct-abdomen-8"


def test_precision_setting_reaches_predict(make_napari_viewer, qtbot, tiny_rgb_checkpoint, monkeypatch):
    import braunet.infer
    from braunet.infer import device

    monkeypatch.setattr(device, "_cpu_bf16_native", lambda: True)  # no emulation warning on any CPU
    asked = []
    real_predict = braunet.infer.predict

    def spy(*args, **options):
        asked.append(options.get("precision"))
        return real_predict(*args, **options)

    monkeypatch.setattr(braunet.infer, "predict", spy)
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "colonoscopy")
    widget = _segment_widget(viewer)
    widget.checkpoint.value = str(tiny_rgb_checkpoint)
    widget.image.value = viewer.layers[0]
    assert widget.precision.value == "auto" and widget.more_options.isAncestorOf(widget.precision.native)
    _run(qtbot, widget)
    assert not widget.status.value.endswith("Ran in bf16.")  # auto: the card records no bf16 check
    widget.precision.value = "bf16"
    _run(qtbot, widget)
    assert asked == ["auto", "bf16"] and widget.status.value.endswith("Ran in bf16.")


def test_a_slice_run_writes_its_confidence_into_the_same_map(make_napari_viewer, qtbot, tiny_ct_checkpoint):
    """The confidence of a "current slice" run goes into that slice of the existing map, in place."""
    from braunet.napari._geometry import layer_from_source, layer_volume

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    image = viewer.layers["CT abdomen"]
    widget = _segment_widget(viewer)
    widget.checkpoint.value = str(tiny_ct_checkpoint)
    widget.confidence.value = True
    widget.slice_mode.value = "slice range"
    widget.first.value, widget.last.value = 60, 61
    _run(qtbot, widget)
    confidence = viewer.layers["CT abdomen confidence"]
    array, before = confidence.data, confidence.data.copy()
    assert before[60:62].any() and not before[62].any()

    viewer.dims.set_point(0, image.data_to_world((62, 0, 0))[0])
    widget.slice_mode.value = "current slice"
    _run(qtbot, widget)
    assert viewer.layers["CT abdomen confidence"] is confidence and confidence.data is array
    geometry = image.metadata["braunet"]
    model, card = load_model(tiny_ct_checkpoint)
    expected = predict(model, card, layer_volume(image.data, geometry), slices=[62], confidence=True)
    np.testing.assert_allclose(confidence.data[62], layer_from_source(expected.confidence, geometry)[62], atol=1e-6)
    np.testing.assert_array_equal(confidence.data[:62], before[:62])
    np.testing.assert_array_equal(confidence.data[63:], before[63:])
