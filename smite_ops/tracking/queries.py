"""Query points for point trackers: regular grids seeded at regularly spaced query frames.

SMITE (METHOD.md §5) queries a dense grid with one point at the centre of every ``spacing`` x ``spacing``
pixel cell, ``(x, y) = ((u + 0.5) * spacing, (v + 0.5) * spacing)``. The reference seeds such a grid in
*every* frame of every window; here a video is seeded every ``every`` frames and the tracks are shared by
all windows (see ``long_video``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def grid_queries(height: int, width: int, query_frames: Sequence[int], spacing: float) -> torch.Tensor:
    """A regular grid of query points in each of ``query_frames``.

    Args:
        height, width: frame size in pixels.
        query_frames: frame indices to seed the grid in (any order; repeats give repeated points).
        spacing: grid cell size in pixels; a ``floor(width / spacing)`` x ``floor(height / spacing)``
            grid of cell centres ``((u + 0.5) * spacing, (v + 0.5) * spacing)``.

    Returns:
        ``(len(query_frames) * rows * cols, 3)`` float32 rows ``(t, x, y)``, grouped by query frame in
        the given order, each grid in row-major order (``y`` outer, ``x`` inner).
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if not 0 < spacing <= min(height, width):
        raise ValueError(f"grid spacing must be in (0, {min(height, width)}] px, got {spacing}")
    xs = (torch.arange(int(width // spacing), dtype=torch.float32) + 0.5) * spacing
    ys = (torch.arange(int(height // spacing), dtype=torch.float32) + 0.5) * spacing
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    cells = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)
    frames = torch.as_tensor(list(query_frames), dtype=torch.float32)
    per_frame = frames.repeat_interleave(cells.shape[0])[:, None]
    return torch.cat([per_frame, cells.repeat(frames.numel(), 1)], dim=1)


def query_frames_for(num_frames: int, every: int) -> list[int]:
    """Query frames so that every frame of the video lies within ``every // 2`` frames of one.

    The video is cut into consecutive blocks of ``every`` frames (the last one possibly shorter) and the
    middle frame of each block is a query frame. Points seeded there are fresh (little drift, mostly
    visible) in every frame of the block, and a voting window of ``w`` frames around any frame stays
    within ``every // 2 + w // 2`` frames of the nearest query frame (the ``horizon`` to track for).

    Returns:
        Sorted frame indices in ``[0, num_frames)``, ``ceil(num_frames / every)`` of them.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if every < 1:
        raise ValueError(f"query frame interval must be >= 1, got {every}")
    return [(start + min(start + every, num_frames) - 1) // 2 for start in range(0, num_frames, every)]


def query_frame_indices(queries: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Check ``(N, 3)`` queries ``(t, x, y)`` against a video of ``num_frames`` frames.

    Returns:
        ``(N,)`` int64 query frame indices.

    Raises:
        ValueError: the shape is wrong, a value is not finite, or a query frame is not an integer in
            ``[0, num_frames)``.
    """
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries must be (N, 3) rows (t, x, y), got shape {tuple(queries.shape)}")
    if not torch.isfinite(queries).all():
        raise ValueError("queries contain NaN or infinite values")
    frames = queries[:, 0]
    indices = frames.round().long()
    if not torch.equal(indices.to(frames.dtype), frames):
        raise ValueError("query frame indices (column 0) must be whole numbers")
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_frames):
        raise ValueError(
            f"query frames span [{int(indices.min())}, {int(indices.max())}], outside a video of {num_frames} frames"
        )
    return indices
