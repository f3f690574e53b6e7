"""Named training recipes: the official BRAU-Net++ protocols as data (``recipes/*.json``).

A recipe is one JSON file that says everything the official scripts hard-code: the architecture
preset, data format, optimiser, learning-rate schedule, batch size, epochs, loss, augmentation,
split, evaluation schedule and model selection, plus two fields for people: ``paper`` (the numbers
the run should reproduce) and ``deviations`` (where ours differs from the official code, and why).
:mod:`braunet.repro.runner` executes it.

The bundled recipes live in the repository's ``recipes/`` folder (``braunet/recipes`` in the
installed package): ``synapse``, ``synapse-nosccsa``, ``isic`` and ``cvc``. A path to any JSON file
of the same shape works too, and :meth:`TrainingProtocol.with_overrides` changes fields for a run
(``{"epochs": 2, "model.preset": "tiny"}``), which is how the tests run them at toy scale.

Example::

    from braunet.repro.recipes import load_recipe
    recipe = load_recipe("synapse").with_overrides({"epochs": 2, "batch_size": 4, "model.preset": "tiny"})
    recipe.model_config()          # BRAUNetConfig(img_size=128, num_classes=9, ...)
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from braunet.errors import InputError

__all__ = ["RECIPES_DIR_ENV", "TrainingProtocol", "list_recipes", "load_recipe", "recipes_dir"]

RECIPES_DIR_ENV = "BRAUNET_RECIPES_DIR"

# Allowed values of the fields the runner switches on; anything else is a typo in a recipe file.
_CHOICES = {
    "data.kind": ("transunet", "folders"),
    "data.preprocessing": ("ct", "rgb"),
    "optimizer.name": ("sgd", "adam"),
    "schedule.name": ("poly", "cosine"),
    "loss.name": ("dice_ce", "soft_dice"),
    "augmentation.name": ("missformer", "transunet", "albumentations_isic", "none"),
    "evaluation.protocol": ("synapse", "binary"),
    "keep": ("last", "best_val_loss"),
}
_REQUIRED = ("name", "model", "data", "optimizer", "schedule", "batch_size", "epochs", "loss", "augmentation",
             "evaluation", "keep", "seed", "deviations")


def recipes_dir() -> Path:
    """The folder of the bundled recipes (``$BRAUNET_RECIPES_DIR`` if set)."""
    override = os.environ.get(RECIPES_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(str(resources.files("braunet") / "recipes"))


def list_recipes() -> list[str]:
    """Names of the bundled recipes, sorted."""
    folder = recipes_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def _get(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True)
class TrainingProtocol:
    """A validated recipe: a training protocol (not the preprocessing recipe of
    :mod:`braunet.infer.preprocess`). ``data`` is the parsed JSON; accessors give typed views of it.

    Attributes:
        data: the recipe dictionary (see ``recipes/synapse.json`` for every field).
        source: file it came from (for error messages and the model card).
    """

    data: dict[str, Any]
    source: str = "<dict>"

    def __post_init__(self) -> None:
        missing = [k for k in _REQUIRED if k not in self.data]
        if missing:
            raise InputError(f"{self.source}: recipe lacks the fields {missing}")
        for field, allowed in _CHOICES.items():
            value = _get(self.data, field)
            if value not in allowed:
                raise InputError(f"{self.source}: {field} = {value!r} is not one of {', '.join(allowed)}")
        for field in ("batch_size", "epochs"):
            if not isinstance(self.data[field], int) or self.data[field] < 1:
                raise InputError(f"{self.source}: {field} must be a positive integer, got {self.data[field]!r}")
        if self.data["data"]["kind"] == "folders" and not isinstance(self.data.get("split"), dict):
            raise InputError(f"{self.source}: a recipe on image folders needs a 'split' object")
        names = self.data["data"].get("class_names")
        if not isinstance(names, list) or len(names) < 2:
            raise InputError(f"{self.source}: data.class_names must list at least 2 names (background first)")
        try:
            config = self.model_config()
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{self.source}: model: {error} (needs 'preset' and 'num_classes')") from None
        if max(config.num_classes, 2) != len(names):
            raise InputError(
                f"{self.source}: {len(names)} class names for a model with {config.num_classes} output channel(s)"
            )

    # -- access -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.data["name"])

    def __getitem__(self, key: str) -> Any:
        """``recipe["optimizer.lr"]``: a (dotted) field, or KeyError."""
        value = _get(self.data, key)
        if value is None:
            raise KeyError(f"{self.source}: recipe has no field {key!r}")
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = _get(self.data, key)
        return default if value is None else value

    def model_config(self):  # -> BRAUNetConfig
        """The architecture: ``model.preset`` with ``model.num_classes`` and ``model.overrides``."""
        from braunet.model import get_preset

        model = self.data["model"]
        overrides = {"num_classes": int(model["num_classes"]), **(model.get("overrides") or {})}
        return get_preset(str(model["preset"]), **overrides)

    def preprocessing(self) -> dict[str, Any]:
        """The card's preprocessing recipe (the official one of the data kind)."""
        from braunet.infer.preprocess import official_preprocessing

        return official_preprocessing(self.data["data"]["preprocessing"])

    # -- changes ----------------------------------------------------------------------------

    def with_overrides(self, overrides: dict[str, Any]) -> TrainingProtocol:
        """A copy with dotted fields replaced, e.g. ``{"epochs": 2, "optimizer.lr": 0.01}``.

        The changes are recorded under ``overrides`` so the model card shows how the run differs
        from the named recipe.
        """
        data = copy.deepcopy(self.data)
        for dotted, value in overrides.items():
            parts = dotted.split(".")
            node = data
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[parts[-1]] = value
        data.setdefault("overrides", {}).update(overrides)
        return TrainingProtocol(data, self.source)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)


def load_recipe(name_or_path: str | os.PathLike) -> TrainingProtocol:
    """Load a bundled recipe by name (``"synapse"``) or any recipe JSON file by path.

    Raises:
        InputError: unknown name, unreadable file or an invalid recipe (naming the file and field).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not (path.suffix == ".json" or path.exists()):
        path = recipes_dir() / f"{text}.json"
        if not path.is_file():
            known = ", ".join(list_recipes()) or "none found"
            raise InputError(f"unknown recipe {text!r}; bundled recipes: {known} (or give a .json path)")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable JSON recipe ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe must be a JSON object")
    return TrainingProtocol(data, str(path))
