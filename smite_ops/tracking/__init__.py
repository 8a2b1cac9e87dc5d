"""Point tracking: a checkpoint-compatible CoTracker3 and a weight-free fallback, behind `PointTracker`.

Whole videos are tracked once, in overlapping chunks (:func:`track_long_video`), and every window reads its
view with :func:`slice_tracks`.
"""

from smite_ops.tracking.base import PointTracker, Tracks
from smite_ops.tracking.cotracker3 import CoTracker3Tracker, load_cotracker3
from smite_ops.tracking.long_video import ChunkConfig, VideoTracks, dense_tracks, slice_tracks, track_long_video
from smite_ops.tracking.lucas_kanade import LucasKanadeConfig, LucasKanadeTracker
from smite_ops.tracking.queries import grid_queries, query_frames_for

__all__ = [
    "ChunkConfig",
    "CoTracker3Tracker",
    "LucasKanadeConfig",
    "LucasKanadeTracker",
    "PointTracker",
    "Tracks",
    "VideoTracks",
    "dense_tracks",
    "grid_queries",
    "load_cotracker3",
    "query_frames_for",
    "slice_tracks",
    "track_long_video",
]
