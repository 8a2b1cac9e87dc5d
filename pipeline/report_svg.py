"""The report's per-frame confidence plot, drawn as inline SVG (no plotting library, no external assets)."""

from __future__ import annotations

from html import escape

import numpy as np

FLAG_COLOUR = "#d62728"
LINE_COLOUR = "#1f77b4"


def confidence_plot(
    frame_indices: np.ndarray,
    confidence: np.ndarray,
    flagged: np.ndarray,
    threshold: float,
    *,
    title: str = "",
    width: int = 640,
    height: int = 180,
) -> str:
    """An SVG line plot of mean mask confidence per frame, flagged frames marked in red.

    Args:
        frame_indices: ``(K,)`` frame indices (x axis).
        confidence: ``(K,)`` confidence in [0, 1] (y axis, fixed 0..1 scale).
        flagged: ``(K,)`` bool, frames to review (red dots and a red band under the axis).
        threshold: drawn as a dashed horizontal line.
        title: accessible title of the figure.
        width, height: size of the figure in CSS pixels.

    Returns:
        One ``<svg>`` element as text.
    """
    left, right, top, bottom = 40, 10, 10, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    frames = np.asarray(frame_indices, dtype=np.float64)
    values = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    marks = np.asarray(flagged, dtype=bool)
    first, last = (frames.min(), frames.max()) if frames.size else (0.0, 1.0)
    span = max(last - first, 1.0)

    def x_of(frame: float) -> float:
        return left + (frame - first) / span * plot_w

    def y_of(value: float) -> float:
        return top + (1.0 - value) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="confidence" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#bbb"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{left - 6}" y="{y_of(tick) + 4:.1f}" font-size="11" text-anchor="end">{tick:.1f}</text>'
        )
    for frame in (first, last):
        parts.append(
            f'<text x="{x_of(frame):.1f}" y="{height - 8}" font-size="11" text-anchor="middle">{int(frame)}</text>'
        )
    parts.append(
        f'<line class="threshold" x1="{left}" x2="{left + plot_w}" y1="{y_of(threshold):.1f}" '
        f'y2="{y_of(threshold):.1f}" stroke="#888" stroke-dasharray="4 3"/>'
    )
    if frames.size:
        points = " ".join(f"{x_of(f):.1f},{y_of(v):.1f}" for f, v in zip(frames, values, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{LINE_COLOUR}" stroke-width="1.5"/>')
    band = max(plot_w / max(len(frames), 1), 2.0)
    for frame, value in zip(frames[marks], values[marks], strict=True):
        parts.append(
            f'<circle class="flagged" cx="{x_of(frame):.1f}" cy="{y_of(value):.1f}" r="3.5" fill="{FLAG_COLOUR}">'
            f"<title>frame {int(frame)}: {value:.3f}</title></circle>"
            f'<rect x="{x_of(frame) - band / 2:.1f}" y="{top + plot_h + 2}" width="{band:.1f}" height="5" '
            f'fill="{FLAG_COLOUR}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)
