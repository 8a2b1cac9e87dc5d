"""The report's plots, drawn as inline SVG (no plotting library, no external assets)."""

from __future__ import annotations

from html import escape

import numpy as np

FLAG_COLOUR = "#d62728"
LINE_COLOUR = "#1f77b4"


def score_plot(
    frame_indices: np.ndarray,
    score: np.ndarray,
    flagged: np.ndarray,
    threshold: float,
    *,
    title: str = "",
    width: int = 640,
    height: int = 180,
) -> str:
    """An SVG line plot of a per-frame value in [0, 1] (clipped), flagged frames marked in red.

    Args:
        frame_indices: ``(K,)`` frame indices (x axis).
        score: ``(K,)`` values (y axis, fixed 0..1 scale; larger values are drawn at the top).
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
    values = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    marks = np.asarray(flagged, dtype=bool)
    first, last = (frames.min(), frames.max()) if frames.size else (0.0, 1.0)
    span = max(last - first, 1.0)

    def x_of(frame: float) -> float:
        return left + (frame - first) / span * plot_w

    def y_of(value: float) -> float:
        return top + (1.0 - value) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="score" width="{width}" height="{height}" '
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


def presence_timeline(
    frame_indices: np.ndarray,
    present: np.ndarray,
    part_names: list[str],
    colours: list[str],
    flagged: np.ndarray,
    *,
    title: str = "",
    width: int = 640,
    row_height: int = 14,
) -> str:
    """An SVG timeline: one row per part, a bar in the part's colour over each frame where it is present.

    Args:
        frame_indices: ``(K,)`` frame indices, ascending.
        present: ``(K, P)`` bool per frame and part (column 0, the background, is not drawn).
        part_names: the ``P`` class names.
        colours: the ``P`` CSS colours (the overlay palette).
        flagged: ``(K,)`` bool; flagged frames get a red tick in a bottom row.
        title: accessible title of the figure.
        width, row_height: size in CSS pixels.

    Returns:
        One ``<svg>`` element as text; each drawn run of frames is a ``<rect class="present">``.
    """
    left, label_w = 4, 90
    rows = len(part_names) - 1
    height = (rows + 1) * row_height + 16
    plot_w = width - label_w - left - 6
    count = max(len(frame_indices), 1)
    cell = plot_w / count
    mask = np.asarray(present, dtype=bool)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="presence" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for row, part in enumerate(range(1, len(part_names))):
        y = row * row_height
        parts.append(f'<text x="{left}" y="{y + row_height - 3}" font-size="11">{escape(part_names[part])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 1}" width="{plot_w:.1f}" height="{row_height - 2}" fill="#f2f2f2"/>')
        column = np.concatenate([[False], mask[:, part], [False]]) if len(mask) else np.zeros(2, bool)
        edges = np.flatnonzero(column[1:] != column[:-1])
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            x, run_w = label_w + start * cell, (stop - start) * cell
            parts.append(
                f'<rect class="present" x="{x:.1f}" y="{y + 1}" width="{run_w:.1f}" '
                f'height="{row_height - 2}" fill="{colours[part]}"><title>{escape(part_names[part])}: frames '
                f"{int(frame_indices[start])}-{int(frame_indices[stop - 1])}</title></rect>"
            )
    y = rows * row_height
    parts.append(f'<text x="{left}" y="{y + row_height - 3}" font-size="11">review</text>')
    for index in np.flatnonzero(np.asarray(flagged, dtype=bool)):
        parts.append(
            f'<rect class="flagged" x="{label_w + index * cell:.1f}" y="{y + 1}" width="{max(cell, 2.0):.1f}" '
            f'height="{row_height - 2}" fill="{FLAG_COLOUR}"><title>frame {int(frame_indices[index])}</title></rect>'
        )
    last = int(frame_indices[-1]) if len(frame_indices) else 0
    first = int(frame_indices[0]) if len(frame_indices) else 0
    parts.append(f'<text x="{label_w}" y="{height - 3}" font-size="11">{first}</text>')
    parts.append(f'<text x="{label_w + plot_w:.1f}" y="{height - 3}" font-size="11" text-anchor="end">{last}</text>')
    parts.append("</svg>")
    return "".join(parts)
