"""Coloured part overlays for videos and report thumbnails, and where a video's overlay is published."""

from __future__ import annotations

import colorsys

import numpy as np


def overlay_file(root: str, video_id: str) -> str:
    """Where one video's published overlay lives: ``<root>/overlays/<id>.mp4``, in the style of ``root`` (a local
    path or fsspec URL)."""
    return f"{str(root).rstrip('/')}/overlays/{video_id}.mp4"


def part_palette(num_parts: int) -> np.ndarray:
    """``(P, 3)`` uint8 colours: black for background, then evenly spaced saturated hues."""
    colours = [(0, 0, 0)]
    for index in range(1, num_parts):
        hue = ((index - 1) * 0.618034) % 1.0  # golden-ratio steps keep neighbouring ids apart
        colours.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 1.0)))
    return np.asarray(colours, dtype=np.uint8)


def overlay_labels(frame: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend part colours over ``frame`` ``(H, W, 3)`` uint8 where ``labels`` ``(H, W)`` is not background."""
    colour = palette[labels].astype(np.float32)
    blended = (1 - alpha) * frame.astype(np.float32) + alpha * colour
    out = np.where((labels > 0)[..., None], blended, frame.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
