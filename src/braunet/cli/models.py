"""``braunet models``: list the bundled models (name, classes, input, preset, metrics from each card)."""

from __future__ import annotations

import argparse
import json
import numbers
from typing import Any

__all__ = ["add_parser", "describe", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the bundled models", description=__doc__)
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


def describe(name: str, card) -> dict[str, Any]:
    """The summary of one model card that ``braunet models`` prints."""
    return {
        "name": name,
        "classes": card.class_names,
        "input": f"{card.recipe.kind} {card.config.img_size}px",
        "preset": _preset_of(card),
        "metrics": _flat_numbers(card.metrics),
        "description": card.description,
    }


def _metrics_text(metrics: dict[str, float], limit: int = 4) -> str:
    """The summary figures (keys whose last part starts with "mean"), else the first few; --json has all."""
    means = {k: v for k, v in metrics.items() if k.rsplit(".", 1)[-1].startswith("mean")}
    items = [f"{key}={value:.3g}" for key, value in (means or metrics).items()]
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "") or "-"


def run(args: argparse.Namespace) -> int:
    from braunet.errors import BraunetError
    from braunet.zoo import list_models, model_card, models_dir

    rows = []
    for name in list_models():
        try:
            rows.append(describe(name, model_card(name)))
        except BraunetError as error:  # reason: one broken card must not hide the other models
            rows.append({"name": name, "error": str(error)})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"no bundled models in {models_dir()}")
        return 0
    table = [("NAME", "CLASSES", "INPUT", "PRESET", "METRICS")]
    for row in rows:
        if "error" in row:
            table.append((row["name"], "-", "-", "-", f"unreadable: {row['error']}"))
            continue
        classes = row["classes"][1:] if len(row["classes"]) > 1 else row["classes"]
        shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
        table.append((row["name"], f"{len(classes)}: {shown}", row["input"], row["preset"], _metrics_text(row["metrics"])))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths)) + "  " + r[4])
    return 0
