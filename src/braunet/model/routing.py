"""Capture where every bi-level routing attention sends each query window, and save it for analysis.

Usage::

    with record_routing(model) as routes:
        model(x)
    routes[0].name, routes[0].indices  # 'stages.0.0.attn', (B, n_win**2, topk) int64
    routes[0].logits                   # (B, n_win**2, n_win**2) region-to-region routing scores

    blocks = stack_routing(routes)     # {block name: BlockRouting}, NumPy, batches concatenated
    save_routing("slice95", blocks, about={"model": "ct-abdomen-8", "slices": [95]})
    blocks, about = load_routing("slice95")  # slice95.npz + slice95.json

Recording is off by default and costs one ``is None`` check per BRA call when off.

Windows are numbered ``p = row * n_win + col`` (row-major) on the network input: window
``(row, col)`` covers input pixels ``[row * S / n_win, (row + 1) * S / n_win)`` (S = img_size)
vertically and likewise horizontally, at every stage (the map of a deeper stage is smaller, its
windows cover the same part of the input).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from braunet.model.bra import BiLevelRoutingAttention, RouteRecord

__all__ = ["BlockRouting", "RouteRecord", "load_routing", "record_routing", "routed_jaccard", "save_routing",
           "stack_routing"]  # fmt: skip

FORMAT = "braunet-routing/1"
GRID_TEXT = ("window p = row * n_win + col (row-major) of the network input; window (row, col) covers input "
             "pixels [row * img_size / n_win, (row + 1) * img_size / n_win) by [col * ..., (col + 1) * ...)")  # fmt: skip
_ARRAYS = ("indices", "weights", "logits")


@contextlib.contextmanager
def record_routing(model: nn.Module) -> Iterator[list[RouteRecord]]:
    """Yield a list that fills with one :class:`RouteRecord` per BRA call, in execution order."""
    routes: list[RouteRecord] = []
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, BiLevelRoutingAttention)]
    if not modules:
        raise ValueError(f"record_routing: {type(model).__name__} has no bi-level routing attention module")
    for name, module in modules:
        module._routing_sink, module._routing_name = routes, name
    try:
        yield routes
    finally:
        for _, module in modules:
            module._routing_sink = None


@dataclass(frozen=True)
class BlockRouting:
    """The routing of one BRA block over a stack of S images (slices), as NumPy arrays.

    Attributes:
        name, n_win, map_size: as in :class:`RouteRecord`.
        indices: (S, n_win**2, topk) int64, routed key windows of each query window, best first.
        weights: (S, n_win**2, topk) float32, softmax over the routed windows' scores.
        logits: (S, n_win**2, n_win**2) float32, every query window's score for every key window.
    """

    name: str
    n_win: int
    map_size: tuple[int, int]
    indices: np.ndarray
    weights: np.ndarray
    logits: np.ndarray

    @property
    def topk(self) -> int:
        return int(self.indices.shape[-1])


def _numpy(tensor: torch.Tensor, integer: bool) -> np.ndarray:
    cpu = tensor.detach().cpu()
    return (cpu.long() if integer else cpu.float()).numpy()  # float32 also for bfloat16 (autocast) scores


def stack_routing(routes: Sequence[RouteRecord]) -> dict[str, BlockRouting]:
    """Records of one or more forward passes -> one :class:`BlockRouting` per block, in model order.

    Records of the same block (one per batch) are concatenated along the image axis in the order
    they were recorded, so batches run one after another give the slices in order.
    """
    parts: dict[str, list[RouteRecord]] = {}
    for route in routes:
        parts.setdefault(route.name, []).append(route)
    blocks = {}
    for name, records in parts.items():
        first = records[0]
        arrays = {key: np.concatenate([_numpy(getattr(r, key), key == "indices")
                                       for r in records]) for key in _ARRAYS}  # fmt: skip
        blocks[name] = BlockRouting(name, first.n_win, tuple(first.map_size), **arrays)  # type: ignore[arg-type]
    return blocks


def _paths(path: str | PathLike) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".npz", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def save_routing(path: str | PathLike, blocks: Mapping[str, BlockRouting],
                 about: Mapping[str, Any] | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Write ``<path>.npz`` (arrays) and ``<path>.json`` (what they are); return both paths.

    The NPZ holds ``b<i>_indices``, ``b<i>_weights`` and ``b<i>_logits`` for block ``i`` of the JSON's
    ``blocks`` list (names, n_win, map size, top-k, array shapes), so NumPy alone reads it back; the
    JSON also carries ``about`` (model, image, slices...) and the window-grid convention.
    """
    from braunet._atomic import write_atomically

    npz, sidecar = _paths(path)
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for i, block in enumerate(blocks.values()):
        for key in _ARRAYS:
            arrays[f"b{i}_{key}"] = getattr(block, key)
        entries.append({"index": i, "name": block.name, "n_win": block.n_win, "map_size": list(block.map_size),
                        "topk": block.topk, "images": int(block.indices.shape[0]),
                        "arrays": {key: f"b{i}_{key}" for key in _ARRAYS}})  # fmt: skip
    document = {"format": FORMAT, **(about or {}), "grid": GRID_TEXT, "blocks": entries}
    write_atomically(npz, lambda tmp: _savez(tmp, arrays))
    text = json.dumps(document, indent=2) + "\n"

    def write_json(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    write_atomically(sidecar, write_json)
    return npz, sidecar


def _savez(path: Path, arrays: dict[str, Any]) -> None:
    with open(path, "wb") as handle:  # reason: a file object keeps np.savez from appending ".npz" to the temp name
        np.savez_compressed(handle, **arrays)


def load_routing(path: str | PathLike) -> tuple[dict[str, BlockRouting], dict[str, Any]]:
    """Read what :func:`save_routing` wrote (``path`` with or without ``.npz``/``.json``): blocks and the JSON."""
    npz, sidecar = _paths(path)
    document = json.loads(sidecar.read_text(encoding="utf-8"))
    blocks = {}
    with np.load(npz) as arrays:
        for entry in document["blocks"]:
            data = {key: arrays[name] for key, name in entry["arrays"].items()}
            blocks[entry["name"]] = BlockRouting(entry["name"], int(entry["n_win"]), tuple(entry["map_size"]), **data)
    return blocks, document


def routed_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Overlap of two routings of the same windows: ``|A ∩ B| / |A ∪ B|`` of the routed sets.

    a, b: (..., topk) routed window indices (e.g. ``BlockRouting.indices`` of two model versions,
    or one query window's row) -> (...) float, 1 where both route to the same windows (in any order).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape[:-1] != b.shape[:-1]:
        raise ValueError(f"routed_jaccard: shapes {a.shape} and {b.shape} do not cover the same query windows")
    common = (a[..., :, None] == b[..., None, :]).any(axis=-1).sum(axis=-1)
    return common / (a.shape[-1] + b.shape[-1] - common)
