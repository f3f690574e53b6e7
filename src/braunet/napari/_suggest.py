"""Suggested slices: which slices to correct next, listed in the Fine-tune widget.

Suggest ranks the image layer's axial slices by the current model's uncertainty
(:func:`braunet.infer.uncertainty.suggest_slices`, in a worker thread) and lists the top ones with
their scores and predicted classes; clicking a row moves the viewer to that slice. The layer's
slices are the radiological display view (:mod:`braunet.napari._geometry`); each goes to the
network in the model's own view (``card.recipe.view``), and a row's index is the layer's first
axis, the one the dims slider moves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, Select, SpinBox

from braunet.infer.views import convert_view
from braunet.napari._geometry import view_pixel_mm
from braunet.napari._jobs import Job
from braunet.napari._store import ModelStore
from braunet.napari._widget_tools import wrap_labels

__all__ = ["SuggestWidget"]


class SuggestWidget(Container):
    """Suggest [n] [spacing] -> a ranked list of slices; a click jumps there.

    Args:
        napari_viewer: the viewer whose dims a click moves.
        store: the viewer's model store.
        model: the combo box holding the model to rank with (the Fine-tune widget's own choice).
        image: the combo box holding the image layer to rank (the Fine-tune widget's).
        device: the combo box holding the device ("auto", "cpu", ...).
    """

    def __init__(
        self, napari_viewer: Any, store: ModelStore, image: ComboBox, device: ComboBox, model: ComboBox
    ) -> None:
        self.viewer = napari_viewer
        self.store = store
        self.model = model
        self.image = image
        self.device = device
        self.job: Job | None = None
        self.found: Any = None  # the last ranking (braunet.infer.uncertainty.Suggestions)
        self.suggested: list[int] = []  # the listed slices, best first
        self._layer: Any = None  # the layer the list was computed on
        self.suggest_button = PushButton(text="Suggest", tooltip="rank the slices by the model's uncertainty")
        self.count = SpinBox(label="top", min=1, max=50, value=5, tooltip="how many slices to list")
        self.spacing = SpinBox(label="spacing", min=1, max=100, value=5,
                               tooltip="no two suggested slices closer than this")  # fmt: skip
        self.results = Select(label="suggested slices", choices=[], allow_multiple=False)
        self.status = Label(value="")
        controls = Container(widgets=[self.suggest_button, self.count, self.spacing], layout="horizontal")
        super().__init__(widgets=[controls, self.results, self.status], labels=False)
        self.results.native.setMaximumHeight(110)
        self.results.native.itemClicked.connect(self._item_clicked)
        self.results.native.itemActivated.connect(self._item_clicked)
        wrap_labels(self.status)
        self.suggest_button.changed.connect(self.suggest)

    def suggest(self, value: Any = None) -> Job | None:
        """Rank the image layer's slices with the current model in a worker; returns the running Job."""
        from braunet.infer.uncertainty import suggest_slices

        if self.job is not None and self.job.running:
            return self.job
        layer, key = self.image.value, self.model.value
        if layer is None or not key:
            self.status.value = "Choose an image layer and a model first."
            return None
        data = np.asarray(layer.data)
        three_d = not layer.rgb and data.ndim == 3
        if not three_d and data.ndim - (1 if layer.rgb else 0) != 2:
            self.status.value = f"{layer.name}: expected a 2-D image or a 3-D volume, got shape {data.shape}"
            return None
        store, device = self.store, self.device.value
        n, spacing = int(self.count.value), int(self.spacing.value)
        scale = tuple(layer.scale)

        def work(progress, should_stop):
            model, card = store.load(key, device)
            # reason: a view, not a copy; suggest_slices copies one batch of slices at a time
            slices = convert_view(data, "radiological", card.recipe.view) if three_d else [data]
            return suggest_slices(model, card, slices, n=n, spacing=spacing if three_d else 1, device=device,
                                  progress=progress, should_stop=should_stop,
                                  pixel_mm=view_pixel_mm(scale, card.recipe.view))  # fmt: skip

        job = Job(work, f"Ranking the slices of {layer.name}", parent=self.native)
        job.done.connect(lambda found: self._show(found, layer, key))
        job.cancelled.connect(lambda: setattr(self.status, "value", "Cancelled."))
        job.failed.connect(lambda text: setattr(self.status, "value", text))
        job.finished.connect(lambda: setattr(self.suggest_button, "enabled", True))
        self.job = job
        self.suggest_button.enabled = False
        self.status.value = f"Ranking {data.shape[0] if three_d else 1} slices with {key}..."
        return job.start()

    def _show(self, found: Any, layer: Any, key: str) -> None:
        three_d = not layer.rgb and layer.ndim == 3
        self._layer, self.found = layer, found
        self.suggested = list(found.indices)
        choices = []
        for row in found.rows():
            where = f"slice {row['slice']}" if three_d else "image"
            choices.append((f"{where}  {row['score']:.3f}  {', '.join(row['classes'])}", row["slice"]))
        self.results.choices = choices
        total = len(found.scores)
        if not choices:
            self.status.value = f"{key} predicts nothing on {layer.name}: no slice to suggest."
        else:
            self.status.value = f"{len(choices)} of {total} slices, most uncertain first ({key}); click one to go there."

    def _item_clicked(self, item: Any) -> None:
        row = self.results.native.row(item)
        if 0 <= row < len(self.suggested):
            self.go_to(self.suggested[row])

    def go_to(self, index: int) -> None:
        """Move the viewer to slice ``index`` of the ranked layer (its first axis; nothing for a 2-D image)."""
        layer = self._layer
        if layer is None or layer.rgb or layer.ndim != 3:
            return
        world = layer.data_to_world((index, 0, 0))
        self.viewer.dims.set_point(self.viewer.dims.ndim - layer.ndim, world[0])
