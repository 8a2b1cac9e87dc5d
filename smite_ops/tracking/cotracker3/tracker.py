"""``PointTracker`` implementation backed by the CoTracker3 offline model and predictor."""

from __future__ import annotations

import contextlib

import torch

from smite_ops.tracking.base import Tracks
from smite_ops.tracking.cotracker3.model import CoTracker3Offline, CoTrackerInputError
from smite_ops.tracking.cotracker3.predictor import PREDICTOR_ITERS, CoTracker3Predictor


class CoTracker3Tracker:
    """Tracks points with CoTracker3 wherever its model lives (CPU or GPU).

    Explicit queries are tracked together with the predictor's 6x6 support grid, at the model
    resolution (384x512); results are mapped back to the input video's pixel frame.

    Args:
        model: an eval-mode ``CoTracker3Offline`` (e.g. from ``load_cotracker3``).
        iters: refinement iterations per model pass.
        backward: also track backwards from each query frame (a second pass).
        bf16: run under bfloat16 autocast when the model is on CUDA (ignored elsewhere).
    """

    def __init__(
        self, model: CoTracker3Offline, iters: int = PREDICTOR_ITERS, backward: bool = True, bf16: bool = False
    ) -> None:
        self.predictor = CoTracker3Predictor(model, iters=iters)
        self.backward = backward
        self.bf16 = bf16

    def track(self, video: torch.Tensor, queries: torch.Tensor) -> Tracks:
        """Track ``queries`` through ``video``.

        Args:
            video: ``(T, 3, H, W)`` RGB frames, uint8 or float in ``[0, 255]``.
            queries: ``(N, 3)`` float rows ``(t, x, y)``: query frame and pixel position.

        Returns:
            ``Tracks`` on ``video``'s device: points ``(T, N, 2)`` float32 in ``video``'s pixels,
            visibility ``(T, N)`` (probability > 0.9, always True at the query frame), query frames.
        """
        if video.dim() != 4 or video.shape[1] != 3:
            raise CoTrackerInputError(f"video must be (T, 3, H, W), got {tuple(video.shape)}")
        if queries.dim() != 2 or queries.shape[1] != 3:
            raise CoTrackerInputError(f"queries must be (N, 3) rows (t, x, y), got {tuple(queries.shape)}")
        t, n = video.shape[0], queries.shape[0]
        query_frames = queries[:, 0].long().to(video.device)
        if n == 0:
            empty = video.new_zeros((t, 0, 2), dtype=torch.float32)
            return Tracks(empty, empty[..., 0].bool(), query_frames)
        device = next(self.predictor.model.parameters()).device
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.bf16 and device.type == "cuda"
            else contextlib.nullcontext()
        )
        with autocast:
            points, visible = self.predictor(
                video.to(device, torch.float32)[None],
                queries=queries.to(device, torch.float32)[None],
                backward_tracking=self.backward,
            )
        return Tracks(points[0].float().to(video.device), visible[0].to(video.device), query_frames)
