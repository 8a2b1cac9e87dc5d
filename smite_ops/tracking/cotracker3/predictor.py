"""The CoTracker3 predictor: resizing to model resolution, query construction, backward tracking.

Reproduces the hub object ``cotracker3_offline`` (sparse modes): grid, explicit and mask-restricted
grid queries, an optional 6x6 support grid, and forward + time-reversed tracking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smite_ops.tracking.cotracker3.model import CoTracker3Offline, CoTrackerInputError

SUPPORT_GRID_SIZE = 6
VISIBILITY_THRESHOLD = 0.9
"""Threshold on the visibility probability (confidence is not used by the offline predictor)."""
PREDICTOR_ITERS = 6


def grid_points(size: int, extent: tuple[int, int]) -> torch.Tensor:
    """Regular grid on a frame, row-major (y outer, x inner).

    Args:
        size: points per side (>= 1); ``1`` gives the frame centre.
        extent: ``(H, W)`` of the frame in pixels.

    Returns:
        ``(size * size, 2)`` float32 ``(x, y)``, spanning ``[m, W - m] x [m, H - m]``, ``m = W / 64``.
    """
    h, w = extent
    if size == 1:
        return torch.tensor([[w / 2, h / 2]])
    margin = w / 64
    ys, xs = torch.linspace(margin, h - margin, size), torch.linspace(margin, w - margin, size)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


def _mask_filter(segm_mask: torch.Tensor, points: torch.Tensor, extent: tuple[int, int]) -> torch.Tensor:
    """Keep the grid points ``(M, 2)`` where the mask, resized (nearest) to ``extent``, is non-zero."""
    if segm_mask.dim() != 4 or segm_mask.shape[1] != 1:
        raise CoTrackerInputError(f"segm_mask must be (B, 1, H, W), got {tuple(segm_mask.shape)}")
    if not bool((segm_mask == segm_mask[:1]).all()):
        raise CoTrackerInputError("segm_mask must be the same for every batch element (one grid per batch)")
    mask = F.interpolate(segm_mask[:1].float(), size=extent, mode="nearest")[0, 0]
    rows, cols = points[:, 1].round().long(), points[:, 0].round().long()
    return points[mask[rows, cols] != 0]


def model_queries(
    batch: int,
    frame_size: tuple[int, int],
    model_resolution: tuple[int, int],
    queries: torch.Tensor | None = None,
    segm_mask: torch.Tensor | None = None,
    grid_size: int = 0,
    grid_query_frame: int = 0,
) -> tuple[torch.Tensor, int]:
    """Build the queries the predictor passes to the model.

    Args:
        batch: batch size ``B``.
        frame_size: ``(H, W)`` of the user's video.
        model_resolution: ``(H_m, W_m)`` the video is resized to.
        queries, segm_mask, grid_size, grid_query_frame: as for ``CoTracker3Predictor.__call__``.

    Returns:
        ``(B, N', 3)`` float32 rows ``(t, x, y)`` in model-resolution pixels (on the device of
        ``queries``, else the CPU): the ``N`` user points first, then the 6x6 support grid (t = 0)
        where the mode uses one; and ``N``.
    """
    (h, w), (res_h, res_w) = frame_size, model_resolution
    if queries is not None:
        if grid_size or segm_mask is not None:
            raise CoTrackerInputError("give either queries or grid_size (+ segm_mask), not both")
        if queries.dim() != 3 or queries.shape[0] != batch or queries.shape[2] != 3:
            raise CoTrackerInputError(f"queries must be ({batch}, N, 3), got {tuple(queries.shape)}")
        scale = torch.tensor([1.0, (res_w - 1) / (w - 1), (res_h - 1) / (h - 1)], device=queries.device)
        user = queries.float() * scale
        user = torch.cat([user[..., :1].trunc(), user[..., 1:]], dim=-1)
    elif grid_size > 0:
        points = grid_points(grid_size, (res_h, res_w))
        if segm_mask is not None:
            points = _mask_filter(segm_mask.cpu(), points, (res_h, res_w))
        user = torch.cat([torch.full_like(points[:, :1], float(grid_query_frame)), points], dim=-1)
        user = user.expand(batch, -1, -1)
    else:
        raise CoTrackerInputError("give queries or grid_size > 0 (dense mode is not supported)")
    if queries is None and segm_mask is None:
        return user, user.shape[1]
    support = grid_points(SUPPORT_GRID_SIZE, (res_h, res_w)).to(user.device)
    support = torch.cat([torch.zeros_like(support[:, :1]), support], dim=-1).expand(batch, -1, -1)
    return torch.cat([user, support], dim=1), user.shape[1]


class CoTracker3Predictor:
    """Runs a ``CoTracker3Offline`` at its model resolution on videos of any size."""

    def __init__(self, model: CoTracker3Offline, iters: int = PREDICTOR_ITERS) -> None:
        self.model = model
        self.iters = iters

    @torch.no_grad()
    def __call__(
        self,
        video: torch.Tensor,
        queries: torch.Tensor | None = None,
        segm_mask: torch.Tensor | None = None,
        grid_size: int = 0,
        grid_query_frame: int = 0,
        backward_tracking: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Track points through ``video``.

        Args:
            video: ``(B, T, 3, H, W)`` float RGB in ``[0, 255]``, any size with ``H, W >= 2``.
            queries: ``(B, N, 3)`` rows ``(t, x, y)`` in pixels of ``video`` (t truncated to an
                integer); a 6x6 support grid is tracked along with them.
            segm_mask: ``(B, 1, H, W)``, identical across the batch; restricts a ``grid_size`` grid to
                its non-zero pixels (a support grid is then added).
            grid_size: ``g > 0`` tracks a ``g x g`` grid (on the model-resolution frame) queried at
                ``grid_query_frame``.
            backward_tracking: also track backwards in time from each query frame (a second model
                pass on the time-reversed video fills the frames before each query frame).

        Returns:
            ``tracks`` ``(B, T, N, 2)`` float32 ``(x, y)`` in pixels of ``video`` and ``visibility``
            ``(B, T, N)`` bool. Each track sits exactly on its query, visible, at its query frame.
        """
        if video.dim() != 5 or video.shape[2] != 3 or min(video.shape[-2:]) < 2:
            raise CoTrackerInputError(f"video must be (B, T, 3, H, W) with H, W >= 2, got {tuple(video.shape)}")
        b, t, _, h, w = video.shape
        device = video.device
        res_h, res_w = self.model.model_resolution
        frames = F.interpolate(video.flatten(0, 1).float(), (res_h, res_w), mode="bilinear", align_corners=True)
        frames = frames.view(b, t, 3, res_h, res_w)
        all_queries, n = model_queries(b, (h, w), (res_h, res_w), queries, segm_mask, grid_size, grid_query_frame)
        all_queries = all_queries.to(device)
        tracks, vis, _ = self.model(frames, all_queries, iters=self.iters)
        query_frames = all_queries[..., 0].long()
        steps = torch.arange(t, device=device)[None, :, None]
        if backward_tracking and bool((query_frames > 0).any()):  # tracks queried at t = 0 need no pass
            reversed_queries = torch.cat([(t - 1 - query_frames[..., None]).float(), all_queries[..., 1:]], -1)
            back_tracks, back_vis, _ = self.model(frames.flip(1), reversed_queries, iters=self.iters)
            before = steps < query_frames[:, None, :]
            tracks = torch.where(before[..., None], back_tracks.flip(1), tracks)
            vis = torch.where(before, back_vis.flip(1), vis)
        at_query = steps == query_frames[:, None, :n]
        tracks = torch.where(at_query[..., None], all_queries[:, None, :n, 1:], tracks[:, :, :n])
        visible = (vis[:, :, :n] > VISIBILITY_THRESHOLD) | at_query
        scale_back = tracks.new_tensor([(w - 1) / (res_w - 1), (h - 1) / (res_h - 1)])
        return tracks * scale_back, visible
