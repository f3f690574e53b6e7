"""Suggested slices in the Fine-tune widget: ranked off the GUI thread, in the model's view; a click jumps there."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt

from braunet.infer import convert_view
from braunet.infer.uncertainty import suggest_slices
from braunet.napari._widget_tools import current_slice
from braunet.zoo import load_model

PLUGIN = "napari-braunet"


def _finetune_dock(make_napari_viewer, sample: str, model: str):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, sample)
    _, finetune = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    key = model if model in finetune.store.keys() else finetune.store.add_source(model)
    finetune.model.value = key  # this widget's own choice
    return viewer, finetune


def _click_row(qtbot, panel, row: int) -> None:
    listing = panel.results.native
    qtbot.mouseClick(listing.viewport(), Qt.LeftButton, pos=listing.visualItemRect(listing.item(row)).center())


def test_suggested_slices_are_ranked_and_a_click_moves_the_viewer(make_napari_viewer, qtbot, bundled_ct_model,
                                                                  heartbeat):  # fmt: skip
    viewer, finetune = _finetune_dock(make_napari_viewer, "ct_abdomen", bundled_ct_model)
    panel = finetune.suggestions
    section = finetune.suggest_section  # folded beside the training options, under the edited slices
    assert section.isAncestorOf(panel.native)
    section.expand(animate=False)
    image = viewer.layers["CT abdomen"]
    panel.count.value, panel.spacing.value = 4, 6
    with heartbeat() as beat:
        qtbot.mouseClick(panel.suggest_button.native, Qt.LeftButton)
        assert panel.job is not None and not panel.suggest_button.enabled
        qtbot.waitUntil(lambda: not panel.job.running and panel.suggest_button.enabled, timeout=180_000)
    print(f"suggest: {panel.status.value}; heartbeat longest gap {beat.max_gap * 1000:.0f} ms")
    assert beat.max_gap < 0.5 and panel.suggest_button.enabled
    found = panel.found
    assert found.scores.shape == (image.data.shape[0],) and len(panel.suggested) == 4
    assert panel.suggested[0] == int(np.argmax(found.scores))
    assert all(abs(a - b) >= 6 for a in panel.suggested for b in panel.suggested if a != b)
    listing = panel.results.native
    texts = [listing.item(row).text() for row in range(listing.count())]
    assert [int(t.split()[1]) for t in texts] == panel.suggested
    shown = [float(t.split()[2]) for t in texts]
    assert shown == sorted(shown, reverse=True)
    # The listed scores are the library's on those slices, taken in the model's view.
    model, card = load_model(bundled_ct_model)
    chosen = convert_view(np.asarray(image.data)[panel.suggested], "radiological", card.recipe.view)
    rows_mm, cols_mm = (float(v) for v in image.scale[-2:])  # the widget passes the layer's pixel size in the view
    pixel_mm = (rows_mm, cols_mm) if card.recipe.view == "radiological" else (cols_mm, rows_mm)
    np.testing.assert_allclose(shown, suggest_slices(model, card, chosen, pixel_mm=pixel_mm).scores, atol=5e-4)
    for row in (2, 0):
        _click_row(qtbot, panel, row)
        assert current_slice(viewer, image) == panel.suggested[row]
        assert viewer.dims.current_step[0] == panel.suggested[row]


def test_a_2d_image_lists_itself_and_no_image_says_so(make_napari_viewer, qtbot, tiny_rgb_checkpoint):
    viewer, finetune = _finetune_dock(make_napari_viewer, "colonoscopy", str(tiny_rgb_checkpoint))
    panel = finetune.suggestions
    job = panel.suggest()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert panel.found.scores.shape == (1,)
    assert all(panel.results.native.item(r).text().startswith("image ") for r in range(panel.results.native.count()))
    step = viewer.dims.current_step
    if panel.results.native.count():
        _click_row(qtbot, panel, 0)
    assert viewer.dims.current_step == step  # nothing to move to
    viewer.layers.clear()
    assert panel.suggest() is None and "Choose an image layer" in panel.status.value

