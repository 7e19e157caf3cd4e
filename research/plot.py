"""A PNG of alerts against truth over time, drawn with OpenCV (no plotting library needed).

One row per bed: expected deterioration episodes as green bars, other annotated episodes
(nuisances, findings below the alert threshold) as grey bars; each alert raised as a marker at
its raise time, coloured by priority (technical alerts blue), false alerts ringed in black.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from icu.contracts import AlertKind
from research import ResearchError
from research.evaluate import Annotation, Raise

_BGR = {"high": (40, 40, 220), "medium": (0, 140, 255), "low": (0, 210, 230), "info": (160, 160, 160)}
_TECHNICAL = (200, 120, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def plot_alerts(
    out: Path,
    *,
    beds: Sequence[str],
    start: datetime,
    end: datetime,
    annotations: Sequence[Annotation],
    raises: Sequence[Raise],
    false_ids: set[str],
    title: str = "alerts against truth",
) -> Path:
    span = max(1.0, (end - start).total_seconds())
    left, right, top, row_h = 120, 30, 60, 28
    width = 1400
    height = top + row_h * max(1, len(beds)) + 80
    image = np.full((height, width, 3), 255, np.uint8)
    plot_w = width - left - right

    def x_of(t: datetime) -> int:
        return left + round(min(max((t - start).total_seconds() / span, 0.0), 1.0) * plot_w)

    cv2.putText(image, title, (left, 30), _FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    rows = {bed: i for i, bed in enumerate(beds)}
    for bed, i in rows.items():
        y = top + i * row_h
        if i % 2:
            cv2.rectangle(image, (left, y), (left + plot_w, y + row_h), (245, 245, 245), -1)
        cv2.putText(image, bed[:16], (8, y + row_h // 2 + 5), _FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    for a in sorted(annotations, key=lambda a: a.alert_expected):  # expected drawn on top
        if a.bed_id not in rows:
            continue
        y = top + rows[a.bed_id] * row_h
        colour = (60, 170, 60) if a.alert_expected else (190, 190, 190)
        x0, x1 = x_of(a.onset), max(x_of(a.end), x_of(a.onset) + 2)
        cv2.rectangle(image, (x0, y + 6), (x1, y + row_h - 6), colour, -1)
    for r in raises:
        if r.bed_id not in rows:
            continue
        y = top + rows[r.bed_id] * row_h + row_h // 2
        colour = _TECHNICAL if r.kind is AlertKind.TECHNICAL else _BGR.get(r.priority, _BGR["info"])
        x = x_of(r.raised_at)
        cv2.circle(image, (x, y), 6, colour, -1, cv2.LINE_AA)
        if r.alert_id in false_ids:
            cv2.circle(image, (x, y), 8, (0, 0, 0), 2, cv2.LINE_AA)
    axis_y = top + row_h * max(1, len(beds)) + 5
    cv2.line(image, (left, axis_y), (left + plot_w, axis_y), (0, 0, 0), 1)
    unit, scale = ("h", 3600.0) if span > 3 * 3600 else ("min", 60.0)
    step = _nice_step(span / scale / 10)
    tick = 0.0
    while tick * scale <= span + 1e-6:
        x = left + round(tick * scale / span * plot_w)
        cv2.line(image, (x, axis_y), (x, axis_y + 5), (0, 0, 0), 1)
        cv2.putText(image, f"{tick:g}", (x - 8, axis_y + 20), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tick += step
    cv2.putText(image, f"time from start ({unit})", (left + plot_w // 2 - 60, axis_y + 40), _FONT, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    legend = [("expected", (60, 170, 60)), ("other episode", (190, 190, 190)), ("high", _BGR["high"]),
              ("medium", _BGR["medium"]), ("low", _BGR["low"]), ("technical", _TECHNICAL)]  # fmt: skip
    x = left + 380
    for name, colour in legend:
        cv2.rectangle(image, (x, 20), (x + 12, 32), colour, -1)
        cv2.putText(image, name, (x + 16, 31), _FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        x += 30 + 9 * len(name)
    cv2.circle(image, (x + 6, 26), 8, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, "false alert", (x + 18, 31), _FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), image):
        raise ResearchError(f"could not write {out}")
    return out


def _nice_step(raw: float) -> float:
    for step in (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120):
        if step >= raw:
            return float(step)
    return float(round(raw))
