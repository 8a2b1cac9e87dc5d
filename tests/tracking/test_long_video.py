"""Chunked tracking of long videos, window views of shared tracks, and query planning."""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np
import pytest
import torch

from smite_ops.tracking.base import Tracks
from smite_ops.tracking.cotracker3 import CoTracker3Offline, CoTracker3Tracker
from smite_ops.tracking.long_video import (
    ChunkConfig,
    VideoTracks,
    dense_tracks,
    plan_chunks,
    slice_tracks,
    track_long_video,
)
from smite_ops.tracking.lucas_kanade import LucasKanadeTracker
from smite_ops.tracking.queries import grid_queries, query_frames_for

SIZE, NUM_FRAMES = 64, 300
CONFIG = ChunkConfig(chunk_frames=40, overlap_frames=8, horizon=None)


class WanderingTexture:
    """A 300-frame 64x64 video rendered on demand: a smooth texture on a slow looping, wobbling path."""

    def __init__(self) -> None:
        noise = np.random.default_rng(7).random((4 * SIZE, 4 * SIZE, 3)).astype(np.float32)
        self.texture = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX)
        self.texture = self.texture.astype(np.uint8)
        self.reads: list[tuple[int, int]] = []

    def frame(self, t: int) -> np.ndarray:
        phase = 2 * np.pi * t / NUM_FRAMES
        angle = 0.1 * np.sin(2 * phase)
        cos, sin = np.cos(angle), np.sin(angle)
        origin = 2 * SIZE + np.array([12 * np.sin(phase), 9 * np.sin(3 * phase)])
        rotation = np.array([[cos, -sin], [sin, cos]])
        shift = SIZE / 2 - rotation @ origin
        return cv2.warpAffine(self.texture, np.hstack([rotation, shift[:, None]]), (SIZE, SIZE))

    def read_chunk(self, start: int, stop: int) -> torch.Tensor:
        self.reads.append((start, stop))
        frames = np.stack([self.frame(t) for t in range(start, stop)])
        return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def video() -> WanderingTexture:
    return WanderingTexture()


@pytest.fixture(scope="module")
def whole() -> torch.Tensor:
    """The whole video at once, for the unchunked reference runs."""
    return WanderingTexture().read_chunk(0, NUM_FRAMES)


def test_plan_chunks_known_answers() -> None:
    assert plan_chunks(100, 48, 8) == [(0, 48), (40, 88), (52, 100)]
    assert plan_chunks(88, 48, 8) == [(0, 48), (40, 88)]
    assert plan_chunks(30, 48, 8) == [(0, 30)]
    chunks = plan_chunks(NUM_FRAMES, 40, 8)
    assert chunks[0][0] == 0 and chunks[-1][1] == NUM_FRAMES
    assert all(stop - start == 40 for start, stop in chunks)
    assert all(b[0] <= a[1] - 8 for a, b in pairwise(chunks))


def test_chunked_tracks_keep_identity_and_match_the_unchunked_tracker(
    video: WanderingTexture, whole: torch.Tensor
) -> None:
    torch.set_num_threads(1)
    queries = grid_queries(SIZE, SIZE, [0, 150, NUM_FRAMES - 1], spacing=12)
    tracker = LucasKanadeTracker()

    video.reads.clear()
    chunked = dense_tracks(track_long_video(tracker, video.read_chunk, NUM_FRAMES, queries, CONFIG))
    reference = tracker.track(whole, queries)

    chunks = plan_chunks(NUM_FRAMES, CONFIG.chunk_frames, CONFIG.overlap_frames)
    assert video.reads[: len(chunks)] == chunks  # forward pass: each chunk once, in order
    assert all(stop - start <= CONFIG.chunk_frames for start, stop in video.reads)
    both = chunked.visible & reference.visible
    assert (chunked.visible == reference.visible).float().mean() >= 0.99
    assert (chunked.points - reference.points).norm(dim=2)[both].max() <= 0.05
    # identity across borders: many points stay visible through several chunks, and never jump
    assert (chunked.visible[:100].all(dim=0)).sum() >= 10
    for start, _ in chunks[1:]:
        for border in (start, start + CONFIG.overlap_frames):
            steady = chunked.visible[border - 1] & chunked.visible[border]
            jump = (chunked.points[border] - chunked.points[border - 1]).norm(dim=1)[steady]
            assert jump.numel() > 0 and jump.max() <= 3.0


