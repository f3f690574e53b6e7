"""Our checkpoint format: a folder with ``model.safetensors`` (weights) and ``card.json`` (everything else).

safetensors holds only tensors, so loading never executes code. The card says what the weights are
(architecture config, class names and colours, the preprocessing the model was trained with),
where they come from (training data and licences, command, hardware, parent version) and how
good they are (metrics). The loader checks that card and weights agree before building the model.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from braunet._atomic import atomic_path
from braunet.errors import CheckpointError
from braunet.model.braunet import BRAUNet
from braunet.model.config import BRAUNetConfig

if TYPE_CHECKING:
    from braunet.infer.preprocess import Recipe

__all__ = [
    "CARD_FILE", "FORMAT", "WEIGHTS_FILE", "ModelCard", "check_finite", "load_checkpoint", "read_card", "save_checkpoint",
    "write_card",
]

FORMAT = "braunet-checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


@dataclass
class ModelCard:
    """Metadata stored beside the weights.

    ``preprocessing`` is the recipe :mod:`braunet.infer` applies before the network, e.g.
    ``{"kind": "ct", "clip_hu": [-125, 275], "mean": 0.5, "std": 0.5}`` or
    ``{"kind": "rgb", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}``;
    :attr:`recipe` is that dict parsed and checked, which is what code reads.
    """

    name: str
    config: BRAUNetConfig
    class_names: list[str]  # index = label value; 0 is background for multi-class models
    preprocessing: dict[str, Any]
    class_colors: list[str] = field(default_factory=list)  # "#rrggbb" per class, may be empty
    description: str = ""
    version: int = 1
    parent: str | None = None  # name/version (or folder) this model was fine-tuned from
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    package_version: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)  # e.g. converted from which official file
    training: dict[str, Any] = field(default_factory=dict)  # data, licences, command, time, hardware
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.package_version:
            from braunet import __version__

            self.package_version = __version__
        expected = max(self.config.num_classes, 2)  # a 1-logit binary model still names 2 classes
        if len(self.class_names) != expected:
            raise CheckpointError(
                f"model card {self.name!r}: {len(self.class_names)} class names for a model with "
                f"{self.config.num_classes} output channel(s) (expected {expected})"
            )

    @functools.cached_property
    def recipe(self) -> Recipe:
        """The preprocessing recipe, parsed once (:func:`braunet.infer.parse_preprocessing`).

        Raises:
            CheckpointError: the recipe is invalid (the message names the model and the field).
        """
        from braunet.infer.preprocess import parse_preprocessing  # reason: braunet.infer imports this module

        return parse_preprocessing(self.preprocessing, f"model {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["config"] = self.config.to_dict()
        return {"format": FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Any, source: str = "card.json") -> ModelCard:
        """Parse a card's JSON data, checking the type of every field it has.

        Raises:
            CheckpointError: not a JSON object, not our format, a missing or mistyped field, or
                an invalid architecture config (the message names ``source`` and the field).
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: not a napari-braunet model card (a JSON {_json_type(data)}, not an object)")
        data = dict(data)
        if data.pop("format", None) != FORMAT:
            raise CheckpointError(f"{source}: not a napari-braunet model card (missing format {FORMAT!r})")
        missing = [name for name in ("name", "config", "class_names", "preprocessing") if name not in data]
        if missing:
            raise CheckpointError(f"{source}: invalid model card (missing {', '.join(missing)})")
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        for name, value in data.items():
            check, expected = _CARD_FIELDS.get(name, (None, ""))
            if check is not None and not check(value):
                raise CheckpointError(f"{source}: invalid model card ({name} must be {expected}, got {_shown(value)})")
        try:
            data["config"] = BRAUNetConfig.from_dict(data["config"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: invalid model card ({error})") from None
        try:
            return cls(**data)
        except CheckpointError as error:  # the class names do not fit the config
            raise CheckpointError(f"{source}: {error}") from None


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), (int, "number"), (float, "number"))
    return "null" if value is None else next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def _shown(value: Any) -> str:
    """A short rendering of a JSON value for a one-line message."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else ""
    return text if text and len(text) <= 40 else f"a JSON {_json_type(value)}"


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


# The JSON type of every card field but ``config`` (checked by BRAUNetConfig.from_dict), so a card
# edited by hand fails while loading, naming the field, not later inside the engine or napari.
_CARD_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(v.strip()) and v.isprintable(), "a non-empty one-line string"),
    "class_names": (_is_str_list, "an array of strings"),
    "preprocessing": (_is_object, "an object"),
    "class_colors": (_is_str_list, "an array of strings"),
    "description": (lambda v: isinstance(v, str), "a string"),
    "version": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "parent": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "created": (lambda v: isinstance(v, str), "a string"),
    "package_version": (lambda v: isinstance(v, str), "a string"),
    "provenance": (_is_object, "an object"),
    "training": (_is_object, "an object"),
    "metrics": (_is_object, "an object"),
    "extra": (_is_object, "an object"),
}


def save_checkpoint(model: BRAUNet, card: ModelCard, folder: str | os.PathLike, *, half: bool = False) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/card.json`` (each atomically); return folder.

    ``half=True`` stores floating-point weights as float16 (half the size, for the bundled models),
    except tensors with values float16 cannot hold (beyond +-65504: e.g. the BatchNorm running
    variance of a layer with large activations), which stay float32 rather than become infinite;
    loading always gives a float32 model, because ``load_state_dict`` casts into its parameters.
    """
    folder = Path(folder)
    if card.config != model.config:
        raise CheckpointError(f"{folder}: card config differs from the model's config")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: _stored(v.detach().to("cpu"), half).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "name": card.name})
    write_card(card, folder)
    return folder


