"""The models a viewer's widgets share: bundled ones, checkpoint folders, and fine-tuned versions.

One :class:`ModelStore` per viewer (``ModelStore.for_viewer(viewer)``): the Segment widget runs its
current model, the Fine-tune widget adds a fine-tuned version (Accept), selects its parent again
(Rollback) or writes it to disk (Save). Entries are only added or selected on the GUI thread; the
``changed`` signal tells the widgets to refresh their model lists. Weights are loaded lazily, in the
worker thread that first needs them (:meth:`ModelStore.load`).
"""

from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psygnal import Signal

__all__ = ["ModelEntry", "ModelStore"]


@dataclass(eq=False)
class ModelEntry:
    """One selectable model.

    ``source`` is a bundled model name or a checkpoint folder; fine-tuned versions have no source
    until saved, and keep their weights in ``model`` (never modified afterwards: fine-tuning works
    on a copy, so a parent's weights stay exactly as they were).
    """

    key: str
    source: str | None
    model: Any = None  # braunet.model.BRAUNet once loaded
    card: Any = None  # braunet.model.ModelCard once loaded
    parent: ModelEntry | None = None
    saved_to: Path | None = None


class ModelStore:
    """Model entries in the order they were added, and which one is current."""

    changed = Signal()

    _by_viewer: dict[int, ModelStore] = {}

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._current: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_viewer(cls, viewer: Any) -> ModelStore:
        """The store of ``viewer`` (created on first use, dropped when the viewer is garbage collected).

        napari hands each widget its own proxy of the viewer; the store belongs to the viewer itself.
        """
        viewer = getattr(viewer, "__wrapped__", viewer)
        key = id(viewer)
        store = cls._by_viewer.get(key)
        if store is None:
            store = cls._by_viewer[key] = cls()
            weakref.finalize(viewer, cls._by_viewer.pop, key, None)
        return store

    # -- entries -------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._entries)

    def entry(self, key: str) -> ModelEntry:
        return self._entries[key]

    @property
    def current(self) -> str | None:
        return self._current

    def select(self, key: str) -> None:
        if key not in self._entries:
            raise KeyError(key)
        if key != self._current:
            self._current = key
            self.changed.emit()

    def add_source(self, source: str | Path, *, select: bool = False) -> str:
        """Register a bundled model name or a checkpoint folder (not loaded yet); return its key."""
        text = str(source)
        key = Path(text).name + f"  [{text}]" if Path(text).is_dir() else text
        if key not in self._entries:
            self._entries[key] = ModelEntry(key=key, source=text)
            if self._current is None:
                self._current = key
            self.changed.emit()
        if select:
            self.select(key)
        return key

    def add_version(self, model: Any, card: Any, parent_key: str) -> str:
        """Add a fine-tuned model (weights in memory) as a child of ``parent_key``; select it; return its key."""
        parent = self._entries[parent_key]
        key = f"{card.name} v{card.version} (fine-tuned)"
        n = 2
        while key in self._entries:
            key, n = f"{card.name} v{card.version} (fine-tuned #{n})", n + 1
        self._entries[key] = ModelEntry(key=key, source=None, model=model, card=card, parent=parent)
        self._current = key
        self.changed.emit()
        return key

    def rollback(self, key: str | None = None) -> str:
        """Select the parent of ``key`` (default: the current entry); return the parent's key."""
        entry = self._entries[key or self._current]
        if entry.parent is None:
            raise ValueError(f"{entry.key} has no parent version to roll back to")
        self.select(entry.parent.key)
        return entry.parent.key

    def kind(self, key: str) -> str | None:
        """``"ct"`` or ``"rgb"``: what the model segments (from its card; weights are not loaded)."""
        from braunet.errors import CheckpointError
        from braunet.zoo import model_card

        entry = self._entries[key]
        try:
            card = entry.card if entry.card is not None else model_card(entry.source)
            return card.recipe.kind
        except CheckpointError:
            return None

    # -- weights -------------------------------------------------------------------------------
    def load(self, key: str, device: str | None = None) -> tuple[Any, Any]:
        """(model, card) of ``key``; loads the weights on first use (any thread).

        ``device`` ("auto", "cpu", "cuda", "mps") moves the model there; None leaves it where it is
        (the CPU after loading).
        """
        from braunet import zoo
        from braunet.infer import resolve_device

        entry = self._entries[key]
        with self._lock:
            if entry.model is None:
                entry.model, entry.card = zoo.load_model(entry.source, device or "cpu")
            elif device is not None:
                entry.model.to(resolve_device(device))
            return entry.model, entry.card

    def copy_model(self, key: str, device: str = "cpu") -> tuple[Any, Any]:
        """A deep copy of ``key``'s model on ``device`` (training and routing hooks never touch the stored one)."""
        from braunet.infer import resolve_device

        model, card = self.load(key)
        with self._lock:
            return copy.deepcopy(model).to(resolve_device(device)).eval(), card

    def save(self, key: str, root: str | Path) -> Path:
        """Write ``key``'s version folder under ``root`` (braunet.train.versions.save_version)."""
        from braunet.train.versions import save_version

        from braunet.zoo import model_path

        entry = self._entries[key]
        if entry.model is None:
            raise ValueError(f"{key}: nothing to save, the model was never loaded")
        origin = entry  # the on-disk ancestor's replay set (anchors.npz) travels with the version
        while origin.source is None and origin.parent is not None:
            origin = origin.parent
        anchors_from = model_path(origin.source) if origin.source else None
        entry.saved_to = Path(save_version(entry.model, entry.card, root, anchors_from=anchors_from))
        return entry.saved_to
