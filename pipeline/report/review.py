"""Review signals: which frames of a committed video a person should check first, and why.

Everything here is computed from the committed masks dataset alone (one row per frame and part present:
``area`` and ``score``, see :mod:`pipeline.sinks.masks`), so it works for every run, old or new. Per frame
``t`` and part ``p`` (``a[t, p]``: the part's area as a fraction of the frame):

* **shrink** ``max(0, M[p] - a[t, p]) / (M[p] + min_area)`` in [0, 1], ``M[p]`` the part's median area over
  the video: 1 when a part that the video usually shows is missing (a wheel that disappears, also for
  many frames in a row), about 0.5 when it is at half its usual size;
* **presence change** ``|present[t, p] - mean(present[N(t), p])|`` over the neighbouring frames
  ``N(t) = {t-w..t+w} \\ {t}``: 1 when a part present in every neighbour is missing here, or the reverse;
* **area change** ``|a[t, p] - m| / (max(a[t, p], m) + min_area)``, ``m`` the part's median area over
  ``N(t)``: sudden jumps;
* **part confidence**: the area-weighted mean of the parts' ``score`` (mean class probability inside each
  mask) over the non-background parts only (background pixels are easy and would hide the parts' doubt).

The frame score is ``max_p shrink[t, p] + confidence_weight * max(0, median - part_confidence[t])``, and a
frame is flagged when it reaches ``threshold``. On the demo's car video (the tuning video) ranking frames by
shrink found the bad frames best; the local presence and area changes and the confidence fall ranked them
worse (``benchmarks/review_flags.py``, README "Review flags"), so they are reported, not scored
(``confidence_weight`` defaults to 0). Disagreement between overlapping windows or with the point tracks'
votes would need outputs that the masks dataset does not keep, and is not computed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from pipeline.sinks.run_outputs import read_video_masks


@dataclass(frozen=True)
class ReviewSettings:
    """How frames are scored and flagged.

    Attributes:
        window: neighbours on each side of a frame that define what is usual there (frames).
        min_area: area floor of the area change, as a fraction of the frame (damps noise on tiny parts).
        confidence_weight: weight of the part-confidence fall in the frame score.
        threshold: frames scoring at least this are flagged for review.
    """

    window: int = 2
    min_area: float = 0.005
    confidence_weight: float = 0.0
    threshold: float = 0.5


@dataclass(frozen=True)
class VideoReview:
    """A video's review signals, frame score and flags.

    Attributes:
        frame_indices: ``(K,)`` int64 frames with masks, ascending.
        area: ``(K, P)`` float64 area of each class as a fraction of the frame (column 0: background).
        typical_area: ``(P,)`` float64 median area of each class over the video.
        shrink: ``(K, P)`` float64 in [0, 1] (module docstring; background column 0).
        presence_change: ``(K, P)`` float64 in [0, 1] (module docstring; background column 0).
        area_change: ``(K, P)`` float64 in [0, 1] (module docstring; background column 0).
        part_confidence: ``(K,)`` float64 in [0, 1], mean probability over non-background pixels (1 when a
            frame has no part).
        score: ``(K,)`` float64 review score, higher = more likely wrong.
        flagged: ``(K,)`` bool, frames for human review.
    """

    frame_indices: np.ndarray
    area: np.ndarray
    typical_area: np.ndarray
    shrink: np.ndarray
    presence_change: np.ndarray
    area_change: np.ndarray
    part_confidence: np.ndarray
    score: np.ndarray
    flagged: np.ndarray

    @property
    def present(self) -> np.ndarray:
        """``(K, P)`` bool: which classes each frame holds."""
        return self.area > 0

    @property
    def review_frames(self) -> np.ndarray:
        """Flagged frame indices, ascending."""
        return self.frame_indices[self.flagged]

    def reason(self, position: int, part_names: list[str] | tuple[str, ...]) -> str:
        """Why the frame at ``position`` (row, not frame index) scores as it does, in a few words."""
        part = int(self.worst_part[position])
        name = part_names[part] if part < len(part_names) else f"part {part}"
        area, usual = self.area[position, part], self.typical_area[part]
        if usual > 0 and area == 0:
            change = f"{name} missing"
        elif area > 0 and usual == 0:
            change = f"{name} appears"
        else:
            change = f"{name} area {100 * (area - usual) / max(usual, 1e-12):+.0f} % of its usual"
        return f"{change}; part confidence {self.part_confidence[position]:.2f}"

    @property
    def worst_part(self) -> np.ndarray:
        """``(K,)`` int64: the non-background part that shrank most in each frame (the one driving its score)."""
        if self.shrink.shape[1] < 2:
            return np.zeros(len(self.frame_indices), np.int64)
        return 1 + self.shrink[:, 1:].argmax(axis=1)


def _neighbours(values: np.ndarray, window: int) -> np.ndarray:
    """``(K, 2w, ...)`` values of each frame's neighbours, NaN past the ends (frames in order)."""
    padded = np.concatenate([np.full((window, *values.shape[1:]), np.nan), values,
                             np.full((window, *values.shape[1:]), np.nan)])
    offsets = [offset for offset in range(-window, window + 1) if offset != 0]
    return np.stack([padded[window + offset : window + offset + len(values)] for offset in offsets], axis=1)


