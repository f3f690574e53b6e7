"""Segment dock widget: one button from an image layer to a Labels layer with class names and colours.

Thin by design: it gathers the image layer, the model and the options, calls
:func:`braunet.infer.predict` once in a worker (:class:`~braunet.napari._jobs.Job`), and writes the
result into ``"<image> segmentation"`` (plus ``"<image> confidence"`` when asked). Running again
paints the new labels into that layer through ``Labels.data_setitem``, one undo step, instead of
adding layers; a "current slice" or "slice range" run only touches those slices, and slices the
user corrected (the layer's :class:`~braunet.napari._layers.EditRecord`) are kept unless
"overwrite corrected slices" is ticked. The widget keeps its own model choice (other widgets'
choices never change it) and says, under the model list and in the status line, which model runs.
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

from braunet.io.colour_tables import resolve_colours
from braunet.napari._geometry import METADATA_KEY, layer_from_source, layer_volume
from braunet.napari._jobs import Job
from braunet.napari._layers import (
    CLASS_COLOURS_KEY,
    CLASS_NAMES_KEY,
    EDITS_KEY,
    MODEL_KEY,
    EditRecord,
    label_colormap,
    label_features,
    labels_layer,
)
from braunet.napari._store import ModelStore
from braunet.napari._widget_tools import (
    OVERLAY_KEY,
    collapsible,
    compact,
    current_slice,
    layer_combo,
    layer_geometry,
    model_combo,
    wrap_labels,
)  # fmt: skip

__all__ = ["SegmentWidget", "write_labels_undoably"]
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
        from braunet.infer.device import DEVICE_CHOICES, PRECISION_CHOICES

        self.viewer = napari_viewer
        self.store = ModelStore.for_viewer(napari_viewer)
        self.image = layer_combo(napari_viewer, Image, "image")
        self.model = model_combo(self.store)
        self.model_hint = Label(value="")
        self.checkpoint = FileEdit(label="add model folder", mode="d",
                                   tooltip="a checkpoint folder: ours or a converted official one")
        self.official = FileEdit(label="add official .pth", mode="r", filter="*.pth *.pt *.ckpt",
                                 tooltip="an official BRAU-Net++ checkpoint: converted once into the model library "
                                         "(~/.braunet/models or $BRAUNET_MODELS_DIR) as official-<file name>@1")
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.precision = ComboBox(label="precision", choices=list(PRECISION_CHOICES), value="auto",
                                  tooltip="auto: bf16 where the hardware runs it natively and the model's card "
                                          "records it validated, else fp32")  # fmt: skip
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
        self.overwrite = CheckBox(label="overwrite corrected slices", value=False,
                                  tooltip="off: slices you corrected keep your labels when Segment runs again")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        super().__init__(widgets=[
            self.image, self.model, self.model_hint, self.slice_mode,
            Container(widgets=[self.first, self.last], layout="horizontal", labels=True), self.overwrite,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
            self.progress, self.status,
        ])  # fmt: skip
        # Rarely changed options fold away: the three docks must fit a 1000 px tall window.
        self.more_options = collapsible("More options", self.checkpoint, self.official, self.device, self.precision,
                                        self.window, self.batch_size, self.confidence, self.cleanup)  # fmt: skip
        self.native.layout().insertWidget(3, self.more_options)
        compact(self)
        self.job: Job | None = None
        self.last_output: Any = None
        wrap_labels(self.status, self.model_hint)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.checkpoint.changed.connect(self._add_checkpoint)
        self.official.changed.connect(self._add_official)
        self.model.changed.connect(self._update_hint)
        self.model.changed.connect(self._preload)
        self.window.changed.connect(self._apply_window)
        self.image.changed.connect(self._image_chosen)
        self.slice_mode.changed.connect(self._update_range_enabled)
        self._image_chosen()
        self._update_hint()
        self._update_range_enabled()
        self._preload()

    # -- options -------------------------------------------------------------------------------
    def _preload(self, value: Any = None) -> None:
        """Load the chosen model in the background: the first Run then costs a forward pass, not a load."""
        self.store.preload(self.model.value, self.device.value)

    def _choose(self, key: str) -> None:
        """Make ``key`` this widget's model (only this widget's)."""
        self.model.reset_choices()
        self.model.value = key

    def _add_checkpoint(self, path: Any = None) -> None:
        from braunet.errors import CheckpointError

        folder = str(self.checkpoint.value)
        if not folder or folder == ".":
            return
        try:  # the card is read now: a bad folder is refused with one line
            self._choose(self.store.add_source(self.checkpoint.value))
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
        self._choose(key)
        self.status.value = f"{key}: converted into {self.store.entry(key).source.folder}"
        return key

    def _image_chosen(self, layer: Any = None) -> None:
        layer = self.image.value
        if layer is None:
            return
        three_d = not getattr(layer, "rgb", False) and layer.ndim >= 3
        self._match_model(layer, "ct" if three_d else "rgb")
        self._update_hint()
        self.window.enabled = three_d
        self.slice_mode.enabled = three_d
        self.batch_size.enabled = three_d
        if three_d:
            depth = layer.data.shape[0]
            self.first.max = self.last.max = depth - 1
            self.last.value = depth - 1
        self._update_range_enabled()

    def _match_model(self, layer: Any, kind: str) -> None:
        """If this widget's model segments the other kind of image (CT or RGB), switch to the
        image's sample model (:func:`braunet.zoo.default_model`), else the bundled default of that kind."""
        from braunet.zoo import default_model

        current = self.model.value
        if current and current in self.store.keys() and self.store.kind(current) in (kind, None):
            return
        sample = (layer.metadata.get("braunet_sample") or {}).get("key")
        input_kind = "volume" if kind == "ct" else "image"
        for name in (default_model(input_kind, sample), default_model(input_kind)):
            if name in self.store.keys() and self.store.kind(name) == kind:
                self._choose(name)
                return

    def _update_hint(self, value: Any = None) -> None:
        """Under the model list: what the model segments and, for a 2-D image, which other model
        fits better (a sample's own model) or exists (a polyp model on a skin photograph is wrong
        without any error)."""
        from braunet.cli.models import model_tooltip
        from braunet.zoo import default_model

        key, layer = self.model.value, self.image.value
        if not key or key not in self.store.keys():
            self.model_hint.value = ""
            self.model.tooltip = None
            return
        entry = self.store.entry(key)
        card = entry.card if entry.card is not None else entry.source.card
        self.model.tooltip = model_tooltip(card)  # what the model was trained on, in red when few cases
        text = f"Runs {key}: {self.store.describe(key)}."
        if layer is not None and (getattr(layer, "rgb", False) or layer.ndim == 2):
            sample = (layer.metadata.get("braunet_sample") or {}).get("key")
            own = default_model("image", sample) if sample else None
            if own and own != key and own in self.store.keys():
                text += f" This sample's own model is {own}."
            elif not sample:
                others = [k for k in self.store.keys() if k != key and self.store.kind(k) == "rgb"
                          and self.store.entry(k).parent is None and "[" not in k]  # fmt: skip
                if others:
                    text += f" Another kind of image? Choose {' or '.join(others[:2])}."
        self.model_hint.value = text

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
        key = self.model.value
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
        cleanup, precision = bool(self.cleanup.value), str(self.precision.value)
        overwrite = bool(self.overwrite.value)
        store = self.store

        def work(progress, should_stop):
            model, card = store.load(key, device)
            volume = layer_volume(np.asarray(data), geometry, copy=False)  # the engine copies what it reads
            prediction = predict(model, card, volume, slices=slices, batch_size=batch_size, device=device,
                                 precision=precision, confidence=confidence, progress=progress,
                                 should_stop=should_stop)  # fmt: skip
            source_labels = prediction.labels
            if cleanup and source_labels.ndim == 3:
                from braunet.cleanup import clean_labels

                source_labels = clean_labels(source_labels)
            # Slices not run are 0 in the prediction: only the run ones are reordered onto the layer grid.
            labels = layer_from_source(source_labels, geometry, slices=None if cleanup else slices)
            conf = None if prediction.confidence is None else layer_from_source(prediction.confidence, geometry,
                                                                                slices=slices)  # fmt: skip
            return labels, conf, card, prediction.precision

        job = Job(work, f"Segmenting {layer.name}", parent=self.native)
        job.progressed.connect(self._on_progress)
        job.done.connect(lambda result: self._write_result(layer, geometry, slices, key, *result, overwrite=overwrite))
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
                      conf: np.ndarray | None, card: Any, precision: str = "fp32", *,
                      overwrite: bool = False) -> None:  # fmt: skip
        """GUI thread: put the prediction into the segmentation layer (created on the first run).

        Slices the user corrected are left as they are unless ``overwrite``; the status line says
        how many were kept, and the precision the network ran in when it was not the default fp32.
        """
        names = list(card.class_names)
        name = f"{image.name} segmentation"
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is not None and layer.data.shape != labels.shape:
            layer = None
            name = f"{image.name} segmentation ({key})"
        kept: list[int] = []
        if layer is None:  # slices that were not run are 0, as predict returns them
            data, kwargs, _ = labels_layer(labels, geometry, names, name, card.class_colors)
            kwargs["metadata"][EDITS_KEY] = EditRecord(data, model=key, image=image.name)  # before the layer shows
            layer = self.viewer.add_labels(data, **kwargs)
            changed, verb = int(np.count_nonzero(data)), "labelled"
            written = slices
        else:
            if layer.metadata.get(CLASS_NAMES_KEY) != names:
                layer.colormap = label_colormap(names, card.class_colors)
                layer.features = label_features(names)
                layer.metadata[CLASS_NAMES_KEY] = names
                layer.metadata[CLASS_COLOURS_KEY] = resolve_colours(names, card.class_colors)
            run = list(range(labels.shape[0])) if slices is None and labels.ndim > 2 else slices
            written = run
            if not overwrite:
                corrected = set(EditRecord.of(layer).edited_slices(layer.data, among=slices))
                if labels.ndim == 2:
                    kept = [0] if corrected else []
                    written = [] if corrected else None
                else:
                    kept = [k for k in run if k in corrected]
                    written = [k for k in run if k not in corrected]
            changed = write_labels_undoably(layer, labels, written) if written != [] else 0
            verb = "changed"
        layer.metadata[METADATA_KEY] = geometry
        layer.metadata[MODEL_KEY] = {"name": card.name, "version": card.version}  # what a DICOM SEG names
        EditRecord.of(layer).model_wrote(layer.data, written, key, image.name)
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
        text = f"{key}: {where}, {changed} {'pixels' if labels.ndim == 2 else 'voxels'} {verb}."
        if precision != "fp32":
            text += f" Ran in {precision}."
        if kept:
            what = "The corrected image" if labels.ndim == 2 else (
                f"{len(kept)} corrected slice{'s' if len(kept) > 1 else ''} ({_ranges(kept)})")
            text += f" {what} kept; tick 'overwrite corrected slices' to replace them."
        self.status.value = text

    def _write_confidence(self, image: Any, geometry: Any, slices: list[int] | None, conf: np.ndarray) -> None:
        name = f"{image.name} confidence"
        conf = np.asarray(conf, dtype=np.float32)
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == conf.shape:
            layer = self.viewer.layers[name]
            if slices is None:
                layer.data = conf
            elif layer.metadata.get(OVERLAY_KEY) and isinstance(layer.data, np.ndarray) and layer.data.flags.writeable:
                layer.data[slices] = conf[slices]  # our own map: the run slices in place, one re-slice of the view
                layer.refresh()
            else:  # someone else's array: never written into
                updated = np.array(layer.data, copy=True)
                updated[slices] = conf[slices]
                layer.data = updated
            return
        self.viewer.add_image(conf, name=name, colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.5,
                              blending="additive", scale=geometry.scale, translate=geometry.translate,
                              axis_labels=geometry.axis_labels,
                              metadata={METADATA_KEY: geometry, OVERLAY_KEY: True})  # fmt: skip


def _ranges(values: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"`` (slice lists in status lines)."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)
