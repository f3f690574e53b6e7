"""Fine-tune dock widget: learn from the slices the user corrected, measurably and reversibly.

* It lists the slices of the chosen Labels layer that differ from what the Segment widget last
  wrote there (the layer's :class:`~braunet.napari._layers.EditRecord`; for other labels layers,
  from the state when the layer was chosen here), updated on every paint, fill or undo. Every
  corrected slice is selected for training, also those corrected before this widget opened,
  except those the user deselects; the count line says how many are selected.
* Train runs :func:`braunet.train.finetune.finetune` in a worker on a copy of the widget's model
  (by default the one that segmented the layer), with a live loss curve, a progress bar over the
  time budget and Cancel. A quarter of the corrected slices is held back (with a single corrected
  slice, or by choice, a quarter of the blocks): the widget shows their Dice before and after, and a table of each
  class's Dice and HD95 (mm for volumes, pixels for 2-D images).
* Accept (only offered when the fine-tuned copy improved the held-back Dice without forgetting)
  adds the new version to the viewer's model store; widgets using its parent switch to it.
  Rollback goes back to the parent (whose weights were never touched); Save writes the version
  folder into the model library (:func:`braunet.train.versions.save_version`, as ``braunet
  finetune`` does), where ``--model NAME@N`` and ``braunet models`` find it.
* The anchor set replayed while training is the one stored in the folder of the model (or of its
  nearest saved ancestor), whatever the model is called.
* Opening the widget stays under the 0.3 s a user notices: PyTorch's training machinery is warmed
  up in a worker after the widget is shown, never on the GUI thread.
"""

from __future__ import annotations

import contextlib
import threading
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
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QHBoxLayout, QWidget

from braunet.infer.views import convert_view
from braunet.napari._geometry import METADATA_KEY, view_pixel_mm
from braunet.napari._jobs import Job
from braunet.napari._layers import EDITS_KEY, EditRecord
from braunet.napari._loss_curve import LossCurve
from braunet.napari._store import ModelStore
from braunet.napari._suggest import SuggestWidget
from braunet.napari._widget_tools import (
    add_native,
    collapsible,
    compact,
    connect_while_alive,
    layer_combo,
    model_combo,
    wrap_labels,
)  # fmt: skip

__all__ = ["FinetuneWidget", "warm_up_training"]

_warmed = threading.Event()


def warm_up_training() -> None:
    """Run one optimizer step on a dummy parameter, once per process (any thread).

    reason: PyTorch's first optimizer step imports ~800 modules (torch._dynamo, sympy...), 1-2 s.
    The widget runs this in a worker right after it opens, so neither opening the widget nor the
    first training step pays for it on the GUI thread.
    """
    if _warmed.is_set():
        return
    import torch

    parameter = torch.nn.Parameter(torch.zeros(1))
    parameter.grad = torch.zeros(1)
    torch.optim.AdamW([parameter]).step()
    _warmed.set()


_SELECTED_STYLE = """
QListWidget::item:selected { background: #2f6fb5; color: white; }
QListWidget::item:selected:!active { background: #2f6fb5; color: white; }
"""


