"""The optional point-track output: ``tracks/video_id=<id>/part-00000.parquet`` (hive-partitioned like masks).

One row per (point, frame of its lifetime), in point then frame order:
``point_id (int32), query_frame (int32), frame_index (int32), x, y (float32 pixels), visible (bool)``.
Coordinates are in pixels of the square working-resolution frame whose side is stored in the file's
schema metadata under ``frame_size``. The file is written in the run's staging folder (outside ``tracks/``) and
moved into place.
"""

from __future__ import annotations

import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.sinks.out_root import published_path, staging_path
from smite_ops.tracking.long_video import VideoTracks

TRACKS_SCHEMA = pa.schema(
    [
        ("point_id", pa.int32()),
        ("query_frame", pa.int32()),
        ("frame_index", pa.int32()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("visible", pa.bool_()),
    ]
)


def tracks_table(tracks: VideoTracks, frame_size: int) -> pa.Table:
    """The rows of ``tracks`` (see the module docstring) as a table carrying ``frame_size`` metadata."""
    n, length = tracks.visible.shape
    frames = tracks.band_start[:, None] + torch.arange(length)[None, :]
    columns = {
        "point_id": torch.arange(n, dtype=torch.int32)[:, None].expand(n, length),
        "query_frame": tracks.query_frames.to(torch.int32)[:, None].expand(n, length),
        "frame_index": frames.to(torch.int32),
        "x": tracks.points[..., 0],
        "y": tracks.points[..., 1],
        "visible": tracks.visible,
    }
    arrays = [pa.array(columns[field.name].reshape(-1).numpy(), type=field.type) for field in TRACKS_SCHEMA]
    schema = TRACKS_SCHEMA.with_metadata({"frame_size": str(frame_size)})
    return pa.Table.from_arrays(arrays, schema=schema)


def track_partition(root: str, video_id: str) -> str:
    """Where one video's published tracks live: ``<root>/tracks/video_id=<id>``, a path of ``root``'s filesystem."""
    return published_path(root, "tracks", f"video_id={video_id}")


def write_tracks(
    root: str, video_id: str, tracks: VideoTracks, frame_size: int, run_id: str | None = None
) -> str:
    """Write one video's tracks under ``root`` (local path or fsspec URL); returns the partition folder.

    ``run_id`` names the staging folder (default: a fresh one).
    """
    fs, _ = fsspec.core.url_to_fs(str(root))
    final_dir = track_partition(root, video_id)
    pending_dir = staging_path(root, run_id or uuid.uuid4().hex, "tracks", f"video_id={video_id}")
    fs.makedirs(pending_dir, exist_ok=True)
    with fs.open(f"{pending_dir}/part-00000.parquet", "wb") as file:
        pq.write_table(tracks_table(tracks, frame_size), file, compression="zstd")
    if fs.exists(final_dir):
        fs.rm(final_dir, recursive=True)
    fs.mv(pending_dir, final_dir, recursive=True)
    return final_dir
