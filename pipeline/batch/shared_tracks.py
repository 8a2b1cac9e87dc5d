"""Point tracks computed once per video, at the working resolution, for every window to share.

The video is read chunk by chunk (``tracker.chunk_frames`` frames resized to the working resolution) and a
query grid is seeded every ``tracker.query_every`` frames; each point is tracked over the lifetime that
guidance's voting window needs around its query frame (``smite_ops.tracking.long_video``).
"""

from __future__ import annotations

import fsspec
import torch

from pipeline.config import ConfigError, JobConfig
from pipeline.io.video import VideoInfo, read_frames
from smite_ops.tracking.base import PointTracker
from smite_ops.tracking.cotracker3 import CoTracker3Tracker, load_cotracker3
from smite_ops.tracking.long_video import ChunkConfig, VideoTracks, track_long_video
from smite_ops.tracking.lucas_kanade import LucasKanadeTracker
from smite_ops.tracking.queries import grid_queries, query_frames_for

NO_CHECKPOINT = "tracker.checkpoint: CoTracker3 needs its checkpoint file; set it, or tracker.kind=lucas_kanade"


def needs_tracks(config: JobConfig) -> bool:
    """Whether a segmentation job computes point tracks (guidance on, or tracks written out)."""
    return config.guidance.enabled or config.output.tracks


def check_tracker(config: JobConfig) -> None:
    """Fail fast when a job needs tracks from CoTracker3 but names no checkpoint, or one that does not exist.

    Raises:
        ConfigError: one line naming the key (and, for no checkpoint, the two ways out).
    """
    checkpoint = config.tracker.checkpoint
    if not needs_tracks(config) or config.tracker.kind != "cotracker3":
        return
    if checkpoint is None:
        raise ConfigError(NO_CHECKPOINT)
    fs, path = fsspec.core.url_to_fs(checkpoint)
    if not fs.isfile(path):
        raise ConfigError(f"tracker.checkpoint: {checkpoint}: no such file")


def make_tracker(config: JobConfig) -> PointTracker:
    """The tracker ``config.tracker.kind`` names: CoTracker3 (needs ``tracker.checkpoint``) or Lucas-Kanade.

    Raises:
        ConfigError: CoTracker3 is asked for without a checkpoint.
    """
    tracker = config.tracker
    if tracker.kind == "lucas_kanade":
        return LucasKanadeTracker()
    if tracker.checkpoint is None:
        raise ConfigError(NO_CHECKPOINT)
    from pipeline.method.backbone_source import (
        job_device,  # imported here: it pulls in diffusers (~10 s), LK runs never need it
    )

    model = load_cotracker3(tracker.checkpoint, device=job_device(config.runtime))
    return CoTracker3Tracker(model, iters=tracker.iterations)


def tracking_horizon(config: JobConfig) -> int:
    """Frames each point is tracked before and after its query frame, in frames.

    Every frame lies within ``query_every // 2`` frames of a query frame and the voting window reaches
    ``voting_window // 2`` frames further, so this horizon covers every voting window.
    """
    return config.tracker.query_every // 2 + config.guidance.voting_window // 2


def compute_video_tracks(info: VideoInfo, config: JobConfig, tracker: PointTracker | None = None) -> VideoTracks:
    """Track a query grid through the video ``info.uri`` in pixels of the square working resolution.

    ``tracker`` defaults to :func:`make_tracker` of the configuration.

    Returns:
        ``VideoTracks`` with ``points`` in ``(x, y)`` pixels of ``resolution x resolution`` frames.
    """
    size = config.model.resolution
    tracker_config = config.tracker

    def read_chunk(start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(read_frames(info.uri, start, stop, size=(size, size))).permute(0, 3, 1, 2)

    query_frames = query_frames_for(info.num_frames, tracker_config.query_every)
    queries = grid_queries(size, size, query_frames, tracker_config.grid_spacing)
    chunks = ChunkConfig(
        chunk_frames=tracker_config.chunk_frames,
        overlap_frames=tracker_config.chunk_overlap,
        horizon=tracking_horizon(config),
    )
    return track_long_video(tracker or make_tracker(config), read_chunk, info.num_frames, queries, chunks)
