"""``braunet models``: list the bundled models and the saved versions of the model library.

Bundled models: name, classes, input, preset, how many subjects / video sequences / images the
model was trained on (marked "(!)" below 5) and metrics, from each card. Saved versions (fine-tuned
with ``braunet finetune`` or the napari Fine-tune widget, or official checkpoints imported in the
Segment widget; ``$BRAUNET_MODELS_DIR``, default ``~/.braunet/models``): the reference that names
them (``NAME@N``, usable as ``--model``), their parent and the held-back Dice of their fine-tune.
"""

from __future__ import annotations

import argparse
import json
import numbers
from typing import Any

__all__ = ["FEW_CASES", "add_parser", "describe", "model_tooltip", "run", "training_seen"]

FEW_CASES = 5  # a model trained on fewer subjects / sequences than this is flagged where users choose it


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the bundled models and saved versions",
                                   description=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--json", action="store_true", help="print one JSON object per model instead of a table")
    parser.set_defaults(run=run)


def _preset_of(card) -> str:
    """The preset a card's architecture was built from (recorded, or found by comparing configs)."""
    from braunet.model import PRESETS

    recorded = card.extra.get("preset") or card.training.get("preset")
    if recorded:
        return str(recorded)
    for name, config in PRESETS.items():
        if config.replace(num_classes=card.config.num_classes) == card.config:
            return name
    return "custom"


def _flat_numbers(data: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(data, numbers.Real) and not isinstance(data, bool):
        return {prefix: float(data)}
    if isinstance(data, dict):
        out: dict[str, float] = {}
        for key, value in data.items():
            out.update(_flat_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {}


def training_seen(card) -> tuple[str, bool]:
    """What a model was trained on, from ``card.training["seen"]`` (``scripts/train_bundled.py`` writes it:
    ``[{"source", "unit", "count", "slices"}]``): e.g. ``("trained on 1 CT subject (54 slices)", True)``.

    The flag is True when a unit that stands for a patient or a video (anything but single images)
    counts fewer than :data:`FEW_CASES`, or when the card does not record its training data. With
    partially labelled training sets, ``card.training["groups_per_class"]`` counts the subjects that
    annotate each class; classes learnt from fewer than :data:`FEW_CASES` are named and flag too.
    """
    seen = card.training.get("seen") if isinstance(card.training, dict) else None
    if not seen:
        return "training data not recorded in its card", True
    units: dict[str, list[int]] = {}  # unit -> [groups, slices]
    for entry in seen:
        total = units.setdefault(str(entry.get("unit", "case")), [0, 0])
        total[0] += int(entry.get("count", 0))
        total[1] += int(entry.get("slices", 0))
    parts = []
    for unit, (count, slices) in units.items():
        text = f"{count} {unit}{'' if count == 1 else 's'}"
        parts.append(text if slices == count else f"{text} ({slices} slices)")
    few = any(count < FEW_CASES for unit, (count, _) in units.items() if unit != "image")
    text = "trained on " + " + ".join(parts)
    per_class = card.training.get("groups_per_class") or {}
    patient_units = [unit for unit in units if unit != "image"]
    if isinstance(per_class, dict) and patient_units:
        sparse: dict[int, list[str]] = {}
        for name, count in per_class.items():
            if int(count) < FEW_CASES:
                sparse.setdefault(int(count), []).append(str(name))
        for count, names in sorted(sparse.items()):
            unit = patient_units[0]
            text += f"; {', '.join(names)} from {count} {unit}{'' if count == 1 else 's'} only"
        few = few or bool(sparse)
    return text, few


def model_tooltip(card) -> str:
    """Rich-text tooltip for a model chooser: description and :func:`training_seen`, in red when few."""
    import html

    seen, few = training_seen(card)
    seen = html.escape(seen)
    line = f'<b style="color:#d43">{seen}: expect it to fail on other patients or sites</b>' if few else seen
    return f"{html.escape(card.description or card.name)}<br>{line}"


def describe(name: str, card) -> dict[str, Any]:
    """The summary of one model card that ``braunet models`` prints."""
    seen, few = training_seen(card)
    return {
        "name": name,
        "classes": card.class_names,
        "input": f"{card.recipe.kind} {card.config.img_size}px",
        "preset": _preset_of(card),
        "trained_on": seen,
        "few_cases": few,
        "metrics": _flat_numbers(card.metrics),
        "description": card.description,
    }


def describe_version(source) -> dict[str, Any]:
    """The summary of one saved version (a :class:`braunet.zoo.ModelSource` of kind "version")."""
    tuned = source.card.metrics.get("finetune") or {}
    return {
        **describe(source.name, source.card), "ref": source.ref, "version": source.version,
        "parent": source.parent, "folder": str(source.folder),
        "heldout_dice_before": tuned.get("heldout_dice_before"), "heldout_dice_after": tuned.get("heldout_dice_after"),
    }


def _metrics_text(metrics: dict[str, float], limit: int = 4) -> str:
    """The summary figures (keys whose last part starts with "mean"), else the first few; --json has all."""
    means = {k: v for k, v in metrics.items() if k.rsplit(".", 1)[-1].startswith("mean")}
    items = [f"{key}={value:.3g}" for key, value in (means or metrics).items()]
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "") or "-"


def _print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])


def _classes_text(names: list[str]) -> str:
    classes = names[1:] if len(names) > 1 else names
    return f"{len(classes)}: " + ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")


def _dice_text(row: dict[str, Any]) -> str:
    before, after = row["heldout_dice_before"], row["heldout_dice_after"]
    return "-" if before is None or after is None else f"{before:.3f} -> {after:.3f}"


def run(args: argparse.Namespace) -> int:
    from braunet.errors import BraunetError
    from braunet.zoo import bundled_dir, library_dir, list_models, list_versions, resolve_model

    rows = []
    for name in list_models():
        try:
            rows.append(describe(name, resolve_model(name).card))
        except BraunetError as error:  # reason: one broken card must not hide the other models
            rows.append({"name": name, "error": str(error)})
    versions = [describe_version(source) for source in list_versions()]
    if args.json:
        for row in rows + versions:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"no bundled models in {bundled_dir()}")
    else:
        table = [("NAME", "CLASSES", "INPUT", "PRESET", "METRICS")]
        for row in rows:
            if "error" in row:
                table.append((row["name"], "-", "-", "-", f"unreadable: {row['error']}"))
                continue
            seen = ("(!) " if row["few_cases"] else "") + row["trained_on"]
            table.append((row["name"], _classes_text(row["classes"]), row["input"], row["preset"],
                          f"{seen}; {_metrics_text(row['metrics'])}"))
        _print_table(table)
    if versions:
        print(f"\nsaved versions in {library_dir()}:")
        table = [("NAME", "PARENT", "CLASSES", "INPUT", "HELD-BACK DICE")]
        for row in versions:
            table.append((row["ref"], row["parent"] or "-", _classes_text(row["classes"]), row["input"],
                          _dice_text(row)))
        _print_table(table)
    return 0
