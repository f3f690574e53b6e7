"""The napari workflow as an annotator uses it (issue 13): corrections are never lost, per-class feedback,
sensible defaults, one model choice per widget, docks that fit the screen, widgets that open without a stall.

Real shared data (the CT sample, CVC frames), real napari events (``Labels.paint``, ``data_setitem``,
dims changes, dock widgets added through the plugin manifest), under Xvfb.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

PLUGIN = "napari-braunet"
SEGMENTATION = "CT abdomen segmentation"


def _segment(qtbot, viewer, checkpoint, first, last, **options):
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.checkpoint.value = str(checkpoint)
    return segment, _run_segment(qtbot, segment, first, last, **options)


def _run_segment(qtbot, segment, first=None, last=None, mode="slice range", overwrite=False):
    segment.slice_mode.value = mode
    if first is not None:
        segment.first.value, segment.last.value = first, last
    segment.overwrite.value = overwrite
    job = segment.run()
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    return job


def _correct(layer, reference, slices):
    """Paint the reference labels into ``slices``, as an annotator's fill would (one undoable edit each)."""
    for k in slices:
        wrong = np.nonzero(layer.data[k] != reference.data[k])
        layer.data_setitem((np.full(wrong[0].size, k),) + wrong, reference.data[k][wrong])


