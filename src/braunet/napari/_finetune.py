"""Fine-tune dock widget: learn from the slices the user corrected, measurably and reversibly.

* It lists the slices of the chosen Labels layer that differ from the last prediction the Segment
  widget wrote (``metadata["braunet_prediction"]``; for other labels layers, from the state when the
  layer was chosen here), updated on every paint, fill or undo.
* Train runs :func:`braunet.train.finetune.finetune` in a worker on a copy of the current model,
  with a live loss curve, a progress bar over the time budget and Cancel. Some corrected slices are
  held back (with a single corrected slice, a quarter of its blocks): the widget shows their Dice
  before and after.
* Accept (only offered when the fine-tuned copy improved the held-back Dice without forgetting)
  adds the new version to the viewer's model store and makes it the Segment widget's model;
  Rollback selects its parent again (whose weights were never touched); Save writes the version
  folder into the model library (:func:`braunet.train.versions.save_version`, as ``braunet
  finetune`` does), where ``--model NAME@N`` and ``braunet models`` find it.
* The anchor set replayed while training is the one stored in the folder of the model (or of its
  nearest saved ancestor), whatever the model is called.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)  # fmt: skip
from qtpy.QtCore import QTimer

from braunet.infer.views import convert_view
from braunet.napari._jobs import Job
from braunet.napari._loss_curve import LossCurve
from braunet.napari._segment import PREDICTION_KEY
from braunet.napari._store import ModelStore
from braunet.napari._suggest import SuggestWidget
from braunet.napari._widget_tools import connect_while_alive, layer_combo, wrap_labels

__all__ = ["FinetuneWidget", "edited_slices"]


def _warm_up_training() -> None:
    """Run one optimizer step on a dummy parameter, on the GUI thread, once per process.

    reason: PyTorch's first optimizer step imports ~800 modules (torch._dynamo, sympy...). Imported
    from the worker thread, unmarshalling them holds the GIL for up to half a second at a time and
    freezes the viewer; done here, the cost (1-2 s, once) is paid while the widget opens.
    """
    import torch

    parameter = torch.nn.Parameter(torch.zeros(1))
    parameter.grad = torch.zeros(1)
    torch.optim.AdamW([parameter]).step()


def edited_slices(layer: Any) -> list[int]:
    """Slices (axis 0; ``[0]`` for a 2-D layer) where the labels differ from the last prediction."""
    base = layer.metadata.get(PREDICTION_KEY)
    data = np.asarray(layer.data)
    if base is None or base.shape != data.shape:
        return []
    if data.ndim == 2:
        return [0] if np.any(data != base) else []
    return np.flatnonzero(np.any(data != base, axis=tuple(range(1, data.ndim)))).tolist()


class FinetuneWidget(Container):
    """Image + corrected labels + options -> Train / Cancel -> Dice before/after -> Accept / Rollback / Save."""

    def __init__(self, napari_viewer: Any) -> None:
        from napari.layers import Image, Labels

        from braunet.infer.device import DEVICE_CHOICES
        from braunet.train.finetune import MODES
        from braunet.zoo import library_dir

        _warm_up_training()
        self.viewer = napari_viewer
        self.store = ModelStore.for_viewer(napari_viewer)
        self.job: Job | None = None
        self.result: Any = None
        self._parent_key: str | None = None
        self._watched: Any = None
        self.image = layer_combo(napari_viewer, Image, "image")
        self.corrected = layer_combo(napari_viewer, Labels, "corrected labels")
        self.model_info = Label(label="model", value="")
        self.slices = Select(label="edited slices", choices=lambda _w: self._slice_choices(), allow_multiple=True)
        self.time_budget = FloatSpinBox(label="time budget (s)", min=2.0, max=3600.0, step=5.0, value=30.0)
        self.max_steps = SpinBox(label="max steps", min=0, max=1_000_000, value=0,
                                 tooltip="0: train until the time budget; N: also stop after N steps (reproducible)")
        self.mode = ComboBox(label="mode", choices=list(MODES), value="decoder",
                             tooltip="decoder: encoder frozen (safest with few slices); full: everything")
        self.holdback = FloatSpinBox(label="hold back", min=0.1, max=0.9, step=0.05, value=0.25,
                                     tooltip="share of the edited slices kept out of training to measure Dice")
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.suggestions = SuggestWidget(napari_viewer, self.store, self.image, self.device)  # what to correct next
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.dice = Label(label="held-back Dice", value="-")
        self.accept_button = PushButton(text="Accept", enabled=False)
        self.rollback_button = PushButton(text="Rollback", enabled=False)
        self.save_button = PushButton(text="Save version", enabled=False)
        self.versions_root = FileEdit(label="versions folder", mode="d", value=str(library_dir()),
                                      tooltip="the model library (where --model NAME@N looks) unless changed")
        self.status = Label(value="")
        row = lambda *ws: Container(widgets=list(ws), layout="horizontal", labels=False)  # noqa: E731
        super().__init__(widgets=[
            self.image, self.corrected, self.model_info, self.slices, self.time_budget, self.max_steps, self.mode,
            self.holdback,
            self.device, row(self.train_button, self.cancel_button), self.progress, self.dice,
            row(self.accept_button, self.rollback_button, self.save_button), self.versions_root, self.status,
        ])  # fmt: skip
        self.insert(self.index(self.slices), self.suggestions)
        self.loss_curve = LossCurve(label="loss")
        row_of_progress = self.progress.native
        while row_of_progress.parentWidget() is not None and row_of_progress.parentWidget() is not self.native:
            row_of_progress = row_of_progress.parentWidget()  # magicgui wraps labelled widgets in a row
        layout = self.native.layout()
        layout.insertWidget(layout.indexOf(row_of_progress) + 1, self.loss_curve)
        self.slices.native.setMaximumHeight(110)
        wrap_labels(self.status, self.dice)

        self._edit_timer = QTimer(self.native)
        self._edit_timer.setSingleShot(True)
        self._edit_timer.setInterval(200)
        self._edit_timer.timeout.connect(self.refresh_edits)
        self.train_button.changed.connect(self.train)
        self.cancel_button.changed.connect(self.cancel)
        self.accept_button.changed.connect(self.accept)
        self.rollback_button.changed.connect(self.rollback)
        self.save_button.changed.connect(lambda _v=None: self.save(self.versions_root.value))
        self.corrected.changed.connect(self._labels_chosen)
        connect_while_alive(self.native, self.store.changed, self._store_changed)
        self._store_changed()
        self._labels_chosen()

    # -- edited slices -------------------------------------------------------------------------
    def _slice_choices(self) -> list[tuple[str, int]]:
        layer = getattr(self, "corrected", None)
        layer = layer.value if layer is not None else None
        if layer is None:
            return []
        return [(f"slice {k}" if layer.ndim >= 3 else "image", k) for k in edited_slices(layer)]

    def _labels_chosen(self, value: Any = None) -> None:
        if self._watched is not None:
            for emitter in self._edit_events(self._watched):
                with contextlib.suppress(RuntimeError, TypeError, ValueError):
                    emitter.disconnect(self._schedule_refresh)
        layer = self.corrected.value
        self._watched = layer
        if layer is not None:
            if PREDICTION_KEY not in layer.metadata:  # edits count from now on
                layer.metadata[PREDICTION_KEY] = np.array(layer.data, copy=True)
            for emitter in self._edit_events(layer):
                connect_while_alive(self.native, emitter, self._schedule_refresh)
        self.refresh_edits()

    @staticmethod
    def _edit_events(layer: Any) -> tuple:
        """Events after which the labels may differ: paint/fill/data_setitem, new data, and any refresh
        (``Labels.undo``/``redo`` emit nothing else; the thumbnail is redrawn after them)."""
        return (layer.events.paint, layer.events.data, layer.events.thumbnail)

    def _schedule_refresh(self, event: Any = None) -> None:
        self._edit_timer.start()

    def refresh_edits(self) -> list[int]:
        """Recompute the edited-slice list and return it; new edits are selected, slices the user
        deselected stay deselected."""
        listed, selected = set(self.slices.choices), set(self.slices.value or [])
        self.slices.reset_choices()
        edited = [value for _, value in self._slice_choices()]
        self.slices.value = [k for k in edited if k in selected or k not in listed]
        return edited

    # -- model store ---------------------------------------------------------------------------
    def _store_changed(self) -> None:
        key = self.store.current
        self.model_info.value = key or "(none: add one in the Segment widget)"
        has_parent = bool(key) and self.store.entry(key).parent is not None
        self.rollback_button.enabled = has_parent
        self.save_button.enabled = bool(key) and self.store.entry(key).source is None

    # -- training ------------------------------------------------------------------------------
    def training_slices(self) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
        """Raw image slices and corrected label slices (in the model's slice view) of the selected slices."""
        image, labels = self.image.value, self.corrected.value
        chosen = sorted(int(k) for k in (self.slices.value or []))
        if image is None or labels is None or not chosen:
            return [], [], chosen
        _, card = self.store.load(self.store.current)
        three_d = not image.rgb and image.ndim >= 3
        view = card.recipe.view if three_d else "radiological"  # a 2-D image is shown as the network sees it
        images, masks = [], []
        for k in chosen:
            img = np.asarray(image.data[k] if three_d else image.data)
            lab = np.asarray(labels.data[k] if three_d else labels.data)
            images.append(np.ascontiguousarray(convert_view(img[None], "radiological", view)[0]))
            masks.append(np.ascontiguousarray(convert_view(lab[None], "radiological", view)[0]))
        return images, masks, chosen

    def train(self, value: Any = None) -> Job | None:
        """Start a fine-tuning round on the selected edited slices; returns the running Job."""
        from braunet.train.finetune import finetune

        if self.job is not None and self.job.running:
            return self.job
        key = self.store.current
        if not key:
            self.status.value = "No model: choose one in the Segment widget."
            return None
        if self.image.value is None or self.corrected.value is None:
            self.status.value = "Choose the image and the corrected labels layer."
            return None
        images, masks, chosen = self.training_slices()
        if not chosen:
            self.status.value = "No edited slices: correct a slice with napari's brushes, then Train."
            return None
        store, device = self.store, self.device.value
        mode, budget, holdback = self.mode.value, float(self.time_budget.value), float(self.holdback.value)
        max_steps = int(self.max_steps.value) or None

        anchors = store.anchors(key)

        def work(progress, should_stop):
            model, card = store.copy_model(key, device)
            return finetune(model, card, images, masks, mode=mode, time_budget_s=budget, holdback=holdback,
                            max_steps=max_steps, progress=progress, should_stop=should_stop,
                            anchors=anchors)  # fmt: skip

        job = Job(work, f"Fine-tuning {key}", total=int(budget), parent=self.native)
        job.progressed.connect(self._on_progress)
        job.done.connect(lambda result: self._on_result(result, chosen))
        job.cancelled.connect(lambda: setattr(self.status, "value", "Cancelled: the model is unchanged."))
        job.failed.connect(lambda text: setattr(self.status, "value", text))
        job.finished.connect(self._finished)
        self.job, self.result, self._parent_key = job, None, key
        self.loss_curve.clear()
        self.progress.value = 0
        self.dice.value = "-"
        self.accept_button.enabled = False
        self.train_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"Fine-tuning {key} on {len(chosen)} slices for up to {budget:.0f} s..."
        return job.start()

    def cancel(self, value: Any = None) -> None:
        if self.job is not None:
            self.job.cancel()

    def _on_progress(self, args: tuple) -> None:
        update = args[0]
        budget = max(float(self.time_budget.value), 1e-6)
        self.progress.value = int(min(100.0, 100.0 * update.elapsed_s / budget))
        self.loss_curve.append(update.loss)

    def _finished(self) -> None:
        self.train_button.enabled, self.cancel_button.enabled = True, False

    def _on_result(self, result: Any, chosen: list[int]) -> None:
        self.result = result
        self.progress.value = 100
        self.loss_curve.set_values(result.losses)
        held = ", ".join(str(chosen[i]) for i in result.heldout_indices)
        if result.details.get("heldout") == "blocks":  # one slice, split by blocks
            held = f"{result.details['heldout_share_of_slice']:.0%} of slice {held}, by blocks"
        text = f"{result.dice_before:.3f} → {result.dice_after:.3f} (held back: {held})"
        if result.anchor_dice_before is not None:
            text += f"; anchors {result.anchor_dice_before:.3f} → {result.anchor_dice_after:.3f}"
        self.dice.value = text
        self.accept_button.enabled = bool(result.accepted)
        self.status.value = result.message + ("" if not result.accepted else ". Accept to use it.")

    # -- versions ------------------------------------------------------------------------------
    def accept(self, value: Any = None) -> str | None:
        """Make the accepted fine-tuned model the current model of the viewer (Segment uses it); return its key."""
        if self.result is None or not self.result.accepted or self._parent_key is None:
            return None
        key = self.store.add_version(self.result.model, self.result.card, self._parent_key)
        self.result = None
        self.accept_button.enabled = False
        self.status.value = f"Now using {key}; Rollback returns to {self._parent_key}."
        return key

    def rollback(self, value: Any = None) -> str | None:
        """Select the parent of the current model again; return its key."""
        key = self.store.current
        if not key or self.store.entry(key).parent is None:
            return None
        parent = self.store.rollback(key)
        self.status.value = f"Rolled back to {parent}."
        return parent

    def save(self, root: Any = None) -> Path | None:
        """Write the current (fine-tuned) version under ``root``/<name>/v<version> (default: the model
        library); return the folder."""
        from braunet.errors import BraunetError

        key = self.store.current
        if not key:
            return None
        try:
            folder = self.store.save(key, Path(str(root)).expanduser() if root else None)
        except BraunetError as error:
            self.status.value = str(error)
            return None
        self.status.value = f"Saved {key} to {folder}"
        return folder
