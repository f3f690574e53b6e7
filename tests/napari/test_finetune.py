"""Fine-tune widget: edited-slice tracking, train / Accept / Rollback / Save, cancel, responsiveness."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import torch

from braunet.cli import main
from braunet.model import read_card
from braunet.zoo import load_model

PLUGIN = "napari-braunet"


def _segmented_viewer(make_napari_viewer, qtbot, model: str, first: int, last: int):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    if model in segment.store.keys():
        segment.model.value = model
    else:
        segment.checkpoint.value = model
    segment.slice_mode.value = "slice range"
    segment.first.value, segment.last.value = first, last
    job = segment.run()
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    _, finetune = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    finetune.corrected.value = viewer.layers["CT abdomen segmentation"]
    return viewer, segment, finetune


def _correct(layer, reference, slices):
    """Paint the reference labels into ``slices`` of the prediction, as an annotator would (undoable)."""
    for k in slices:
        wrong = np.nonzero(layer.data[k] != reference.data[k])
        layer.data_setitem((np.full(wrong[0].size, k),) + wrong, reference.data[k][wrong])


def test_edited_slices_follow_paint_undo_and_new_predictions(make_napari_viewer, qtbot, tiny_ct_checkpoint):
    viewer, segment, finetune = _segmented_viewer(make_napari_viewer, qtbot, str(tiny_ct_checkpoint), 60, 69)
    labels = viewer.layers["CT abdomen segmentation"]
    assert finetune.refresh_edits() == []
    viewer.dims.set_point(0, labels.data_to_world((62, 0, 0))[0])
    labels.brush_size = 5
    labels.paint((62, 50, 60), 5, refresh=True)  # a brush dab (data coordinates), napari's own tool
    qtbot.waitUntil(lambda: finetune.slices.value == [62], timeout=3_000)
    _correct(labels, viewer.layers["CT abdomen reference labels"], [65])
    qtbot.waitUntil(lambda: finetune.slices.value == [62, 65], timeout=3_000)
    finetune.slices.value = [65]  # the user leaves slice 62 out; a new edit is still picked up
    _correct(labels, viewer.layers["CT abdomen reference labels"], [67])
    qtbot.waitUntil(lambda: finetune.refresh_edits() == [62, 65, 67], timeout=3_000)
    assert finetune.slices.value == [65, 67]
    labels.undo()
    qtbot.waitUntil(lambda: finetune.refresh_edits() == [62, 65], timeout=3_000)
    finetune.slices.value = [62, 65]
    labels.undo()
    qtbot.waitUntil(lambda: finetune.slices.value == [62], timeout=3_000)
    # A new prediction of slice 62, asked to overwrite corrections, replaces the edit: nothing is left to learn from.
    segment.slice_mode.value = "current slice"
    segment.overwrite.value = True
    job = segment.run()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    qtbot.waitUntil(lambda: finetune.slices.value == [], timeout=3_000)
    assert finetune.train() is None and "No edited slices" in finetune.status.value


def test_finetune_accept_rollback_save(make_napari_viewer, qtbot, tmp_path, bundled_ct_model, heartbeat, monkeypatch,
                                      capsys, shared_data):
    monkeypatch.setenv("BRAUNET_MODELS_DIR", str(tmp_path / "versions"))  # the model library
    viewer, segment, finetune = _segmented_viewer(make_napari_viewer, qtbot, bundled_ct_model, 84, 108)
    corrected = [100]  # one slice of the upper abdomen: a quarter of its blocks is held back
    _correct(viewer.layers["CT abdomen segmentation"], viewer.layers["CT abdomen reference labels"], corrected)
    qtbot.waitUntil(lambda: finetune.slices.value == corrected, timeout=3_000)
    parent_key = segment.model.value
    parent_weights = {k: v.clone() for k, v in segment.store.load(parent_key)[0].state_dict().items()}
    finetune.time_budget.value = 600.0  # a fixed number of steps: the same round on any machine
    finetune.max_steps.value = 6
    finetune.mode.value = "decoder"
    finetune.device.value = "cpu"  # the reproducible round was measured on a CPU
    with heartbeat() as beat:
        job = finetune.train()
        qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    print(f"fine-tune: {finetune.status.value}; heartbeat longest gap {beat.max_gap * 1000:.0f} ms")
    assert beat.max_gap < 0.5
    result = finetune.result
    assert result is not None and len(finetune.loss_curve.values) == len(result.losses) >= 1
    assert result.accepted, result.message
    assert result.details["n_anchors"] >= 1  # the bundled model's anchor set, from its folder
    assert result.dice_after > result.dice_before
    assert f"{result.dice_before:.3f} → {result.dice_after:.3f}" in finetune.dice.value
    assert "of slice 100, by blocks" in finetune.dice.value and result.details["heldout"] == "blocks"

    # Accept: the new version becomes the Segment widget's model.
    new_key = finetune.accept()
    assert finetune.model.value == new_key and segment.model.value == new_key
    new_model, new_card = segment.store.load(new_key)
    assert new_card.version == 2 and new_card.parent == "ct-abdomen-8@1"
    assert any(not torch.equal(new_model.state_dict()[k], v) for k, v in parent_weights.items())

    # Save writes the version folder; it loads back to the same weights.
    folder = finetune.save(tmp_path / "versions")
    assert folder == tmp_path / "versions" / "ct-abdomen-8" / "v2"
    assert read_card(folder).parent == "ct-abdomen-8@1"
    saved, _ = load_model(folder)
    for key, value in new_model.state_dict().items():
        assert torch.equal(saved.state_dict()[key], value.cpu()), key
    assert (folder / "anchors.npz").is_file()

    # The saved version is a command-line model: --model ct-abdomen-8@2, listed by braunet models.
    assert finetune.versions_root.value == tmp_path / "versions"
    ct = nib.load(shared_data / "totalseg_ct" / "case01sm_ct.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(ct.dataobj)[:, :, 12:14], ct.affine, ct.header), tmp_path / "crop.nii.gz")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "crop.nii.gz"), "-o", str(tmp_path / "labels.nii.gz"),
                 "--model", "ct-abdomen-8@2", "--device", "cpu"]) == 0
    assert "(ct-abdomen-8)" in capsys.readouterr().out and nib.load(tmp_path / "labels.nii.gz").shape[2] == 2
    assert main(["models"]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ct-abdomen-8@2"))
    assert listed.split()[1] == "ct-abdomen-8@1" and f"{result.dice_before:.3f} -> {result.dice_after:.3f}" in listed

    # Rollback: back to the parent, whose weights are exactly the bundled ones.
    assert finetune.rollback() == parent_key
    assert segment.model.value == parent_key
    restored = segment.store.load(parent_key)[0].state_dict()
    bundled = load_model(bundled_ct_model)[0].state_dict()
    for key, value in parent_weights.items():
        assert torch.equal(restored[key].cpu(), value.cpu()) and torch.equal(bundled[key], value.cpu()), key


def test_finetune_cancel_keeps_the_model(make_napari_viewer, qtbot, tiny_ct_checkpoint, heartbeat):
    viewer, segment, finetune = _segmented_viewer(make_napari_viewer, qtbot, str(tiny_ct_checkpoint), 80, 89)
    _correct(viewer.layers["CT abdomen segmentation"], viewer.layers["CT abdomen reference labels"], [81, 83, 85])
    qtbot.waitUntil(lambda: finetune.slices.value == [81, 83, 85], timeout=3_000)
    before = len(segment.store.keys())
    finetune.time_budget.value = 120.0
    with heartbeat() as beat:
        job = finetune.train()
        qtbot.waitUntil(lambda: len(finetune.loss_curve.values) >= 2, timeout=60_000)
        finetune.cancel_button.clicked.emit()
        asked = time.perf_counter()
        qtbot.waitUntil(lambda: not job.running, timeout=2_000)
    stopped = time.perf_counter() - asked
    print(f"fine-tune stopped {stopped:.2f} s after Cancel; heartbeat gap {beat.max_gap * 1000:.0f} ms")
    assert beat.max_gap < 0.5
    assert finetune.status.value.startswith("Cancelled") and finetune.result is None
    assert not finetune.accept_button.enabled and finetune.accept() is None
    assert len(segment.store.keys()) == before


def test_edited_slices_among_some_slices_agrees_with_all(shared_data):
    """The Segment widget asks only about the slices it runs (one slice, not the volume, per click)."""
    from braunet.io import read_image
    from braunet.napari._layers import EditRecord

    labels = read_image(shared_data / "totalseg_ct/case01sm_label_synapse8.nii.gz").array.astype(np.uint8)
    record = EditRecord(labels)
    edited = labels.copy()
    edited[3, 40:60, 5] += 1  # corrections on axis-0 slices 3 and 90
    edited[90, 10, :] = 9
    assert record.edited_slices(edited) == [3, 90]
    assert record.edited_slices(edited, among=[90, 5, 3, 3]) == [3, 90]
    assert record.edited_slices(edited, among=[4, 89]) == []
    assert record.edited_slices(edited, among=[]) == []
    assert record.edited_slices(labels, among=[3]) == []
