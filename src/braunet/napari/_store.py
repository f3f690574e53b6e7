"""The models a viewer's widgets share: bundled ones, saved versions, checkpoint folders, fine-tunes.

One :class:`ModelStore` per viewer (``ModelStore.for_viewer(viewer)``, created with the bundled
models and the library's saved versions) holds the models, not a choice among them: each widget
keeps its own model selection, so choosing a model in one widget never changes another. The
Fine-tune widget adds a fine-tuned version (Accept) or goes back to its parent (Rollback); both
emit :attr:`ModelStore.adopted`, which the widgets showing the replaced model follow (the user
asked for exactly that swap), and Save writes a version into the model library, where
``braunet predict --model NAME@N`` finds it. :attr:`ModelStore.recent` (the model last chosen
anywhere) is only the default of widgets opened later. Every on-disk entry is a
:class:`braunet.zoo.ModelSource` from :func:`braunet.zoo.resolve_model`, so the widgets and the
command line agree on what a reference means and where a model's anchor set is. Entries are only
added on the GUI thread; the ``changed`` signal tells the widgets to refresh their
model lists. Weights are loaded lazily, in the worker thread that first needs them
(:meth:`ModelStore.load`), or ahead of time by :meth:`ModelStore.preload` in a background thread
when a widget shows a model, so that a first click costs one forward pass, not a load.
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

_ONE_PRELOAD = threading.Lock()  # preloads run one after the other


@dataclass(eq=False)
class ModelEntry:
    """One selectable model.

    ``source`` is where an on-disk model lives (a :class:`braunet.zoo.ModelSource`); fine-tuned
    versions have no source until saved, and keep their weights in ``model`` (never modified
    afterwards: fine-tuning works on a copy, so a parent's weights stay exactly as they were).
    """

    key: str
    source: Any  # braunet.zoo.ModelSource, or None for an unsaved fine-tuned version
    model: Any = None  # braunet.model.BRAUNet once loaded
    card: Any = None  # braunet.model.ModelCard once loaded
    parent: ModelEntry | None = None
    saved_to: Path | None = None

    def origin(self) -> ModelEntry:
        """The nearest entry, this one or an ancestor, that lives on disk (whose anchor set applies)."""
        entry = self
        while entry.source is None and entry.parent is not None:
            entry = entry.parent
        return entry


class ModelStore:
    """Model entries in the order they were added.

    Signals:
        changed(): entries were added or saved (widgets refresh their model lists).
        adopted(new_key, old_key): Accept or Rollback replaced ``old_key`` by ``new_key``; widgets
            whose selection is ``old_key`` switch to ``new_key``, the others keep theirs.
    """

    changed = Signal()
    adopted = Signal(str, str)

    _by_viewer: dict[int, ModelStore] = {}

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self.recent: str | None = None  # the model last chosen in any widget: the default of widgets opened later
        self._lock = threading.Lock()
        self._preloads: dict[str, threading.Thread] = {}
        self._preload_lock = threading.Lock()  # reason: never the weights lock, which a load holds for long

    @classmethod
    def for_viewer(cls, viewer: Any) -> ModelStore:
        """The store of ``viewer`` (created on first use with :meth:`add_known_models`, dropped when
        the viewer is garbage collected).

        napari hands each widget its own proxy of the viewer; the store belongs to the viewer itself.
        """
        viewer = getattr(viewer, "__wrapped__", viewer)
        key = id(viewer)
        store = cls._by_viewer.get(key)
        if store is None:
            store = cls._by_viewer[key] = cls()
            store.add_known_models()
            weakref.finalize(viewer, cls._by_viewer.pop, key, None)
        return store

    # -- entries -------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._entries)

    def entry(self, key: str) -> ModelEntry:
        return self._entries[key]

    def default_key(self) -> str | None:
        """The model a newly opened widget starts with: the one last chosen anywhere, else the first."""
        if self.recent in self._entries:
            return self.recent
        return next(iter(self._entries), None)

    def note_choice(self, key: str | None) -> None:
        """Remember ``key`` as the default of widgets opened later (open widgets are not told)."""
        if key in self._entries:
            self.recent = key

    def add_source(self, ref: Any) -> str:
        """Register a model reference (bundled name, ``NAME@N``, folder, ModelSource; not loaded); return its key.

        Keys: the name of a bundled model, ``NAME@N`` of a saved version, ``folder  [path]`` otherwise.

        Raises:
            CheckpointError: the reference names no model (see :func:`braunet.zoo.resolve_model`).
        """
        from braunet.zoo import resolve_model

        source = resolve_model(ref)
        key = source.ref if source.kind != "path" else f"{source.folder.name}  [{source.ref}]"
        if key not in self._entries:
            self._entries[key] = ModelEntry(key=key, source=source)
            self.changed.emit()
        return key

    def add_known_models(self) -> None:
        """Register the bundled models and the saved versions of the library (unreadable ones are skipped)."""
        from braunet.errors import CheckpointError
        from braunet.zoo import list_models, list_versions

        for ref in [*list_models(), *list_versions()]:
            try:
                self.add_source(ref)
            except CheckpointError:  # reason: one broken folder must not hide the other models
                continue

    def add_official(self, checkpoint: str | Path) -> str:
        """Convert an official ``.pth`` into the library (:func:`braunet.zoo.import_official`); register it.

        Raises:
            CheckpointError, InputError, OutputError: as :func:`braunet.zoo.import_official`.
        """
        from braunet.zoo import import_official

        return self.add_source(import_official(checkpoint))

    def add_version(self, model: Any, card: Any, parent_key: str) -> str:
        """Add a fine-tuned model (weights in memory) as a child of ``parent_key``; return its key.

        Emits ``adopted(key, parent_key)``: widgets using the parent move to the new version.
        """
        parent = self._entries[parent_key]
        key = f"{card.name} v{card.version} (fine-tuned)"
        n = 2
        while key in self._entries:
            key, n = f"{card.name} v{card.version} (fine-tuned #{n})", n + 1
        self._entries[key] = ModelEntry(key=key, source=None, model=model, card=card, parent=parent)
        self.recent = key
        self.changed.emit()
        self.adopted.emit(key, parent_key)
        return key

    def rollback(self, key: str) -> str:
        """Go back from ``key`` to its parent (emits ``adopted(parent, key)``); return the parent's key."""
        entry = self._entries[key]
        if entry.parent is None:
            raise ValueError(f"{entry.key} has no parent version to roll back to")
        self.recent = entry.parent.key
        self.adopted.emit(entry.parent.key, key)
        return entry.parent.key

    def kind(self, key: str) -> str | None:
        """``"ct"`` or ``"rgb"``: what the model segments (from its card; weights are not loaded)."""
        entry = self._entries[key]
        from braunet.errors import CheckpointError

        card = entry.card if entry.card is not None else entry.source.card
        try:
            return card.recipe.kind
        except CheckpointError:
            return None

    def describe(self, key: str) -> str:
        """What ``key`` segments, in a few words: the first clause of its card's description."""
        from braunet.errors import CheckpointError

        entry = self._entries[key]
        try:
            card = entry.card if entry.card is not None else entry.source.card
        except CheckpointError:
            return "unreadable model card"
        text = (card.description or "").split(";")[0].strip().rstrip(".")
        return text or f"{', '.join(card.class_names[1:4])}{'...' if len(card.class_names) > 4 else ''}"

    def anchors(self, key: str) -> Path | None:
        """The anchor set fine-tuning ``key`` replays: that of its nearest on-disk ancestor's folder."""
        origin = self._entries[key].origin()
        return origin.source.anchors if origin.source is not None else None

    # -- weights -------------------------------------------------------------------------------
    def load(self, key: str, device: str | None = None) -> tuple[Any, Any]:
        """(model, card) of ``key``; loads the weights on first use (any thread).

        ``device`` ("auto", "cpu", "cuda", "mps") moves the model there; None leaves it where it is
        (the CPU after loading).
        """
        from braunet.infer import resolve_device

        entry = self._entries[key]
        with self._lock:
            if entry.model is None:
                entry.model, entry.card = entry.source.load(device or "cpu")
            elif device is not None:
                entry.model.to(resolve_device(device))
            return entry.model, entry.card

    def preload(self, key: str | None, device: str | None = None) -> threading.Thread | None:
        """Load ``key``'s weights onto ``device`` and run one forward pass, in a background thread; return it.

        Why: a widget's first click paid the load (0.06-0.2 s) and the first forward pass's one-off
        set-up (0.03-0.04 s; bench/bench_latency.py) before anything showed. Once per key, one key at
        a time (browsing the model list on 2 cores queues the loads instead of running them all at
        once); the forward pass holds the weights lock, so a Run cannot move the model meanwhile. A
        model that fails to load is left for the click that needs it to report, in one line.
        """
        if not key or key not in self._entries:
            return None
        with self._preload_lock:
            if key in self._preloads:
                return self._preloads[key]

            def work() -> None:
                import torch

                from braunet.errors import BraunetError

                with _ONE_PRELOAD:
                    try:
                        model, card = self.load(key, device)
                    except BraunetError:
                        return
                    size, channels = card.config.img_size, card.config.in_chans
                    with self._lock, torch.inference_mode():
                        model.eval()(torch.zeros(1, channels, size, size, device=next(model.parameters()).device))

            thread = self._preloads[key] = threading.Thread(target=work, name=f"braunet-preload-{key}", daemon=True)
        thread.start()
        return thread

    def copy_model(self, key: str, device: str = "cpu") -> tuple[Any, Any]:
        """A deep copy of ``key``'s model on ``device`` (training and routing hooks never touch the stored one)."""
        from braunet.infer import resolve_device

        model, card = self.load(key)
        with self._lock:
            return copy.deepcopy(model).to(resolve_device(device)).eval(), card

    def save(self, key: str, root: str | Path | None = None) -> Path:
        """Write ``key``'s version folder under ``root`` (default: the model library) and return it.

        Saved through :func:`braunet.train.versions.save_version`, as ``braunet finetune`` saves;
        the nearest on-disk ancestor's anchor set travels with it. The entry then names its folder
        (``NAME@N`` when saved into the library).
        """
        from braunet.train.versions import save_version
        from braunet.zoo import library_dir, resolve_model

        entry = self._entries[key]
        if entry.model is None:
            raise ValueError(f"{key}: nothing to save, the model was never loaded")
        origin = entry.origin()
        anchors_from = origin.source.folder if origin.source is not None else None
        root = Path(root) if root is not None else library_dir()
        entry.saved_to = Path(save_version(entry.model, entry.card, root, anchors_from=anchors_from))
        in_library = root.expanduser().resolve() == library_dir().resolve()
        entry.source = resolve_model(f"{entry.card.name}@{entry.card.version}" if in_library else entry.saved_to)
        self.changed.emit()
        return entry.saved_to
