"""The point-tracker contract shared by CoTracker3 and the weight-free fallback tracker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class Tracks:
    """Point tracks of one video.

    Attributes:
        points: ``(T, N, 2)`` float32, pixel coordinates ``(x, y)`` of every point in every frame,
            in the frame size given to the tracker (pixel centres at integer coordinates).
        visible: ``(T, N)`` bool, whether each point is visible in each frame.
        query_frames: ``(N,)`` int64, the frame in which each point was queried.
    """

    points: torch.Tensor
    visible: torch.Tensor
    query_frames: torch.Tensor

    def __post_init__(self) -> None:
        t, n, two = self.points.shape
        if two != 2 or self.visible.shape != (t, n) or self.query_frames.shape != (n,):
            raise ValueError(
                f"inconsistent track shapes: points {tuple(self.points.shape)}, "
                f"visible {tuple(self.visible.shape)}, query_frames {tuple(self.query_frames.shape)}"
            )

    @property
    def num_frames(self) -> int:
        return self.points.shape[0]

    @property
    def num_points(self) -> int:
        return self.points.shape[1]


class PointTracker(Protocol):
    """Tracks query points through a video, forwards and backwards from each query frame."""

    def track(self, video: torch.Tensor, queries: torch.Tensor) -> Tracks:
        """Track ``queries`` through ``video``.

        Args:
            video: ``(T, 3, H, W)`` RGB frames, uint8 or float in ``[0, 255]``.
            queries: ``(N, 3)`` float, rows ``(t, x, y)``: query frame index and pixel position.

        Returns:
            Tracks with ``T`` frames and ``N`` points, in the pixel frame of ``video``.
        """
        ...
