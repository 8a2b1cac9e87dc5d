"""CoTracker3 feature pyramid, 7x7 patch sampling and 4-D correlation features.

Coordinates are ``(x, y)`` in cells of the level being sampled, align-corners convention (cell ``j``
sits at coordinate ``j``); sampling is bilinear with border clamping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CORR_RADIUS = 3
PATCH_SIZE = 2 * CORR_RADIUS + 1
NUM_LEVELS = 4


def patch_offsets(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(49, 2)`` ``(dx, dy)`` cell offsets of a 7x7 patch; entry ``7a + b`` is ``(a - 3, b - 3)``.

    The first patch index runs along x, the second along y (the checkpoint's layout).
    """
    steps = torch.arange(-CORR_RADIUS, CORR_RADIUS + 1, device=device, dtype=dtype)
    dx, dy = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


def sample_bilinear(fmap: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample feature maps at fractional cell positions, clamping to the border.

    Args:
        fmap: ``(F, C, h, w)`` feature maps.
        points: ``(F, M, 2)`` positions ``(x, y)`` in cells of ``fmap``.

    Returns:
        ``(F, M, C)`` sampled features.
    """
    h, w = fmap.shape[-2:]
    scale = points.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = (points * scale - 1.0).unsqueeze(2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(-1).transpose(1, 2)


def feature_pyramid(features: torch.Tensor) -> list[torch.Tensor]:
    """Build the 4-level correlation pyramid.

    Args:
        features: ``(B, T, C, h, w)`` raw encoder features.

    Returns:
        ``NUM_LEVELS`` tensors ``(B, T, C, h / 2^l, w / 2^l)`` (floor): level 0 is the L2-normalised
        features, each further level a 2x2 average pool of the previous one (not re-normalised).
    """
    b, t = features.shape[:2]
    level = features / features.square().sum(dim=2, keepdim=True).clamp_min(1e-12).sqrt()
    levels = [level]
    for _ in range(NUM_LEVELS - 1):
        pooled = F.avg_pool2d(level.flatten(0, 1), kernel_size=2, stride=2)
        level = pooled.view(b, t, *pooled.shape[1:])
        levels.append(level)
    return levels


def query_support(level: torch.Tensor, frames: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Sample each query's 7x7 support patch from its own query frame.

    Args:
        level: ``(B, T, C, h, w)`` one pyramid level.
        frames: ``(B, N)`` int64 query frame indices in ``[0, T)``.
        centres: ``(B, N, 2)`` patch centres ``(x, y)`` in cells of ``level``.

    Returns:
        ``(B, N, 49, C)`` support features (patch entries in ``patch_offsets`` order).
    """
    b, t, c = level.shape[:3]
    n = frames.shape[1]
    maps = level.flatten(0, 1)
    flat_frames = (frames + torch.arange(b, device=frames.device)[:, None] * t).reshape(-1)
    points = (centres[:, :, None, :] + patch_offsets(centres.device, centres.dtype)).reshape(b * n, -1, 2)
    support = points.new_empty(b * n, PATCH_SIZE * PATCH_SIZE, c)
    for frame in flat_frames.unique().tolist():
        selected = flat_frames == frame
        support[selected] = sample_bilinear(maps[frame : frame + 1], points[selected].reshape(1, -1, 2)).view(
            -1, PATCH_SIZE * PATCH_SIZE, c
        )
    return support.view(b, n, PATCH_SIZE * PATCH_SIZE, c)


def correlate(level: torch.Tensor, coords: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """4-D correlation between the 7x7 patch around each track and its query support patch.

    Args:
        level: ``(B, T, C, h, w)`` one pyramid level.
        coords: ``(B, T, N, 2)`` current track positions ``(x, y)`` in cells of ``level``.
        support: ``(B, N, 49, C)`` query support features of the same level.

    Returns:
        ``(B, T, N, 2401)`` dot products ordered ``(h, w, i, j)``: the current patch entry
        ``(h, w)`` slowest, the support entry ``(i, j)`` fastest.
    """
    b, t, n = coords.shape[:3]
    c = level.shape[2]
    points = (coords[:, :, :, None, :] + patch_offsets(coords.device, coords.dtype)).reshape(b * t, -1, 2)
    patches = sample_bilinear(level.flatten(0, 1), points).view(b, t, n, PATCH_SIZE * PATCH_SIZE, c)
    corr = patches @ support.transpose(-1, -2)[:, None]
    return corr.flatten(3)
