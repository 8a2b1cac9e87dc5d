"""The Lucas-Kanade fallback tracker on synthetic textures with known motion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from smite_ops.tracking.lucas_kanade import LucasKanadeConfig, LucasKanadeTracker
from smite_ops.tracking.queries import grid_queries

SIZE = 96


def smooth_texture(seed: int, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 blurred noise stretched to the full intensity range."""
    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.5)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def rigid_motion(t: int) -> np.ndarray:
    """``(3, 3)`` texture -> frame map at frame ``t``: 0.8 deg/frame about the centre, drift (0.9, -0.6) px/frame."""
    angle = np.deg2rad(0.8 * t)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([SIZE / 2, SIZE / 2])
    shift = centre - rotation @ (1.5 * np.array([SIZE, SIZE])) + np.array([0.9, -0.6]) * t
    return np.vstack([np.hstack([rotation, shift[:, None]]), [0.0, 0.0, 1.0]])


def to_video(frames: list[np.ndarray]) -> torch.Tensor:
    """T ``(H, W, 3)`` uint8 frames -> ``(T, 3, H, W)`` uint8."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def test_median_endpoint_error_under_rotation_and_translation() -> None:
    texture = smooth_texture(0, 3 * SIZE, 3 * SIZE)
    num_frames = 24
    video = to_video([cv2.warpAffine(texture, rigid_motion(t)[:2], (SIZE, SIZE)) for t in range(num_frames)])
    queries = grid_queries(SIZE, SIZE, [0, 12], spacing=8)  # frame 12: tracked both ways

    tracks = LucasKanadeTracker().track(video, queries)

    homogeneous = np.c_[queries[:, 1:].numpy(), np.ones(len(queries))]
    texture_xy = np.stack(
        [np.linalg.inv(rigid_motion(int(t))) @ p for t, p in zip(queries[:, 0].tolist(), homogeneous, strict=True)]
    )
    truth = np.stack([(rigid_motion(t) @ texture_xy.T).T[:, :2] for t in range(num_frames)])
    error = np.linalg.norm(tracks.points.numpy() - truth, axis=2)
    visible = tracks.visible.numpy()
    assert tracks.points.shape == (num_frames, len(queries), 2) and tracks.points.dtype == torch.float32
    assert visible.mean() > 0.7  # the rest have left the frame or were rejected near its border
    assert np.median(error[visible]) <= 1.0
    assert np.percentile(error[visible], 90) <= 1.5


def test_sliding_occluder_hides_the_points_it_covers() -> None:
    texture = smooth_texture(1, 2 * SIZE, 2 * SIZE)
    num_frames, side = 32, 30
    drift = np.array([0.5, 0.3])  # texture motion, px/frame
    frames, boxes = [], []
    for t in range(num_frames):
        shift = np.array([[1.0, 0.0, -SIZE / 2 + drift[0] * t], [0.0, 1.0, -SIZE / 2 + drift[1] * t]])
        frame = cv2.warpAffine(texture, shift, (SIZE, SIZE))
        left = -side + 4 * t  # a flat grey square sliding right at 4 px/frame
        frame[30 : 30 + side, max(left, 0) : max(left + side, 0)] = 128
        frames.append(frame)
        boxes.append((left, 30, left + side, 30 + side))
    queries = grid_queries(SIZE, SIZE, [0], spacing=6)

    tracks = LucasKanadeTracker().track(to_video(frames), queries)

    truth = queries[None, :, 1:].numpy() + drift * np.arange(num_frames)[:, None, None]
    x, y = truth[..., 0], truth[..., 1]
    left, top, right, bottom = (np.array(side)[:, None] for side in zip(*boxes, strict=True))
    covered = (x > left) & (x < right - 1) & (y > top) & (y < bottom - 1)
    never_near = ~((x > left - 12) & (x < right + 11) & (y > top - 12) & (y < bottom + 11)).any(axis=0)
    in_frame = ((x > 0) & (x < SIZE - 1) & (y > 0) & (y < SIZE - 1)).all(axis=0)
    visible = tracks.visible.numpy()
    assert covered.sum() > 300
    assert 1 - visible[covered].mean() >= 0.75
    assert visible[:, never_near & in_frame].mean() >= 0.95


def test_query_positions_are_kept_and_outside_queries_are_invisible() -> None:
    video = to_video([smooth_texture(2, 32, 40)] * 5)
    queries = torch.tensor([[2.0, 10.25, 12.5], [0.0, 20.0, 16.0], [4.0, -3.0, 5.0]])

    tracks = LucasKanadeTracker().track(video, queries)

    assert torch.equal(tracks.query_frames, torch.tensor([2, 0, 4]))
    assert torch.equal(tracks.points[2, 0], queries[0, 1:])
    assert torch.allclose(tracks.points[:, 0], queries[0, 1:].expand(5, 2), atol=0.05)  # a static video
    assert tracks.visible[:, :2].all()
    assert not tracks.visible[:, 2].any()


def test_lost_points_stay_lost_with_their_last_position() -> None:
    texture = smooth_texture(3, 48, 48)
    flat = np.full_like(texture, 90)
    video = to_video([texture, texture, flat, texture])
    tracks = LucasKanadeTracker().track(video, torch.tensor([[0.0, 24.0, 24.0]]))

    assert tracks.visible[:, 0].tolist() == [True, True, False, False]
    assert torch.allclose(tracks.points[3, 0], tracks.points[1, 0])


@pytest.mark.parametrize(
    ("video_shape", "queries", "message"),
    [
        ((4, 1, 16, 16), [[0.0, 1.0, 1.0]], "video must be"),
        ((4, 3, 16, 16), [[4.0, 1.0, 1.0]], "outside a video of 4 frames"),
        ((4, 3, 16, 16), [[1.5, 1.0, 1.0]], "whole numbers"),
        ((4, 3, 16, 16), [[1.0, 1.0]], r"\(N, 3\)"),
    ],
)
def test_bad_inputs_are_refused(video_shape: tuple[int, ...], queries: list[list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LucasKanadeTracker().track(torch.zeros(video_shape, dtype=torch.uint8), torch.tensor(queries))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="odd"):
        LucasKanadeConfig(window_size=16)
    with pytest.raises(ValueError, match="fb_threshold"):
        LucasKanadeConfig(fb_threshold=0.0)
