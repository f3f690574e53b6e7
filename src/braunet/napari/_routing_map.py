"""Where a BRA window lies on a displayed slice, and which window a displayed pixel belongs to (pure NumPy).

Three coordinate frames, all in pixel-centre coordinates (pixel ``p`` covers ``[p - 0.5, p + 0.5]``):

* **display**: a slice of the layer array, ``(H_d, W_d)`` (for volumes the radiological view of the
  canonical slice, see :mod:`braunet.napari._geometry`; for 2-D images the image itself);
* **view**: the raw slice the engine resizes for the network (:func:`braunet.infer.to_view` with the
  model's ``card.recipe.view``): the display slice itself for ``"radiological"`` and for 2-D
  images, its flipped transpose for ``"ras"``: ``view[a, b] = display[H_d-1-b, W_d-1-a]``
  (:func:`braunet.infer.views.convert_view`);
* **model**: the ``S x S`` network input. ``"spline3"`` resizing aligns the first and last pixel
  centres (``x = m (n - 1) / (S - 1)``), ``"bilinear"`` uses half-pixel centres
  (``x = (m + 0.5) n / S - 0.5``), exactly as :mod:`braunet.infer.resize` does. A fixed-spacing
  recipe (``spacing_mm``) centres both grids on each other in millimetres
  (``x = (m - (S - 1) / 2) spacing_mm / pixel_mm + (n - 1) / 2``), as its ``centred`` resampling does.

Every BRA map is split into ``n_win x n_win`` windows of the input, so window ``(row, col)``
(``p = row * n_win + col``) covers model pixels ``[row * S / n_win, (row + 1) * S / n_win)``
whatever the stage's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braunet.infer.views import convert_view, convert_view_points

__all__ = ["SliceFrame", "routing_frequency"]


def _model_to_input(m: np.ndarray, n: int, size: int, resize: str, zoom: float | None = None) -> np.ndarray:
    """Model pixel coordinate -> input (view) pixel coordinate along one axis of n input pixels.

    ``zoom``: for a fixed-spacing recipe, input pixels per model pixel (``spacing_mm / pixel_mm``).
    """
    m = np.asarray(m, dtype=np.float64)
    if zoom is not None:
        return (m - (size - 1) / 2) * zoom + (n - 1) / 2
    if n == size:  # the engine skips the resize at the model size
        return m
    if resize == "spline3":
        return m * (n - 1) / (size - 1)
    return (m + 0.5) * n / size - 0.5


def _input_to_model(x: np.ndarray, n: int, size: int, resize: str, zoom: float | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if zoom is not None:
        return (x - (n - 1) / 2) / zoom + (size - 1) / 2
    if n == size:
        return x
    if resize == "spline3":
        return x * (size - 1) / (n - 1)
    return (x + 0.5) * size / n - 0.5


@dataclass(frozen=True)
class SliceFrame:
    """The maps between one displayed slice and a model's input grid.

    Attributes:
        display_shape: (H_d, W_d) of the displayed slice.
        view: the model's slice view, ``"radiological"`` (also for 2-D images) or ``"ras"``.
        img_size: the model's input size S.
        n_win: windows per side.
        resize: ``"spline3"`` or ``"bilinear"`` (the model's recipe).
        spacing_mm: the recipe's fixed network pixel size (None: the slice is resized to S x S).
        pixel_mm: with ``spacing_mm``, the view slice's pixel size (rows, cols) in mm.
    """

    display_shape: tuple[int, int]
    view: str
    img_size: int
    n_win: int
    resize: str
    spacing_mm: float | None = None
    pixel_mm: tuple[float, float] | None = None

    def _zooms(self) -> tuple[float | None, float | None]:
        """Per view axis, input pixels per model pixel of a fixed-spacing recipe (None otherwise)."""
        if not self.spacing_mm:
            return None, None
        if self.pixel_mm is None:
            raise ValueError("a fixed-spacing recipe needs the slice's pixel size (pixel_mm)")
        return self.spacing_mm / self.pixel_mm[0], self.spacing_mm / self.pixel_mm[1]

    @property
    def view_shape(self) -> tuple[int, int]:
        h, w = self.display_shape
        return (w, h) if self.view == "ras" else (h, w)

    @property
    def window_px(self) -> float:
        """Model pixels per window side."""
        return self.img_size / self.n_win

    def display_slice_to_view(self, display_slice: np.ndarray) -> np.ndarray:
        """The raw 2-D slice the engine feeds the network, from a displayed slice ((H, W) or (H, W, 3))."""
        return np.ascontiguousarray(convert_view(display_slice[None], "radiological", self.view)[0])

    def display_to_view(self, rc: np.ndarray) -> np.ndarray:
        """Display (r, c) -> view (a, b), continuous: identity, or (W_d-1-c, H_d-1-r) for ``"ras"``."""
        return convert_view_points(rc, self.display_shape, "radiological", self.view)

    def view_to_display(self, ab: np.ndarray) -> np.ndarray:
        return convert_view_points(ab, self.view_shape, self.view, "radiological")

    def display_to_model(self, rc: np.ndarray) -> np.ndarray:
        ab = self.display_to_view(rc)
        (vh, vw), (zh, zw) = self.view_shape, self._zooms()
        return np.stack([_input_to_model(ab[..., 0], vh, self.img_size, self.resize, zh),
                         _input_to_model(ab[..., 1], vw, self.img_size, self.resize, zw)], axis=-1)  # fmt: skip

    def model_to_display(self, mn: np.ndarray) -> np.ndarray:
        mn = np.asarray(mn, dtype=np.float64)
        (vh, vw), (zh, zw) = self.view_shape, self._zooms()
        ab = np.stack([_model_to_input(mn[..., 0], vh, self.img_size, self.resize, zh),
                       _model_to_input(mn[..., 1], vw, self.img_size, self.resize, zw)], axis=-1)  # fmt: skip
        return self.view_to_display(ab)

    def window_at(self, rc: tuple[float, float]) -> int:
        """Index ``p = row * n_win + col`` of the window containing display point (r, c)."""
        m = self.display_to_model(np.asarray(rc, dtype=np.float64))
        row, col = (np.clip(np.floor((m + 0.5) / self.window_px), 0, self.n_win - 1)).astype(int)
        return int(row * self.n_win + col)

    def window_rectangle(self, p: int) -> np.ndarray:
        """Display-frame corners ``[[r0, c0], [r0, c1], [r1, c1], [r1, c0]]`` of window ``p`` (pixel edges)."""
        row, col = divmod(int(p), self.n_win)
        ws = self.window_px
        m0 = np.array([row * ws - 0.5, col * ws - 0.5])
        m1 = np.array([(row + 1) * ws - 0.5, (col + 1) * ws - 0.5])
        corners = self.model_to_display(np.array([m0, m1]))
        (r0, r1), (c0, c1) = np.sort(corners[:, 0]), np.sort(corners[:, 1])
        return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]])

    def window_map(self) -> np.ndarray:
        """(H_d, W_d) int array: the window index of every displayed pixel (by its centre)."""
        h, w = self.display_shape
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        m = self.display_to_model(np.stack([rows, cols], axis=-1))
        win = np.clip(np.floor((m + 0.5) / self.window_px), 0, self.n_win - 1).astype(np.int64)
        return win[..., 0] * self.n_win + win[..., 1]


def routing_frequency(indices: np.ndarray, n_win: int) -> np.ndarray:
    """How often each window is routed to, over all query windows of one image.

    indices: (n_win**2, topk) routed windows of each query window -> (n_win**2,) float, the share of
    query windows that selected each window (0 = never, 1 = by every query).
    """
    counts = np.bincount(np.asarray(indices).reshape(-1), minlength=n_win * n_win)
    return counts / float(n_win * n_win)