def _stored(tensor: torch.Tensor, half: bool) -> torch.Tensor:
    """``tensor`` as saved: float16 when ``half`` and every value survives the cast, else unchanged.

    A tensor that is already non-finite is halved all the same: the loader then refuses it as corrupt.
    """
    if not (half and tensor.is_floating_point()):
        return tensor
    small = tensor.to(torch.float16)
    return small if bool(torch.isfinite(small).all()) or not bool(torch.isfinite(tensor).all()) else tensor


def write_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write ``folder/card.json`` atomically (the card alone, e.g. after recording a check); return its path."""
    path = Path(folder) / CARD_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    return path


def read_card(folder: str | os.PathLike) -> ModelCard:
    """The card of a model folder, parsed and checked (:meth:`ModelCard.from_dict`).

    Raises:
        CheckpointError: no card, unreadable or invalid JSON, or an invalid card; one line naming the file.
    """
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a napari-braunet model folder (no {CARD_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: not valid JSON ({_first_line(error)})") from None
    return ModelCard.from_dict(data, str(path))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinite values.

    reason: such a network runs without error and turns every input into one class (an all-background
    map with exit 0), so the file must fail where it is read, naming the tensor.

    Raises:
        CheckpointError: naming ``source``, the first bad tensor and how many values are not finite.
    """
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise CheckpointError(
                    f"{source}: tensor {key} holds {bad} NaN or infinite value(s) of {tensor.numel()}; "
                    "the weights are corrupt (a diverged training run?)"
                )


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[BRAUNet, ModelCard]:
    """Load a checkpoint folder; the model is in eval mode on ``device``.

    Raises:
        CheckpointError: missing files, invalid card, weights that do not match the card or that
            hold NaN or infinite values.
    """
    from braunet.model.official import load_state_dict_strict

    folder = Path(folder)
    card = read_card(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing")
    try:
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: unreadable weights ({_first_line(error)})") from None
    check_finite(state_dict, str(weights))
    model = BRAUNet(card.config)
    load_state_dict_strict(model, state_dict, f"{weights} (card says {card.name})")
    return model.to(device).eval(), card
