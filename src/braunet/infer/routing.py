"""The routing of a model over slices of an image or volume, headless (what the routing explorer exports)::

    from braunet.infer.routing import route_volume
    from braunet.model.routing import save_routing

    blocks = route_volume(model, card, volume, slices=[95])  # {block: BlockRouting}, S = 1 slice
    save_routing("ct_routing", blocks, about={"model": card.name, "slices": [95]})

The slices are prepared exactly as for segmentation (:class:`~braunet.infer.SliceRunner` with
``card.recipe``: window, resize, the model's slice view), so the routing is that of the network
input a prediction of those slices uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from braunet.infer.slices import SliceRunner, stop_check
from braunet.infer.views import to_view, view_spacing
from braunet.io import Volume, to_canonical
from braunet.model.routing import BlockRouting, record_routing, stack_routing

__all__ = ["route_slices", "route_volume"]


def route_slices(model: Any, card: Any, raw: np.ndarray, *, batch_size: int = 4,
                 progress: Callable[..., None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 spacing: tuple[float, float] | None = None) -> dict[str, BlockRouting]:  # fmt: skip
    """Raw slices in the model's view, (S, H, W) HU or (S, H, W, 3) RGB -> one BlockRouting per block (S images).

    Runs on the model's device (move it first); ``progress(done, total)`` after each batch;
    ``should_stop()`` is checked between batches (raises :class:`braunet.errors.Cancelled`).
    ``spacing``: the slices' pixel size (rows, cols) in mm, needed by a ``spacing_mm`` recipe.
    """
    runner = SliceRunner(model, card.recipe, card.config.img_size, card.config.num_classes, amp=False,
                         tta=False)  # reason: one recorded forward pass per slice
    stop = stop_check(should_stop)
    raw = np.asarray(raw)
    with record_routing(model) as recorded:
        for start in range(0, len(raw), batch_size):
            if stop():
                from braunet.errors import Cancelled

                raise Cancelled("routing export cancelled")
            runner.logits(runner.prepare(raw[start : start + batch_size], spacing))
            if progress is not None:
                progress(min(start + batch_size, len(raw)), len(raw))
        return stack_routing(recorded)


def route_volume(model: Any, card: Any, volume: Volume, slices: Sequence[int] | None = None,
                 **kwargs: Any) -> dict[str, BlockRouting]:  # fmt: skip
    """The routing of axial ``slices`` (canonical k; all by default) of a 3-D volume, or of a 2-D image.

    Keyword arguments go to :func:`route_slices`.
    """
    if volume.is_2d:
        return route_slices(model, card, np.asarray(volume.array)[None], **kwargs)
    canonical, reorientation = to_canonical(volume)
    ks = range(canonical.shape[2]) if slices is None else slices
    spacing = view_spacing(reorientation.canonical_affine, card.recipe.view)
    return route_slices(model, card, to_view(canonical, ks, card.recipe.view), spacing=spacing, **kwargs)