class FinetuneWidget(Container):
    """Image + corrected labels + model -> Train / Cancel -> Dice and HD95 before/after -> Accept / Rollback / Save."""

    def __init__(self, napari_viewer: Any) -> None:
        from napari.layers import Image, Labels

        from braunet.infer.device import DEVICE_CHOICES
        from braunet.train.finetune import DEFAULT_HOLDBACK_BY, HOLDBACK_UNITS, MODES
        from braunet.zoo import library_dir

        self.viewer = napari_viewer
        self.store = ModelStore.for_viewer(napari_viewer)
        self.job: Job | None = None
        self.result: Any = None
        self._parent_key: str | None = None
        self._watched: Any = None
        self._record_model: str | None = None  # the model the watched layer's record last named
        self._refreshing = False  # True while refresh_edits sets the selection (not the user)
        self.image = layer_combo(napari_viewer, Image, "image")
        self.corrected = layer_combo(napari_viewer, Labels, "corrected labels")
        self.model = model_combo(self.store, tooltip="the model to fine-tune (default: the one that segmented "
                                                     "the corrected layer)")
        self.slices = Select(label="edited slices", choices=lambda _w: self._slice_choices(), allow_multiple=True)
        self.selected_count = Label(value="")
        self.time_budget = FloatSpinBox(label="time budget (s)", min=2.0, max=3600.0, step=5.0, value=30.0)
        self.max_steps = SpinBox(label="max steps", min=0, max=1_000_000, value=0,
                                 tooltip="0: train until the time budget; N: also stop after N steps (reproducible)")
        self.mode = ComboBox(label="mode", choices=list(MODES), value="decoder",
                             tooltip="decoder: encoder frozen (safest with few slices); full: everything")
        self.holdback = FloatSpinBox(label="hold back", min=0.1, max=0.9, step=0.05, value=0.25,
                                     tooltip="share kept out of training to measure Dice: of the edited slices, "
                                             "or of each slice's blocks")
        self.holdback_by = ComboBox(label="hold back by", choices=list(HOLDBACK_UNITS), value=DEFAULT_HOLDBACK_BY,
                                    tooltip="slices: whole edited slices; blocks: train on every edited slice and "
                                            "judge the round on blocks of them it never saw (kinder to a round: "
                                            "their neighbours were trained on; a single slice is always split "
                                            "by blocks)")
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
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
            self.image, self.corrected, self.model, self.slices, self.selected_count,
            row(self.train_button, self.cancel_button), self.progress, self.dice,
            row(self.accept_button, self.rollback_button, self.save_button), self.status,
        ])  # fmt: skip
        # What to correct next and the rarely changed options fold away, side by side: the three docks
        # must fit a 1000 px tall window.
        self.suggestions = SuggestWidget(napari_viewer, self.store, self.image, self.device, self.model)
        self.suggest_section = collapsible("Suggest slices", self.suggestions)
        self.training_options = collapsible("Training options", self.time_budget, self.max_steps, self.mode, self.holdback,
                                            self.holdback_by, self.device, self.versions_root)  # fmt: skip
        folds = QWidget()
        folds_layout = QHBoxLayout(folds)
        folds_layout.setContentsMargins(0, 0, 0, 0)
        folds_layout.addWidget(self.suggest_section, 0, Qt.AlignmentFlag.AlignTop)
        folds_layout.addWidget(self.training_options, 0, Qt.AlignmentFlag.AlignTop)
        add_native(self, folds, after=self.selected_count)
        self.loss_curve = LossCurve(label="loss")
        add_native(self, self.loss_curve, after=self.progress)
        self.class_table = _class_table()
        add_native(self, self.class_table, after=self.dice)
        self.slices.native.setMaximumHeight(72)
        self.slices.native.setMinimumHeight(44)
        self.loss_curve.setMinimumHeight(56)
        compact(self)
        self.slices.native.setStyleSheet(_SELECTED_STYLE)
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
        connect_while_alive(self.native, napari_viewer.layers.events.inserted, self._layer_added)
        self.slices.changed.connect(self._selection_changed)
        self.model.changed.connect(self._model_changed)
        connect_while_alive(self.native, self.store.changed, self._model_changed)
        self._choose_predicted_labels()
        self._labels_chosen()
        self._model_changed()
        self.warm_up = _start_warm_up(self.native)

    # -- edited slices -------------------------------------------------------------------------
    def _record(self) -> EditRecord | None:
        layer = getattr(self, "corrected", None)
        layer = layer.value if layer is not None else None
        return EditRecord.of(layer) if layer is not None else None

    def _slice_choices(self) -> list[tuple[str, int]]:
        record = self._record()
        if record is None:
            return []
        layer = self.corrected.value
        return [(f"slice {k}" if layer.ndim >= 3 else "image", k) for k in record.edited_slices(layer.data)]

    def _choose_predicted_labels(self) -> bool:
        """Offer a layer the model wrote and the user corrected (most edited slices first), not the
        sample's reference labels; keep the current choice if it is such a layer. True if one was chosen."""
        from napari.layers import Labels

        def score(layer: Any) -> tuple[bool, int]:
            record = layer.metadata.get(EDITS_KEY)  # read only: a record costs a copy of the labels
            if not isinstance(record, EditRecord) or record.model is None:
                return (False, 0)
            return (True, len(record.edited_slices(layer.data)))

        current = self.corrected.value
        if current is not None and score(current)[0]:
            return False
        layers = [layer for layer in self.viewer.layers if isinstance(layer, Labels) and layer in self._labels_choices()]
        best = max(layers, key=score, default=None)
        if best is None or best is current or score(best)[0] == 0:
            return False
        self.corrected.value = best
        return True

    def _labels_choices(self) -> list[Any]:
        return list(self.corrected.choices)

    def _layer_added(self, event: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the widget was deleted
            self.corrected.reset_choices()
            self._choose_predicted_labels()

    def _labels_chosen(self, value: Any = None) -> None:
        if self._watched is not None:
            for emitter in self._edit_events(self._watched):
                with contextlib.suppress(RuntimeError, TypeError, ValueError):
                    emitter.disconnect(self._schedule_refresh)
        layer = self.corrected.value
        self._watched = layer
        self._record_model = None
        if layer is not None:
            EditRecord.of(layer)  # a layer nobody predicted: edits count from now on
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
        """Recompute the edited-slice list and return it; every edited slice is selected unless the
        user deselected it (the layer's record remembers that)."""
        record = self._record()
        self._refreshing = True
        try:
            self.slices.reset_choices()
            if record is None:
                edited: list[int] = []
            else:
                edited = record.edited_slices(self.corrected.value.data)
                self.slices.value = [k for k in edited if k not in record.excluded]
                self._follow_record_model(record)
        finally:
            self._refreshing = False
        self._show_selection(edited)
        return edited

    def _selection_changed(self, value: Any = None) -> None:
        """The user (de)selected slices: remember the left-out ones in the layer's record."""
        if self._refreshing:
            return
        record = self._record()
        if record is not None:
            chosen = set(self.slices.value or [])
            listed = list(self.slices.choices)  # the values (slice indices) of the rows
            record.excluded = {k for k in record.excluded if k not in chosen} | {k for k in listed if k not in chosen}
        self._show_selection([value for _, value in self._slice_choices()])

    def _show_selection(self, edited: list[int]) -> None:
        """Bold selected rows and the count line: which slices Train will use must be obvious."""
        chosen = set(self.slices.value or [])
        qlist = self.slices.native
        for i in range(qlist.count()):
            item = qlist.item(i)
            font = item.font()
            font.setBold(item.isSelected())
            item.setFont(font)
        n = len([k for k in edited if k in chosen])
        if not edited:
            self.selected_count.value = "No edited slices yet: correct a slice with napari's brushes."
        else:
            what = "edited slice" if len(edited) == 1 else "edited slices"
            self.selected_count.value = f"<b>{n} of {len(edited)} {what} selected</b> for training"

    def _follow_record_model(self, record: EditRecord) -> None:
        """Default model: the one that segmented the layer (followed until the layer names another)."""
        if record.model and record.model != self._record_model and record.model in self.store.keys():
            self._record_model = record.model
            self.model.reset_choices()
            self.model.value = record.model

    # -- model store ---------------------------------------------------------------------------
    def _model_changed(self, value: Any = None) -> None:
        key = self.model.value if self.model.value in self.store.keys() else None
        self.rollback_button.enabled = bool(key) and self.store.entry(key).parent is not None
        self.save_button.enabled = bool(key) and self.store.entry(key).source is None

    # -- training ------------------------------------------------------------------------------
    def training_slices(self) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
        """Raw image slices and corrected label slices (in the model's slice view) of the selected slices."""
        image, labels = self.image.value, self.corrected.value
        chosen = sorted(int(k) for k in (self.slices.value or []))
        if image is None or labels is None or not chosen:
            return [], [], chosen
        _, card = self.store.load(self.model.value)
        three_d = not image.rgb and image.ndim >= 3
        view = card.recipe.view if three_d else "radiological"  # a 2-D image is shown as the network sees it
        images, masks = [], []
        for k in chosen:
            img = np.asarray(image.data[k] if three_d else image.data)
            lab = np.asarray(labels.data[k] if three_d else labels.data)
            images.append(np.ascontiguousarray(convert_view(img[None], "radiological", view)[0]))
            masks.append(np.ascontiguousarray(convert_view(lab[None], "radiological", view)[0]))
        return images, masks, chosen

    def pixel_spacing(self, count: int) -> list[tuple[float, float]] | None:
        """Per training slice, its pixel size (rows, cols) in mm in the model's view: for HD95 in mm.

        None (HD95 in pixels) for 2-D images and for volumes our reader did not open (their layer
        scale is not known to be in mm), except for a model that resamples slices to fixed-size
        pixels (``spacing_mm``): it needs a spacing, and gets the layer's scale read in mm, as the
        Segment widget reads it. The two slice views differ by a transpose, which swaps rows and
        columns.
        """
        image = self.image.value
        card = self.store.entry(self.model.value).card or self.store.entry(self.model.value).source.card
        if image is None or image.rgb or image.ndim < 3:
            return None
        if METADATA_KEY not in image.metadata and not card.recipe.spacing_mm:
            return None
        pair = view_pixel_mm(image.scale, card.recipe.view)
        return [pair] * count

    def train(self, value: Any = None) -> Job | None:
        """Start a fine-tuning round on the selected edited slices; returns the running Job."""
        from braunet.train.finetune import finetune

        if self.job is not None and self.job.running:
            return self.job
        key = self.model.value if self.model.value in self.store.keys() else None
        if not key:
            self.status.value = "No model: add one in the Segment widget."
            return None
        if self.image.value is None or self.corrected.value is None:
            self.status.value = "Choose the image and the corrected labels layer."
            return None
        images, masks, chosen = self.training_slices()
        if not chosen:
            self.status.value = "No edited slices: correct a slice with napari's brushes, then Train."
            return None
        spacing = self.pixel_spacing(len(chosen))
        store, device = self.store, self.device.value
        mode, budget, holdback = self.mode.value, float(self.time_budget.value), float(self.holdback.value)
        holdback_by = self.holdback_by.value
        max_steps = int(self.max_steps.value) or None

        anchors = store.anchors(key)

        def work(progress, should_stop):
            warm_up_training()  # normally done already, by the worker started when the widget opened
            model, card = store.copy_model(key, device)
            return finetune(model, card, images, masks, mode=mode, time_budget_s=budget, holdback=holdback,
                            holdback_by=holdback_by, max_steps=max_steps, progress=progress, should_stop=should_stop,
                            anchors=anchors, spacing=spacing)  # fmt: skip

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
        self.class_table.setVisible(False)
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
        indices = result.heldout_indices
        held = ", ".join(str(chosen[i]) for i in indices) if len(indices) <= 5 else f"{len(indices)} slices"
        if result.details.get("heldout") == "blocks":  # every slice split by blocks
            which = held if len(indices) > 5 else f"slice {held}" if len(indices) == 1 else f"slices {held}"
            held = f"{result.details['heldout_share_of_slice']:.0%} of {which}, by blocks"
        text = f"{result.dice_before:.3f} → {result.dice_after:.3f} (held back: {held})"
        if result.anchor_dice_before is not None:
            text += f"; anchors {result.anchor_dice_before:.3f} → {result.anchor_dice_after:.3f}"
        self.dice.value = text
        _fill_class_table(self.class_table, result.per_class, result.hd95_unit)
        self.accept_button.enabled = bool(result.accepted)
        self.status.value = result.message + ("" if not result.accepted else ". Accept to use it.")

    # -- versions ------------------------------------------------------------------------------
    def accept(self, value: Any = None) -> str | None:
        """Make the accepted fine-tuned model the current model of the viewer (Segment uses it); return its key."""
        if self.result is None or not self.result.accepted or self._parent_key is None:
            return None
        key = self.store.add_version(self.result.model, self.result.card, self._parent_key)  # widgets follow
        self.model.reset_choices()
        self.model.value = key
        self.result = None
        self.accept_button.enabled = False
        self.status.value = f"Now using {key}; Rollback returns to {self._parent_key}."
        return key

    def rollback(self, value: Any = None) -> str | None:
        """Go back from this widget's model to its parent (widgets using it follow); return the parent's key."""
        key = self.model.value if self.model.value in self.store.keys() else None
        if not key or self.store.entry(key).parent is None:
            return None
        parent = self.store.rollback(key)
        self.model.value = parent
        self.status.value = f"Rolled back to {parent}."
        return parent

    def save(self, root: Any = None) -> Path | None:
        """Write the current (fine-tuned) version under ``root``/<name>/v<version> (default: the model
        library); return the folder."""
        from braunet.errors import BraunetError

        key = self.model.value if self.model.value in self.store.keys() else None
        if not key:
            return None
        try:
            folder = self.store.save(key, Path(str(root)).expanduser() if root else None)
        except BraunetError as error:
            self.status.value = str(error)
            return None
        self.status.value = f"Saved {key} to {folder}"
        return folder


_warm_up_thread: threading.Thread | None = None


def _start_warm_up(parent: Any) -> threading.Thread | None:
    """Warm up training on a daemon thread once the event loop runs (never on the GUI thread).

    A plain thread, not a napari worker: it reports nothing, and a Qt signal object could be gone
    when it ends (a viewer closed meanwhile).
    """
    global _warm_up_thread
    if _warmed.is_set() or _warm_up_thread is not None:
        return _warm_up_thread
    thread = _warm_up_thread = threading.Thread(target=warm_up_training, name="braunet-warm-up", daemon=True)
    timer = QTimer(parent)  # reason: a child timer never fires into a closed widget
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: thread.ident is None and thread.start())  # started once
    timer.start(0)
    return thread


