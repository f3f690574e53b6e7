"""Segment dock widget: one button from an image layer to a Labels layer with class names and colours.

Thin by design: it gathers the image layer, the model and the options, calls
:func:`braunet.infer.predict` once in a worker (:class:`~braunet.napari._jobs.Job`), and writes the
result into ``"<image> segmentation"`` (plus ``"<image> confidence"`` when asked). Running again
paints the new labels into that layer through ``Labels.data_setitem``, one undo step, instead of
adding layers; a "current slice" or "slice range" run only touches those slices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    RadioButtons,
    SpinBox,
)  # fmt: skip

from braunet.napari._geometry import METADATA_KEY, layer_from_source, layer_volume
from braunet.napari._jobs import Job
from braunet.napari._layers import CLASS_NAMES_KEY, label_colormap, label_features, labels_layer
from braunet.napari._store import ModelStore
from braunet.napari._widget_tools import (
    OVERLAY_KEY,
    connect_while_alive,
    current_slice,
    layer_combo,
    layer_geometry,
    wrap_labels,
)  # fmt: skip

__all__ = ["PREDICTION_KEY", "SegmentWidget", "write_labels_undoably"]

PREDICTION_KEY = "braunet_prediction"  # labels metadata: the last prediction (layer grid), to spot user edits
SOURCE_KEY = "braunet_prediction_of"
_MAX_UNDOABLE_VOXELS = 32_000_000  # beyond this many changed voxels the undo history would cost GBs
SLICE_MODES = ("current slice", "all slices", "slice range")


def write_labels_undoably(layer: Any, new: np.ndarray, slices: list[int] | None) -> int:
    """Write ``new`` (the layer's shape) into a Labels layer as one undoable edit; return voxels changed.

    Only ``slices`` (along axis 0; None = everything) are written, through ``Labels.data_setitem``
    so that Ctrl+Z restores the previous labels. Edits beyond ``_MAX_UNDOABLE_VOXELS`` replace the
    data without history.
    """
    data = layer.data
    if slices is None or data.ndim == 2:
        old_part, new_part, offset = data, new, None
    else:
        index = np.asarray(sorted(slices))
        old_part, new_part, offset = data[index], new[index], index
    changed = np.nonzero(old_part != new_part)
    count = int(changed[0].size)
    if count == 0:
        return 0
    values = new_part[changed]
    if offset is not None:
        changed = (offset[changed[0]],) + changed[1:]
    if count > _MAX_UNDOABLE_VOXELS:
        updated = np.array(data, copy=True)
        updated[changed] = values
        layer.data = updated
    else:
        layer.data_setitem(changed, values)
    return count


class SegmentWidget(Container):
    """Image layer + model + options -> Run / Cancel -> ``"<image> segmentation"`` Labels layer."""

    def __init__(self, napari_viewer: Any) -> None:
        from napari.layers import Image

        from braunet.infer import list_windows
        from braunet.infer.device import DEVICE_CHOICES

        self.viewer = napari_viewer
        self.store = ModelStore.for_viewer(napari_viewer)
        self.image = layer_combo(napari_viewer, Image, "image")
        self.model = ComboBox(label="model", choices=lambda _w: self.store.keys() or [""])
        self.checkpoint = FileEdit(label="add model folder", mode="d",
                                   tooltip="a checkpoint folder: ours or a converted official one")
        self.official = FileEdit(label="add official .pth", mode="r", filter="*.pth *.pt *.ckpt",
                                 tooltip="an official BRAU-Net++ checkpoint: converted once into the model library "
                                         "(~/.braunet/models or $BRAUNET_MODELS_DIR) as official-<file name>@1")
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.window = ComboBox(label="CT window", choices=["(keep)", *list_windows()], value="(keep)",
                               tooltip="display contrast of the image (the model uses its own HU range)")
        self.slice_mode = RadioButtons(label="slices", choices=SLICE_MODES, value="all slices",
                                       orientation="horizontal")
        self.first = SpinBox(label="from slice", min=0, max=100_000, value=0)
        self.last = SpinBox(label="to slice", min=0, max=100_000, value=0)
        self.batch_size = SpinBox(label="batch size", min=1, max=256, value=8)
        self.confidence = CheckBox(label="confidence layer", value=False)
        self.cleanup = CheckBox(label="3-D clean-up", value=False,
                                tooltip="volumes: drop small stray pieces of each organ and fill enclosed holes")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        super().__init__(widgets=[
            self.image, self.model, self.checkpoint, self.official, self.device, self.window, self.slice_mode,
            self.first, self.last, self.batch_size, self.confidence, self.cleanup,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
            self.progress, self.status,
        ])  # fmt: skip
        self.job: Job | None = None
        self.last_output: Any = None
        wrap_labels(self.status)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.checkpoint.changed.connect(self._add_checkpoint)
        self.official.changed.connect(self._add_official)
        self.model.changed.connect(self._model_chosen)
        self.window.changed.connect(self._apply_window)
        self.image.changed.connect(self._image_chosen)
        self.slice_mode.changed.connect(self._update_range_enabled)
        connect_while_alive(self.native, self.store.changed, self._store_changed)
        self._store_changed()
        self._image_chosen()
        self._update_range_enabled()

    # -- options -------------------------------------------------------------------------------
    def _store_changed(self) -> None:
        self.model.reset_choices()
        if self.store.current and self.model.value != self.store.current:
            self.model.value = self.store.current
        self._model_tooltip()

    def _model_chosen(self, key: str | None = None) -> None:
        if key and key in self.store.keys() and key != self.store.current:
            self.store.select(key)
        self._model_tooltip()

    def _model_tooltip(self) -> None:
        """The model chooser's tooltip: what the current model was trained on, in red when few cases."""
        from braunet.cli.models import model_tooltip

        key = self.store.current
        entry = self.store.entry(key) if key else None
        card = None if entry is None else entry.card if entry.card is not None else entry.source.card
        self.model.tooltip = model_tooltip(card) if card is not None else None

    def _add_checkpoint(self, path: Any = None) -> None:
        from braunet.errors import CheckpointError

        folder = str(self.checkpoint.value)
        if not folder or folder == ".":
            return
        try:  # the card is read now: a bad folder is refused with one line
            self.store.add_source(self.checkpoint.value, select=True)
        except CheckpointError as error:
            self.status.value = str(error)

    def _add_official(self, path: Any = None) -> str | None:
        """Convert the chosen official ``.pth`` into the model library and make it the model; return its key.

        The conversion runs on the GUI thread (a few seconds for the largest official checkpoint).
        """
        from braunet.errors import BraunetError

        text = str(self.official.value)
        if not text or text == ".":
            return None
        self.status.value = f"Converting {self.official.value.name}..."
        try:
            key = self.store.add_official(self.official.value)
        except BraunetError as error:
            self.status.value = str(error)
            return None
        self.status.value = f"{key}: converted into {self.store.entry(key).source.folder}"
        return key

    def _image_chosen(self, layer: Any = None) -> None:
        layer = self.image.value
        if layer is None:
            return
        three_d = not getattr(layer, "rgb", False) and layer.ndim >= 3
        self._match_model(layer, "ct" if three_d else "rgb")
        self.window.enabled = three_d
        self.slice_mode.enabled = three_d
        self.batch_size.enabled = three_d
        if three_d:
            depth = layer.data.shape[0]
            self.first.max = self.last.max = depth - 1
            self.last.value = depth - 1
        self._update_range_enabled()

    def _match_model(self, layer: Any, kind: str) -> None:
        """If the current model segments the other kind of image, pick a bundled one that fits."""
        from braunet.zoo import default_model

        current = self.store.current
        if current is None or self.store.kind(current) in (kind, None):
            return
        sample = (layer.metadata.get("braunet_sample") or {}).get("key")
        input_kind = "volume" if kind == "ct" else "image"
        for name in (default_model(input_kind, sample), default_model(input_kind)):
            if name in self.store.keys() and self.store.kind(name) == kind:
                self.store.select(name)
                return

    def _update_range_enabled(self, value: Any = None) -> None:
        ranged = self.slice_mode.enabled and self.slice_mode.value == "slice range"
        self.first.enabled = self.last.enabled = ranged

    def _apply_window(self, name: str | None = None) -> None:
        from braunet.infer import get_window

        layer = self.image.value
        if layer is None or not self.window.value or self.window.value == "(keep)":
            return
        layer.contrast_limits = get_window(self.window.value).limits

    def slices_to_run(self) -> list[int] | None:
        """Axial slices (layer axis 0 = canonical axial index) the next run segments; None = all."""
        layer = self.image.value
        if layer is None or not self.slice_mode.enabled or self.slice_mode.value == "all slices":
            return None
        if self.slice_mode.value == "current slice":
            return [current_slice(self.viewer, layer)]
        low, high = sorted((int(self.first.value), int(self.last.value)))
        return list(range(low, high + 1))

    # -- run -----------------------------------------------------------------------------------
    def run(self, value: Any = None) -> Job | None:
        """Start segmenting the chosen image; returns the running Job (None if nothing to do)."""
        from braunet.infer import predict

        layer = self.image.value
        key = self.model.value or self.store.current
        if layer is None or not key:
            self.status.value = "Choose an image layer and a model first."
            return None
        if self.job is not None and self.job.running:
            return self.job
        try:
            geometry = layer_geometry(layer)
        except ValueError as error:  # e.g. a 4-D or multichannel layer
            self.status.value = f"{layer.name}: {error}"
            return None
        data = layer.data
        slices = self.slices_to_run()
        device, batch_size, confidence = self.device.value, int(self.batch_size.value), bool(self.confidence.value)
        cleanup = bool(self.cleanup.value)
        store = self.store

        def work(progress, should_stop):
            model, card = store.load(key, device)
            volume = layer_volume(np.asarray(data), geometry)
            prediction = predict(model, card, volume, slices=slices, batch_size=batch_size, device=device,
                                 confidence=confidence, progress=progress, should_stop=should_stop)  # fmt: skip
            source_labels = prediction.labels
            if cleanup and source_labels.ndim == 3:
                from braunet.cleanup import clean_labels

                source_labels = clean_labels(source_labels)
            labels = layer_from_source(source_labels, geometry)
            conf = None if prediction.confidence is None else layer_from_source(prediction.confidence, geometry)
            return labels, conf, card

        job = Job(work, f"Segmenting {layer.name}", parent=self.native)
        job.progressed.connect(self._on_progress)
        job.done.connect(lambda result: self._write_result(layer, geometry, slices, key, *result))
        job.cancelled.connect(lambda: self._set_status("Cancelled: nothing was written."))
        job.failed.connect(self._set_status)
        job.finished.connect(self._finished)
        self.job = job
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress.value = 0
        self.status.value = f"Running {key} on {layer.name}..."
        return job.start()

    def cancel(self, value: Any = None) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.value = "Cancelling..."

    def _on_progress(self, args: tuple) -> None:
        done, total = args[0], args[1]
        self.progress.max = max(int(total), 1)
        self.progress.value = int(done)

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _write_result(self, image: Any, geometry: Any, slices: list[int] | None, key: str, labels: np.ndarray,
                      conf: np.ndarray | None, card: Any) -> None:  # fmt: skip
        """GUI thread: put the prediction into the segmentation layer (created on the first run)."""
        names = list(card.class_names)
        name = f"{image.name} segmentation"
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is not None and layer.data.shape != labels.shape:
            layer = None
            name = f"{image.name} segmentation ({key})"
        if layer is None:  # slices that were not run are 0, as predict returns them
            data, kwargs, _ = labels_layer(labels, geometry, names, name, card.class_colors)
            layer = self.viewer.add_labels(data, **kwargs)
            changed, verb = int(np.count_nonzero(data)), "labelled"
        else:
            if layer.metadata.get(CLASS_NAMES_KEY) != names:
                layer.colormap = label_colormap(names, card.class_colors)
                layer.features = label_features(names)
                layer.metadata[CLASS_NAMES_KEY] = names
            changed, verb = write_labels_undoably(layer, labels, slices), "changed"
        layer.metadata[METADATA_KEY] = geometry
        layer.metadata[PREDICTION_KEY] = np.array(layer.data, copy=True)
        layer.metadata[SOURCE_KEY] = {"image": image.name, "model": key}
        if conf is not None:
            self._write_confidence(image, geometry, slices, conf)
        self.last_output = layer
        if labels.ndim == 2:
            where = image.name
        elif slices is None:
            where = f"all slices of {image.name}"
        else:
            where = f"slice {slices[0]}" if len(slices) == 1 else f"slices {slices[0]}-{slices[-1]}"
            where += f" of {image.name}"
        self.status.value = f"{key}: {where}, {changed} {'pixels' if labels.ndim == 2 else 'voxels'} {verb}."

    def _write_confidence(self, image: Any, geometry: Any, slices: list[int] | None, conf: np.ndarray) -> None:
        name = f"{image.name} confidence"
        conf = np.asarray(conf, dtype=np.float32)
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == conf.shape:
            layer = self.viewer.layers[name]
            if slices is None:
                layer.data = conf
            else:
                updated = np.array(layer.data, copy=True)
                updated[slices] = conf[slices]
                layer.data = updated
            return
        self.viewer.add_image(conf, name=name, colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.5,
                              blending="additive", scale=geometry.scale, translate=geometry.translate,
                              axis_labels=geometry.axis_labels,
                              metadata={METADATA_KEY: geometry, OVERLAY_KEY: True})  # fmt: skip