def review_signals(
    frame_indices: np.ndarray, area: np.ndarray, score: np.ndarray, settings: ReviewSettings = ReviewSettings()
) -> VideoReview:
    """The review signals, score and flags of one video from its per-frame part areas and scores.

    Args:
        frame_indices: ``(K,)`` frame indices, ascending.
        area: ``(K, P)`` area of each class as a fraction of the frame (0 where absent; column 0 background).
        score: ``(K, P)`` mean class probability inside each class's mask (ignored where absent).
        settings: window, noise floor, weights and threshold.
    """
    area = np.asarray(area, dtype=np.float64)
    frames = np.asarray(frame_indices, dtype=np.int64)
    if len(frames) == 0:
        empty = np.zeros((0, area.shape[1] if area.ndim == 2 else 1))
        return VideoReview(frames, empty, np.zeros(empty.shape[1]), empty, empty, empty, np.zeros(0), np.zeros(0),
                           np.zeros(0, bool))
    present = (area > 0).astype(np.float64)
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):  # no neighbour at all: one frame
        usual_presence = np.nanmean(_neighbours(present, settings.window), axis=1)
        usual_area = np.nanmedian(_neighbours(area, settings.window), axis=1)
    usual_presence = np.where(np.isnan(usual_presence), present, usual_presence)  # no neighbour: nothing usual
    usual_area = np.where(np.isnan(usual_area), area, usual_area)
    presence_change = np.abs(present - usual_presence)
    area_change = np.abs(area - usual_area) / (np.maximum(area, usual_area) + settings.min_area)
    typical = np.median(area, axis=0)
    shrink = np.maximum(0.0, typical - area) / (typical + settings.min_area)
    presence_change[:, 0] = area_change[:, 0] = shrink[:, 0] = 0.0
    foreground = area[:, 1:]
    weighted = (foreground * np.nan_to_num(np.asarray(score, dtype=np.float64)[:, 1:])).sum(axis=1)
    total = foreground.sum(axis=1)
    part_confidence = np.where(total > 0, weighted / np.maximum(total, 1e-12), 1.0)
    fall = np.maximum(0.0, np.median(part_confidence) - part_confidence)
    frame_score = shrink.max(axis=1) + settings.confidence_weight * fall
    return VideoReview(frames, area, typical, shrink, presence_change, area_change, part_confidence, frame_score,
                       frame_score >= settings.threshold)


def part_table(out_uri: str, video_id: str, num_parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One committed video's per-frame class areas and scores, from its mask rows.

    Returns:
        ``(frame_indices (K,) int64, area (K, P) fraction of the frame, score (K, P) float64, NaN where absent)``.
    """
    table = read_video_masks(out_uri, video_id, ["frame_index", "part_id", "height", "width", "area", "score"])
    frames = table["frame_index"].to_numpy().astype(np.int64)
    indices, rows = np.unique(frames, return_inverse=True)
    parts = table["part_id"].to_numpy().astype(np.int64)
    pixels = (table["height"].to_numpy() * table["width"].to_numpy()).astype(np.float64)
    area = np.zeros((len(indices), max(num_parts, int(parts.max(initial=0)) + 1)))
    score = np.full(area.shape, np.nan)
    area[rows, parts] = table["area"].to_numpy() / pixels
    score[rows, parts] = pc.fill_null(table["score"], np.nan).to_numpy()
    return indices, area, score


def review_video(
    out_uri: str, video_id: str, settings: ReviewSettings = ReviewSettings(), num_parts: int = 0
) -> VideoReview:
    """Score and flag the frames of one committed video (``num_parts``: class count, when known)."""
    return review_signals(*part_table(out_uri, video_id, num_parts), settings)
