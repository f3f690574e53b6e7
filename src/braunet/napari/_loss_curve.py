"""A live loss curve drawn with QPainter (no plotting library needed for one line)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["LossCurve"]


class LossCurve(QWidget):
    """Plots ``values`` (e.g. training loss per step) scaled to the widget; the last value is printed."""

    def __init__(self, parent: QWidget | None = None, *, label: str = "loss") -> None:
        super().__init__(parent)
        self.label = label
        self.values: list[float] = []
        self.setMinimumHeight(70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_values(self, values: list[float]) -> None:
        self.values = [float(v) for v in values if math.isfinite(float(v))]
        self.update()

    def append(self, value: float) -> None:
        if math.isfinite(float(value)):
            self.values.append(float(value))
            self.update()

    def clear(self) -> None:
        self.values = []
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt override)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(4, 14, -4, -4)
        fg = self.palette().color(self.foregroundRole())
        painter.setPen(QPen(QColor(fg.red(), fg.green(), fg.blue(), 70), 1))
        painter.drawRect(rect)
        painter.setPen(fg)
        if not self.values:
            painter.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, f"{self.label}: no data yet")
            return
        low, high = min(self.values), max(self.values)
        span = (high - low) or 1.0
        n = len(self.values)
        path = QPainterPath()
        for i, value in enumerate(self.values):
            x = rect.left() + rect.width() * (i / (n - 1) if n > 1 else 0.5)
            y = rect.bottom() - rect.height() * (value - low) / span
            path.moveTo(QPointF(x, y)) if i == 0 else path.lineTo(QPointF(x, y))
        painter.setPen(QPen(QColor("#e69f00"), 2))
        painter.drawPath(path)
        painter.setPen(fg)
        painter.drawText(
            QRectF(self.rect()).adjusted(4, 0, -4, 0), Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft,
            f"{self.label} {self.values[-1]:.4f}  (step {n}, min {low:.4f})",
        )