def _class_table() -> Any:
    """A small read-only table: class | Dice before → after | HD95 before → after (hidden until a result)."""
    from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget

    table = QTableWidget(0, 3)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.verticalHeader().setVisible(False)
    table.verticalHeader().setDefaultSectionSize(20)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.setMaximumHeight(130)
    table.setMinimumHeight(44)
    table.setVisible(False)
    return table


def _fill_class_table(table: Any, changes: list[Any], unit: str) -> None:
    """One row per class of ``FinetuneResult.per_class``; a cell whose value improved is bold."""
    from qtpy.QtWidgets import QTableWidgetItem

    table.setHorizontalHeaderLabels(["class", "Dice before → after", f"HD95 ({unit}) before → after"])
    table.setRowCount(len(changes))

    def cell(text: str, bold: bool = False) -> Any:
        item = QTableWidgetItem(text)
        font = item.font()
        font.setBold(bold)
        item.setFont(font)
        return item

    def distance(value: float) -> str:
        return "–" if np.isnan(value) else f"{value:.1f}"

    for row, change in enumerate(changes):
        hd_better = not np.isnan(change.hd95_after) and (np.isnan(change.hd95_before)
                                                          or change.hd95_after < change.hd95_before)  # fmt: skip
        table.setItem(row, 0, cell(change.name))
        table.setItem(row, 1, cell(f"{change.dice_before:.3f} → {change.dice_after:.3f}",
                                   change.dice_after > change.dice_before))  # fmt: skip
        table.setItem(row, 2, cell(f"{distance(change.hd95_before)} → {distance(change.hd95_after)}", hd_better))
    table.setVisible(bool(changes))
