"""Property-based fuzzing of the files in a model folder and of the training state file (hypothesis).

The contract for every input drawn: the loader returns a usable result (a loaded model, an anchor
set, a state dict) or raises one :class:`~braunet.errors.CheckpointError` whose message is one line
naming the file; nothing in the folder is modified. Drawn inputs: random ``card.json`` contents and
types (whole card, one field, one config field, raw bytes), truncated or byte-flipped
``model.safetensors``, ``anchors.npz`` and ``train_state.pt``.

The example count is small by default so the suite takes seconds in the normal test run; set
``BRAUNET_FUZZ_EXAMPLES`` (e.g. 2000) to run it longer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braunet.classes import LESION_CLASSES
from braunet.errors import CheckpointError
from braunet.infer import official_preprocessing
from braunet.model import BRAUNet, ModelCard, get_preset, load_checkpoint, save_checkpoint
from braunet.model.checkpoint import CARD_FILE, WEIGHTS_FILE
from braunet.train.anchors import load_anchors
from braunet.train.loop import STATE_FILE, _read_state
from braunet.zoo import ANCHORS_FILE, bundled_dir

EXAMPLES = int(os.environ.get("BRAUNET_FUZZ_EXAMPLES", "15"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize="BRAUNET_FUZZ_EXAMPLES" not in os.environ,  # reason: the same examples in every CI run
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip

# JSON values of every type, nested a little; small integers so that a drawn config stays buildable.
_SCALARS = (
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)  # fmt: skip
JSON = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A tiny binary model folder (random weights) with the bundled polyp anchor set beside it."""
    torch.manual_seed(0)
    config = get_preset("tiny", num_classes=1)
    card = ModelCard(name="fuzz", config=config, class_names=list(LESION_CLASSES),
                     preprocessing=official_preprocessing("rgb"))  # fmt: skip
    folder = save_checkpoint(BRAUNet(config).eval(), card, tmp_path_factory.mktemp("fuzz") / "model")
    shutil.copy(bundled_dir() / "polyp" / ANCHORS_FILE, folder / ANCHORS_FILE)
    return folder


@pytest.fixture(scope="module")
def state_file(template, tmp_path_factory) -> Path:
    """A real ``train_state.pt`` as :func:`braunet.train.loop.fit` writes it (model, AdamW, counters)."""
    model, _ = load_checkpoint(template)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.rand(1, 3, 128, 128)).sum().backward()
    opt.step()
    path = tmp_path_factory.mktemp("state") / STATE_FILE
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": {},
                "rng": {"cpu": torch.get_rng_state()}, "epoch": 1, "step": 3, "batch": 0, "elapsed": 2.5,
                "best_epoch": 0, "best_score": 0.4, "history": [{"epoch": 0, "loss": 1.0}], "epoch_losses": []},
               path)  # fmt: skip
    return path


@contextmanager
def _copy(folder: Path) -> Iterator[Path]:
    """A fresh copy of ``folder`` per example (pytest's tmp_path is shared by all examples of a test)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / folder.name
        if folder.is_dir():
            shutil.copytree(folder, target)
        else:
            shutil.copy(folder, target)
        yield target


def _digests(path: Path) -> dict[str, str]:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def _holds_contract(load: Callable[[], Any], names: Path, watched: Path) -> Any:
    """Run ``load``: a result, or one CheckpointError line naming ``names``; ``watched`` unchanged."""
    before = _digests(watched)
    try:
        result = load()
    except CheckpointError as error:
        message = str(error)
        assert "\n" not in message and "\r" not in message, message
        assert str(names) in message, message
        result = None
    assert _digests(watched) == before, "the loader modified its input"
    return result


def _damage(data: bytes, cut: int | None, flips: list[tuple[int, int]]) -> bytes:
    """``data`` truncated to ``cut`` bytes (None: whole) and with ``(position, byte)`` overwritten."""
    out = bytearray(data if cut is None else data[: cut % (len(data) + 1)])
    for position, value in flips:
        if out:
            out[position % len(out)] = value
    return bytes(out)


DAMAGE = st.tuples(st.none() | st.integers(0, 2**31), st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)),
                                                                 max_size=8))  # fmt: skip


def _check_model(folder: Path) -> None:
    result = _holds_contract(lambda: load_checkpoint(folder), folder, folder)
    if result is not None:
        model, card = result
        assert isinstance(model, BRAUNet) and isinstance(card, ModelCard)
        assert all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())


@FUZZ
@given(card=JSON)
def test_any_json_as_the_card(template, card):
    with _copy(template) as folder:
        (folder / CARD_FILE).write_text(json.dumps(card))
        _check_model(folder)


@FUZZ
@given(data=st.data())
def test_one_card_field_replaced_or_removed(template, data):
    with _copy(template) as folder:
        card = json.loads((folder / CARD_FILE).read_text())
        section = data.draw(st.sampled_from(["card", "config"]))
        target = card if section == "card" else card["config"]
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()):
            target[key] = data.draw(JSON)
        else:
            del target[key]
        (folder / CARD_FILE).write_text(json.dumps(card))
        _check_model(folder)


@FUZZ
@given(damage=DAMAGE)
def test_card_bytes_truncated_or_flipped(template, damage):
    with _copy(template) as folder:
        path = folder / CARD_FILE
        path.write_bytes(_damage(path.read_bytes(), *damage))
        _check_model(folder)


@FUZZ
@given(damage=DAMAGE)
def test_weights_truncated_or_flipped(template, damage):
    with _copy(template) as folder:
        path = folder / WEIGHTS_FILE
        path.write_bytes(_damage(path.read_bytes(), *damage))
        _check_model(folder)


@FUZZ
@given(damage=DAMAGE)
def test_anchor_set_truncated_or_flipped(template, damage):
    with _copy(template) as folder:
        path = folder / ANCHORS_FILE
        path.write_bytes(_damage(path.read_bytes(), *damage))
        anchors = _holds_contract(lambda: load_anchors(folder), path, folder)
        if anchors is not None:
            assert len(anchors) > 0 and all(label.ndim == 2 for label in anchors.labels)


@FUZZ
@given(damage=DAMAGE, extra=st.none() | st.tuples(st.sampled_from(["epoch", "model", "optimizer", "history"]), JSON))
def test_state_file_truncated_flipped_or_mistyped(state_file, damage, extra):
    with _copy(state_file) as path:
        if extra is not None:
            saved = torch.load(path, weights_only=True)
            saved[extra[0]] = extra[1]
            torch.save(saved, path)
        path.write_bytes(_damage(path.read_bytes(), *damage))
        saved = _holds_contract(lambda: _read_state(path, {}), path, path)
        if saved is not None:
            assert isinstance(saved["model"], dict) and "optimizer" in saved