def test_horizon_bounds_each_lifetime(video: WanderingTexture, whole: torch.Tensor) -> None:
    torch.set_num_threads(1)
    query_frames = query_frames_for(NUM_FRAMES, every=16)
    queries = grid_queries(SIZE, SIZE, query_frames, spacing=16)
    config = ChunkConfig(chunk_frames=40, overlap_frames=8, horizon=10)

    tracks = track_long_video(LucasKanadeTracker(), video.read_chunk, NUM_FRAMES, queries, config)
    reference = LucasKanadeTracker().track(whole, queries)

    assert tracks.points.shape == (len(queries), 21, 2)
    assert ((tracks.band_start <= tracks.query_frames) & (tracks.query_frames < tracks.band_start + 21)).all()
    assert tracks.band_start.min() == 0 and (tracks.band_start + 21).max() == NUM_FRAMES
    dense = dense_tracks(tracks)
    frames = torch.arange(NUM_FRAMES)[:, None]
    lifetime = (frames >= tracks.band_start) & (frames < tracks.band_start + 21)
    assert not dense.visible[~lifetime].any()
    assert (dense.visible[lifetime] == reference.visible[lifetime]).float().mean() >= 0.99
    both = dense.visible & reference.visible
    assert (dense.points - reference.points).norm(dim=2)[both].max() <= 0.05


def test_cotracker3_tracks_a_long_video_in_chunks(
    video: WanderingTexture, synthetic_state_dict: dict[str, torch.Tensor], single_thread: None
) -> None:
    model = CoTracker3Offline(model_resolution=(64, 64))  # synthetic weights: tracks are arbitrary but finite
    model.load_state_dict(synthetic_state_dict, strict=True)
    tracker = CoTracker3Tracker(model.eval(), iters=1)
    queries = grid_queries(SIZE, SIZE, [0, 29], spacing=16)
    config = ChunkConfig(chunk_frames=12, overlap_frames=4, horizon=None)

    video.reads.clear()
    tracks = track_long_video(tracker, video.read_chunk, 30, queries, config)

    assert tracks.points.shape == (len(queries), 30, 2) and torch.isfinite(tracks.points).all()
    at_query = tracks.points[torch.arange(len(queries)), tracks.query_frames]
    assert torch.allclose(at_query, queries[:, 1:], atol=1e-3)
    assert tracks.visible[torch.arange(len(queries)), tracks.query_frames].all()
    assert all(stop - start <= 12 for start, stop in video.reads)


def _small_video_tracks() -> VideoTracks:
    """Three points, lifetime 3, in a 6-frame video; point ``n`` is at ``x = y = 3 n + j`` in lifetime frame ``j``."""
    points = torch.arange(9, dtype=torch.float32).reshape(3, 3, 1).expand(3, 3, 2).contiguous()
    visible = torch.tensor([[True, True, True], [False, True, False], [True, False, False]])
    return VideoTracks(6, torch.tensor([0, 2, 3]), points, visible, torch.tensor([1, 3, 3]))


def test_slice_tracks_keeps_points_visible_in_the_window() -> None:
    tracks = _small_video_tracks()

    window = slice_tracks(tracks, 2, 5)

    assert isinstance(window, Tracks)
    assert window.points.shape == (3, 3, 2) and window.visible.shape == (3, 3)
    assert window.query_frames.tolist() == [-1, 1, 1]  # window-relative
    assert window.visible.tolist() == [[True, False, False], [False, True, True], [False, False, False]]
    # point 0's lifetime ends before frame 3 and point 2's starts at frame 3: nearest lifetime frames held
    assert window.points[..., 0].tolist() == [[2.0, 3.0, 6.0], [2.0, 4.0, 6.0], [2.0, 5.0, 7.0]]
    assert slice_tracks(tracks, 5, 6).num_points == 0
    assert dense_tracks(tracks).visible.sum() == tracks.visible.sum()


def test_slice_tracks_of_real_tracks_matches_the_dense_view(video: WanderingTexture) -> None:
    torch.set_num_threads(1)
    queries = grid_queries(SIZE, SIZE, query_frames_for(120, every=16), spacing=16)
    tracks = track_long_video(LucasKanadeTracker(), video.read_chunk, 120, queries, ChunkConfig(40, 8, horizon=12))
    dense = dense_tracks(tracks)
    for start, stop in [(0, 16), (52, 68), (104, 120)]:
        window = slice_tracks(tracks, start, stop)
        seen = dense.visible[start:stop].any(dim=0)
        assert window.num_frames == stop - start and window.num_points == int(seen.sum()) > 0
        assert torch.equal(window.points, dense.points[start:stop, seen])
        assert torch.equal(window.query_frames, dense.query_frames[seen] - start)


