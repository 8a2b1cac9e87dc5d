"""Reference-free yardsticks for the quality benchmark: all-background and a nearest-colour classifier.

Both expose the segmenter call of the method, ``frames (T, 3, H, W) uint8 -> scores (T, P, H, W)``, so the
benchmark harness and the pipeline treat them exactly like the SMITE model.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor


class AllBackgroundSegmenter:
    """Predicts background (class 0) everywhere."""

    def __init__(self, num_parts: int) -> None:
        self.num_parts = num_parts

    def __call__(self, frames: Tensor) -> Tensor:
        """``(T, 3, H, W)`` frames -> ``(T, P, H, W)`` float32 scores, one-hot on class 0."""
        scores = torch.zeros(frames.shape[0], self.num_parts, *frames.shape[2:])
        scores[:, 0] = 1.0
        return scores


class NearestColourSegmenter:
    """Per-pixel nearest-colour classifier fitted on reference pixels.

    Colours are quantised to ``bins**3`` cells; each cell seen in the references holds the class frequencies
    of its pixels, and a colour falling in an unseen cell takes the frequencies of the nearest seen cell (a
    1-nearest-neighbour rule in RGB at the cell resolution).
    """

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], num_parts: int, bins: int = 32) -> None:
        """
        Args:
            images: ``(H, W, 3)`` uint8 RGB reference images.
            masks: ``(H, W)`` label maps with values ``< num_parts``.
            num_parts: ``P``.
            bins: quantisation cells per colour channel.
        """
        self.num_parts = num_parts
        self.bins = bins
        cells = np.concatenate([self._cells(image.reshape(-1, 3)) for image in images])
        labels = np.concatenate([mask.reshape(-1) for mask in masks]).astype(np.int64)
        counts = np.zeros((bins**3, num_parts), np.float64)
        np.add.at(counts, (cells, labels), 1.0)
        seen = np.flatnonzero(counts.sum(1))
        coords = np.stack(np.unravel_index(seen, (bins,) * 3), axis=1)
        every = np.stack(np.unravel_index(np.arange(bins**3), (bins,) * 3), axis=1)
        nearest = seen[cKDTree(coords).query(every)[1]]
        frequencies = counts[nearest] / counts[nearest].sum(1, keepdims=True)
        self.table = torch.from_numpy(frequencies.astype(np.float32))  # (bins**3, P)

    def _cells(self, rgb: np.ndarray) -> np.ndarray:
        q = rgb.astype(np.int64) * self.bins // 256
        return (q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2]

    def __call__(self, frames: Tensor) -> Tensor:
        """``(T, 3, H, W)`` uint8 frames -> ``(T, P, H, W)`` float32 class frequencies."""
        t, _, h, w = frames.shape
        rgb = frames.permute(0, 2, 3, 1).reshape(-1, 3).cpu().numpy()
        scores = self.table[torch.from_numpy(self._cells(rgb))]
        return scores.reshape(t, h, w, self.num_parts).permute(0, 3, 1, 2).contiguous()
