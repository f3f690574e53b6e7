"""CT window presets (level/width in Hounsfield units) for display and for model preprocessing.

A window maps HU in ``[level - width/2, level + width/2]`` linearly onto ``[0, 1]`` and clips the
rest. The clinical presets follow the usual radiology values (Radiopaedia, "Windowing (CT)");
``synapse`` is the fixed HU range of the official BRAU-Net++/TransUNet Synapse preprocessing
(clip to [-125, 275]), written as a window so that a model card can name it.

napari: ``layer.contrast_limits = get_window("liver").limits``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["WINDOWS", "Window", "apply_window", "get_window", "list_windows"]


@dataclass(frozen=True)
class Window:
    """A CT display window. ``level`` is the centre and ``width`` the span, both in HU."""

    name: str
    level: float
    width: float
    description: str = ""

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(f"window {self.name!r}: width must be positive, got {self.width}")

    @property
    def limits(self) -> tuple[float, float]:
        """(lowest, highest) HU shown, e.g. (-160.0, 240.0) for level 40 / width 400."""
        return (self.level - self.width / 2, self.level + self.width / 2)


WINDOWS: dict[str, Window] = {
    w.name: w
    for w in (
        Window("abdomen", 50, 400, "abdominal soft tissue and organs"),
        Window("liver", 30, 150, "narrow window for liver lesions"),
        Window("lung", -600, 1500, "lung parenchyma"),
        Window("bone", 400, 1800, "bone and calcification"),
        Window("soft_tissue", 40, 350, "mediastinal/soft tissue"),
        Window("brain", 40, 80, "brain parenchyma"),
        Window("synapse", 75, 400, "official Synapse training range, HU clipped to [-125, 275]"),
    )
}


def list_windows() -> list[str]:
    return list(WINDOWS)


def get_window(name: str) -> Window:
    """Look up a preset; ``"soft tissue"`` and ``"Soft-Tissue"`` find ``soft_tissue``."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    try:
        return WINDOWS[key]
    except KeyError:
        raise ValueError(f"unknown CT window {name!r}; known windows: {', '.join(WINDOWS)}") from None


def apply_window(hu: np.ndarray, window: Window | str | tuple[float, float]) -> np.ndarray:
    """HU array of any shape -> float32 in [0, 1] (``window`` a Window, a preset name or (low, high) HU)."""
    if isinstance(window, str):
        window = get_window(window)
    low, high = window.limits if isinstance(window, Window) else (float(window[0]), float(window[1]))
    if not high > low:
        raise ValueError(f"window ({low}, {high}): the upper limit must exceed the lower one")
    out = np.clip(np.asarray(hu, dtype=np.float32), low, high)
    out -= np.float32(low)
    out /= np.float32(high - low)
    return out
