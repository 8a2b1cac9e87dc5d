"""Review signals: which frames of a committed video a person should check first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.report_outputs import flag_low_confidence, frame_confidence


@dataclass(frozen=True)
class VideoReview:
    """A video's per-frame review score and flags.

    Attributes:
        frame_indices: ``(K,)`` int64 frames with masks, ascending.
        score: ``(K,)`` float64 review score, higher = more likely wrong.
        flagged: ``(K,)`` bool, frames for human review.
    """

    frame_indices: np.ndarray
    score: np.ndarray
    flagged: np.ndarray

    @property
    def review_frames(self) -> np.ndarray:
        """Flagged frame indices, ascending."""
        return self.frame_indices[self.flagged]


def review_video(out_uri: str, video_id: str) -> VideoReview:
    """Score and flag the frames of one committed video."""
    frames, confidence = frame_confidence(out_uri, video_id)
    return VideoReview(frames, 1.0 - confidence, flag_low_confidence(confidence))
