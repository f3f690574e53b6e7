"""Capture where every bi-level routing attention sends each query window.

Usage::

    with record_routing(model) as routes:
        model(x)
    routes[0].name, routes[0].indices  # 'stages.0.0.attn', (B, n_win**2, topk) int64

Recording is off by default and costs one ``is None`` check per BRA call when off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from braunet.model.bra import BiLevelRoutingAttention, RouteRecord

__all__ = ["RouteRecord", "record_routing"]


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
