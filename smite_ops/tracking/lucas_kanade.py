"""Weight-free fallback point tracker: OpenCV pyramidal Lucas-Kanade with a forward-backward check.

Every point is propagated frame to frame, forwards from its query frame to the last frame and backwards
to the first. All points that are being propagated across the same frame pair go through one
``cv2.calcOpticalFlowPyrLK`` call, so points are processed in groups by query frame without one
pass over the video per group.

Visibility: a step ``a -> b`` is accepted when LK converges both ways (``a -> b`` and back ``b -> a``,
which also rejects texture-less patches such as a flat occluder), the round trip lands within
``fb_threshold`` px of the start, and the new position lies inside the frame. A point whose step is
rejected is *lost* in that direction: it is invisible from then on, its position stays at its last
reliable position, and it is not re-found (LK has no appearance model to re-detect a point after an
occlusion). Content that reappears is covered by points queried in later frames
(``queries.query_frames_for``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from smite_ops.tracking.base import Tracks
from smite_ops.tracking.queries import query_frame_indices


@dataclass(frozen=True)
class LucasKanadeConfig:
    """Parameters of the pyramidal Lucas-Kanade tracker.

    Attributes:
        window_size: side of the square LK integration window in pixels. 15 rather than OpenCV's 21:
            a smaller window reaches less far, so a point covered by an occluder whose window still
            sees texture beside it is more often caught by the forward-backward check (on the
            sliding-occluder test: 82 % of occluded point-frames invisible, 51 % with 21 px and 1 px).
        pyramid_levels: number of coarser pyramid levels above full resolution (3: motions up to
            roughly ``window_size * 2**3 / 2`` px per frame).
        fb_threshold: largest forward-backward round-trip error in pixels for a step to be accepted;
            well-tracked texture round-trips within 0.1 px, partly occluded windows by 0.2-2 px.
        min_eigen_threshold: OpenCV's ``minEigThreshold``: the smallest eigenvalue of the window's
            spatial-gradient matrix divided by the window area, below which a point counts as
            texture-less (e.g. under a flat occluder) and is lost.
        max_iterations: LK iterations per pyramid level.
        epsilon: LK stops iterating once an update is smaller than this many pixels.
    """

    window_size: int = 15
    pyramid_levels: int = 3
    fb_threshold: float = 0.5
    min_eigen_threshold: float = 1e-4
    max_iterations: int = 30
    epsilon: float = 0.01

    def __post_init__(self) -> None:
        if self.window_size < 3 or self.window_size % 2 == 0:
            raise ValueError(f"LK window_size must be an odd number >= 3, got {self.window_size}")
        if self.pyramid_levels < 0:
            raise ValueError(f"LK pyramid_levels must be >= 0, got {self.pyramid_levels}")
        if self.fb_threshold <= 0:
            raise ValueError(f"LK fb_threshold must be > 0 px, got {self.fb_threshold}")


class LucasKanadeTracker:
    """``PointTracker`` built on OpenCV pyramidal Lucas-Kanade; needs no weights, runs on CPU."""

    def __init__(self, config: LucasKanadeConfig | None = None) -> None:
        self.config = config or LucasKanadeConfig()

    def track(self, video: torch.Tensor, queries: torch.Tensor) -> Tracks:
        """Track ``queries`` through ``video`` forwards and backwards from each query frame.

        Args:
            video: ``(T, 3, H, W)`` RGB frames, uint8 or float in ``[0, 255]``.
            queries: ``(N, 3)`` float rows ``(t, x, y)``: query frame index and pixel position.

        Returns:
            Tracks with ``points`` ``(T, N, 2)`` float32 pixel ``(x, y)``, ``visible`` ``(T, N)`` bool
            (a query outside the frame is never visible) and ``query_frames`` ``(N,)`` int64.
        """
        frames = _grayscale(video)
        query_frames = query_frame_indices(queries, len(frames)).numpy()
        num_points = query_frames.shape[0]
        height, width = frames[0].shape
        points = np.zeros((len(frames), num_points, 2), dtype=np.float32)
        visible = np.zeros((len(frames), num_points), dtype=bool)
        start = queries[:, 1:].to(torch.float32).numpy()
        points[query_frames, np.arange(num_points)] = start
        visible[query_frames, np.arange(num_points)] = _inside(start, height, width)
        for step in (1, -1):
            self._sweep(frames, points, visible, query_frames, step)
        return Tracks(
            points=torch.from_numpy(points),
            visible=torch.from_numpy(visible),
            query_frames=torch.from_numpy(query_frames.astype(np.int64)),
        )

    def _sweep(
        self,
        frames: list[np.ndarray],
        points: np.ndarray,
        visible: np.ndarray,
        query_frames: np.ndarray,
        step: int,
    ) -> None:
        """Propagate, in place, every point from its query frame to the video's end in direction ``step``."""
        last = len(frames) - 1
        order = range(last) if step == 1 else range(last, 0, -1)
        for src in order:
            dst = src + step
            started = query_frames <= src if step == 1 else query_frames >= src
            points[dst, started] = points[src, started]
            visible[dst, started] = False
            alive = np.flatnonzero(started & visible[src])
            if alive.size:
                moved, ok = self._step(frames[src], frames[dst], points[src, alive])
                points[dst, alive] = np.where(ok[:, None], moved, points[src, alive])
                visible[dst, alive] = ok

    def _step(self, src: np.ndarray, dst: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One LK step ``src -> dst`` of ``(M, 2)`` float32 points; returns new points and acceptance ``(M,)``."""
        forward, ok_forward = self._flow(src, dst, xy)
        back, ok_back = self._flow(dst, src, forward)
        round_trip = np.linalg.norm(back - xy, axis=1)
        ok = ok_forward & ok_back & (round_trip < self.config.fb_threshold) & _inside(forward, *dst.shape)
        return forward, ok

    def _flow(self, src: np.ndarray, dst: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            src,
            dst,
            np.ascontiguousarray(xy.reshape(-1, 1, 2)),
            None,
            winSize=(cfg.window_size, cfg.window_size),
            maxLevel=cfg.pyramid_levels,
            criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, cfg.max_iterations, cfg.epsilon),
            minEigThreshold=cfg.min_eigen_threshold,
        )
        return moved.reshape(-1, 2), status.reshape(-1).astype(bool)


def _grayscale(video: torch.Tensor) -> list[np.ndarray]:
    """``(T, 3, H, W)`` RGB in [0, 255] -> T contiguous ``(H, W)`` uint8 luma frames."""
    if video.ndim != 4 or video.shape[1] != 3 or video.shape[0] < 1:
        raise ValueError(f"video must be (T, 3, H, W) RGB with T >= 1, got shape {tuple(video.shape)}")
    if video.dtype != torch.uint8:
        video = video.round().clamp(0, 255).to(torch.uint8)
    rgb = video.permute(0, 2, 3, 1).contiguous().numpy()
    return [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb]


def _inside(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(M, 2)`` pixel ``(x, y)`` -> ``(M,)`` whether each lies within the frame (pixel centres 0..size-1)."""
    return (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)