def test_finetune_opened_after_the_edits_selects_and_trains_them(make_napari_viewer, qtbot, tiny_ct_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    segment, _ = _segment(qtbot, viewer, tiny_ct_checkpoint, 80, 89)
    labels, reference = viewer.layers[SEGMENTATION], viewer.layers["CT abdomen reference labels"]
    _correct(labels, reference, [81, 85])
    labels.brush_size = 4
    labels.selected_label = 5
    labels.paint((83, 40, 50), 5, refresh=True)  # a brush dab with napari's own tool

    _, finetune = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")  # opened only now
    assert finetune.corrected.value is labels  # the corrected prediction, not the sample's reference labels
    assert finetune.model.value == segment.model.value  # the model that segmented it
    assert finetune.slices.value == [81, 83, 85]
    assert "3 of 3 edited slices selected" in finetune.selected_count.value
    rows = [finetune.slices.native.item(i) for i in range(finetune.slices.native.count())]
    assert [row.isSelected() and row.font().bold() for row in rows] == [True, True, True]

    finetune.slices.value = [81, 85]  # the user leaves the brush dab out
    assert "2 of 3 edited slices selected" in finetune.selected_count.value
    assert not rows[1].font().bold()
    finetune.max_steps.value, finetune.time_budget.value, finetune.device.value = 2, 600.0, "cpu"
    job = finetune.train()
    assert job is not None, finetune.status.value
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    result = finetune.result
    assert result is not None, finetune.status.value
    assert sorted(result.train_indices + result.heldout_indices) == [0, 1] and result.steps == 2

    # Per-class feedback: each class's held-back Dice and HD95 (mm: the CT layer has mm geometry).
    assert result.hd95_unit == "mm" and result.per_class
    assert np.mean([c.dice_before for c in result.per_class]) == pytest.approx(result.dice_before)
    table = finetune.class_table
    assert table.isVisibleTo(finetune.native) and table.rowCount() == len(result.per_class)
    assert table.horizontalHeaderItem(2).text() == "HD95 (mm) before → after"
    first = result.per_class[0]
    assert table.item(0, 0).text() == first.name
    assert table.item(0, 1).text() == f"{first.dice_before:.3f} → {first.dice_after:.3f}"

    # With the result shown, the three docks still fit a 1000 px tall window (each at its minimum height).
    _, routing = viewer.window.add_plugin_dock_widget(PLUGIN, "Routing explorer")
    docks = [widget.native.parentWidget() for widget in (segment, finetune, routing)]
    assert sum(dock.minimumSizeHint().height() for dock in docks) <= 1000 - 47, [
        dock.minimumSizeHint().height() for dock in docks]
    print("per class:", [(c.name, round(c.dice_before, 3), round(c.dice_after, 3), round(c.hd95_before, 1))
                         for c in result.per_class])


def test_segment_rerun_keeps_corrected_slices_unless_asked(make_napari_viewer, qtbot, tiny_ct_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    segment, _ = _segment(qtbot, viewer, tiny_ct_checkpoint, 60, 69)
    labels, reference = viewer.layers[SEGMENTATION], viewer.layers["CT abdomen reference labels"]
    _correct(labels, reference, [62, 65])
    _, finetune = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    assert finetune.slices.value == [62, 65]
    corrected = labels.data.copy()

    _run_segment(qtbot, segment, mode="all slices")  # overwrite is off by default
    np.testing.assert_array_equal(labels.data[[62, 65]], corrected[[62, 65]])
    assert labels.data[:60].any()  # the other slices were segmented
    assert "2 corrected slices (62, 65) kept" in segment.status.value
    qtbot.waitUntil(lambda: finetune.refresh_edits() == [62, 65], timeout=3_000)  # the record survives the run
    assert finetune.slices.value == [62, 65]

    _run_segment(qtbot, segment, 60, 69, overwrite=True)  # explicitly asked: the model's labels come back
    assert not np.array_equal(labels.data[62], corrected[62])
    qtbot.waitUntil(lambda: finetune.refresh_edits() == [], timeout=3_000)
    assert "kept" not in segment.status.value


def test_each_widget_keeps_its_own_model(make_napari_viewer, qtbot, tiny_ct_checkpoint, cpu_ct_checkpoint):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    segment_dock, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    _, finetune = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    _, routing = viewer.window.add_plugin_dock_widget(PLUGIN, "Routing explorer")
    before = (finetune.model.value, routing.model.value, routing.block.value)
    shown = len(notification_manager.records)
    segment.checkpoint.value = str(tiny_ct_checkpoint)  # adds a model and chooses it in Segment only
    segment.model.value = segment.model.value  # (no-op) and another choice in Segment:
    segment.model.value = next(k for k in segment.store.keys() if k.startswith("tiny-ct"))
    assert (finetune.model.value, routing.model.value, routing.block.value) == before
    routing.model.value = routing.store.add_source(str(cpu_ct_checkpoint))
    assert segment.model.value.startswith("tiny-ct") and finetune.model.value == before[0]
    qtbot.waitUntil(lambda: routing.job is None or not routing.job.running, timeout=60_000)
    assert routing.block.value and routing.status.value == ""  # its block list follows its own model
    assert len(notification_manager.records) == shown  # nobody raised
    viewer.window.remove_dock_widget(segment_dock)
    _, later = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")  # a widget opened later starts on
    assert later is not segment and later.model.value == routing.model.value  # the last choice


def test_all_three_docks_fit_a_1000_px_window(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "ct_abdomen")
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[0]
             for name in ("Segment", "Fine-tune", "Routing explorer")}  # fmt: skip
    heights = {name: dock.sizeHint().height() for name, dock in docks.items()}
    window = viewer.window._qt_window
    chrome = window.menuBar().sizeHint().height() + window.statusBar().sizeHint().height()
    print(f"dock heights {heights}, menu + status bar {chrome} px, total {sum(heights.values()) + chrome} px")
    assert sum(heights.values()) + chrome <= 1000


@pytest.mark.parametrize("name", ["Segment", "Fine-tune", "Routing explorer"])
def test_widgets_open_without_loading_models(make_napari_viewer, qtbot, heartbeat, name):
    """Opening a widget loads no weights on the GUI thread and the GUI keeps ticking meanwhile; Segment
    loads only its chosen model, in a background thread.

    The construction time is printed; the assertion is on what it does (no model loaded) and on the
    heartbeat (a 0.3 s wall-clock limit on a shared 2-core machine would measure its load, not us).
    """
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    with heartbeat() as beat:
        start = time.perf_counter()
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        opened = time.perf_counter() - start
        qtbot.wait(1500)  # the deferred work (the Fine-tune widget's training warm-up) runs in a worker now
    print(f"{name}: opened in {opened * 1000:.0f} ms; heartbeat longest gap {beat.max_gap * 1000:.0f} ms")
    if name == "Segment":
        widget.store.preload(widget.model.value).join(60)  # the running preload (started when it opened)
    loaded = [key for key in widget.store.keys() if widget.store.entry(key).model is not None]
    if name == "Fine-tune":
        assert loaded == []
    elif name == "Segment":  # reason: it preloads its chosen model in a worker on purpose (the first Run is quicker)
        assert loaded == [widget.model.value]
    else:
        assert widget.warmed  # its warm-up ran, off the GUI thread (the heartbeat below kept ticking)
    assert beat.max_gap < 0.5


def test_label_volumes_open_as_labels(make_napari_viewer, shared_data):
    from napari.layers import Image, Labels

    viewer = make_napari_viewer()
    folder = shared_data / "totalseg_ct"
    (labels,) = viewer.open(folder / "case01sm_label_synapse8.nii.gz", plugin=PLUGIN)
    (image,) = viewer.open(folder / "case01sm_ct.nii.gz", plugin=PLUGIN)
    assert isinstance(labels, Labels) and isinstance(image, Image)
    assert labels.data.dtype == np.uint8 and labels.data.max() == 8
    np.testing.assert_array_equal(labels.scale, image.scale)
    assert list(labels.features["name"])[:2] == ["background", "class 1"]


def test_ct_sample_opens_on_a_slice_with_organs(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    labels = viewer.layers["CT abdomen reference labels"]
    per_slice = np.count_nonzero(labels.data, axis=(1, 2))
    shown = int(np.round(labels.world_to_data(viewer.dims.point)[0]))
    assert shown == int(np.argmax(per_slice)) and per_slice[shown] > 0
    print(f"CT sample opens on slice {shown} of {labels.data.shape[0]}: {per_slice[shown]} labelled voxels")


def test_offline_sample_error_shows_its_hint(make_napari_viewer, monkeypatch, tmp_path):
    import pooch
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    from braunet import samples
    from braunet.errors import InputError

    def offline(*_args, **_kwargs):
        raise ConnectionError("Max retries exceeded with url: /TotalSegmentator (Failed to resolve 'github.com')")

    monkeypatch.delenv(samples.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(pooch, "os_cache", lambda _name: tmp_path)
    monkeypatch.setattr(pooch, "retrieve", offline)
    viewer = make_napari_viewer(show=True)
    with pytest.raises(InputError) as caught:
        viewer.open_sample(PLUGIN, "ct_abdomen")
    message = str(caught.value)
    assert "download failed" in message  # the details are still there, after the hint
    note = NapariQtNotification(message, "error")
    note.show()
    visible = note.message._elidedText()  # what the collapsed notification shows
    print(f"collapsed notification shows: {visible!r}")
    assert "BRAUNET_DATA_DIR" in visible and "Offline" in visible
    note.close()


def test_an_rgb_image_says_which_model_runs(make_napari_viewer, qtbot, shared_data):
    import tifffile

    from braunet import zoo

    if not {"polyp", "skin-lesion"} <= set(zoo.list_models()):
        pytest.skip("the bundled models are not installed")
    viewer = make_napari_viewer()
    photo = tifffile.imread(shared_data / "cvc_clinicdb" / "images" / "1.tif")[:96, :128]
    viewer.add_image(photo, name="my photo", rgb=True)  # not a sample: nothing says what it shows
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    assert segment.model.value == zoo.default_model("image")
    assert segment.model_hint.value.startswith(f"Runs {segment.model.value}: ")
    assert "Choose skin-lesion" in segment.model_hint.value
    viewer.open_sample(PLUGIN, "dermoscopy")
    segment.image.value = viewer.layers["ISIC_0000198"]
    segment.model.value = "polyp"  # the user's choice stays, but the hint names the sample's own model
    assert "This sample's own model is skin-lesion" in segment.model_hint.value
    segment.image.value = viewer.layers["my photo"]
    job = segment.run()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert segment.status.value.startswith("polyp: my photo")