@pytest.mark.parametrize(("start", "stop"), [(-1, 3), (3, 3), (4, 7)])
def test_slice_tracks_refuses_bad_windows(start: int, stop: int) -> None:
    with pytest.raises(ValueError, match="window"):
        slice_tracks(_small_video_tracks(), start, stop)


def test_read_chunk_of_the_wrong_length_is_refused() -> None:
    def short_read(start: int, stop: int) -> torch.Tensor:
        return torch.zeros((stop - start - 1, 3, 16, 16), dtype=torch.uint8)

    with pytest.raises(ValueError, match=r"read_chunk\(0, 40\) returned shape \(39, 3, 16, 16\)"):
        track_long_video(LucasKanadeTracker(), short_read, 100, torch.tensor([[0.0, 4.0, 4.0]]), CONFIG)


def test_chunk_config_is_validated() -> None:
    with pytest.raises(ValueError, match="overlap_frames"):
        ChunkConfig(chunk_frames=8, overlap_frames=8)
    with pytest.raises(ValueError, match="horizon"):
        ChunkConfig(horizon=-1)


def test_grid_queries_known_answers() -> None:
    queries = grid_queries(16, 20, [3, 0], spacing=8)
    assert queries.tolist() == [
        [3.0, 4.0, 4.0], [3.0, 12.0, 4.0], [3.0, 4.0, 12.0], [3.0, 12.0, 12.0],
        [0.0, 4.0, 4.0], [0.0, 12.0, 4.0], [0.0, 4.0, 12.0], [0.0, 12.0, 12.0],
    ]  # fmt: skip
    smite = grid_queries(512, 512, [0], spacing=8)  # METHOD.md §5: 64 x 64 cell centres
    assert smite.shape == (4096, 3)
    assert smite[0].tolist() == [0.0, 4.0, 4.0] and smite[-1].tolist() == [0.0, 508.0, 508.0]
    cells = (smite[:, 1:] / 8 - 0.5).round().long()  # the projection onto the 64 x 64 grid
    assert cells[:, 0].tolist() == list(range(64)) * 64
    assert cells[:, 1].tolist() == [v for v in range(64) for _ in range(64)]


@pytest.mark.parametrize(("num_frames", "every"), [(1, 8), (7, 8), (300, 8), (301, 16), (40, 1)])
def test_query_frames_cover_every_frame(num_frames: int, every: int) -> None:
    frames = query_frames_for(num_frames, every)
    assert len(frames) == -(-num_frames // every) and frames == sorted(frames)
    distance = np.abs(np.arange(num_frames)[:, None] - np.array(frames)[None, :]).min(axis=1)
    assert distance.max() <= every // 2


def test_query_planning_refuses_bad_arguments() -> None:
    assert query_frames_for(20, 8) == [3, 11, 17]
    with pytest.raises(ValueError, match="interval"):
        query_frames_for(10, 0)
    with pytest.raises(ValueError, match="spacing"):
        grid_queries(16, 16, [0], spacing=0)


class CountingTracker(LucasKanadeTracker):
    """Lucas-Kanade that sums the points x frames of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.point_frames = 0

    def track(self, video: torch.Tensor, queries: torch.Tensor) -> Tracks:
        self.point_frames += video.shape[0] * queries.shape[0]
        return super().track(video, queries)


def test_tracks_record_the_tracker_work_spent_on_them(video: WanderingTexture) -> None:
    torch.set_num_threads(1)
    queries = grid_queries(SIZE, SIZE, query_frames_for(120, every=16), spacing=16)
    tracker = CountingTracker()
    tracks = track_long_video(tracker, video.read_chunk, 120, queries, ChunkConfig(40, 8, horizon=12))
    assert tracks.point_frames == tracker.point_frames > 120 * 16  # forward and backward hand-overs included
    few = grid_queries(SIZE, SIZE, [0, 10], spacing=32)  # 2 x 4 points
    single = track_long_video(LucasKanadeTracker(), video.read_chunk, 30, few, CONFIG)
    assert single.point_frames == 30 * 8  # one chunk: every point over every frame
