"""Batch outputs without Ray: manifests, failures.parquet, the tracks Parquet, stitch order."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from pipeline.batch.stitch import ScoreStitcher, native_probabilities
from pipeline.batch.windows import plan_windows
from pipeline.sinks.manifest import (
    Failure,
    VideoManifest,
    is_committed,
    read_failures,
    read_manifest,
    update_failures,
    write_manifest,
)
from pipeline.sinks.tracks import write_tracks
from smite_ops.tracking.long_video import VideoTracks, dense_tracks


def _manifest(video_id: str, key: str) -> VideoManifest:
    return VideoManifest(
        video_id=video_id, uri=f"/in/{video_id}.mp4", num_frames=3, fps=24.0, height=4, width=5, model_id="m",
        part_names=["background", "a"], config_digest="c0ffee", outputs={"masks": "x"}, timings={"total": 1.0},
        mask_rows=6, commit_key=key,
    )


def test_a_manifest_marks_a_video_committed_for_its_commit_key(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert not is_committed(root, "clip", "d1") and read_manifest(root, "clip") is None
    path = write_manifest(root, _manifest("clip", "d1"))
    assert Path(path) == tmp_path / "_manifest" / "clip.json"
    assert [p.name for p in (tmp_path / "_manifest").iterdir()] == ["clip.json"]  # no pending file left
    data = read_manifest(root, "clip")
    assert data is not None and data["num_frames"] == 3 and data["versions"]["pyarrow"] != "unknown"
    assert is_committed(root, "clip", "d1") and not is_committed(root, "clip", "d2")
    write_manifest(root, _manifest("keyless", ""))  # written without a key (older versions): never skipped
    assert not is_committed(root, "keyless", "")
    (tmp_path / "_manifest" / "broken.json").write_text("{not json")
    assert not is_committed(root, "broken", "d1")


def test_failures_replace_the_rows_of_processed_videos_only(tmp_path: Path) -> None:
    root = str(tmp_path)
    update_failures(root, {"a", "b"}, [Failure("b", "/b.mp4", "VideoError", "/b.mp4: empty file (0 bytes)"),
                                       Failure("a", "/a.mp4", "VideoError", "/a.mp4: no such file")])
    assert [f.video_id for f in read_failures(root)] == ["a", "b"]
    path = update_failures(root, {"a", "c"}, [Failure("c", "/c.mp4", "ValueError", "bad")])
    assert [(f.video_id, f.error_type) for f in read_failures(root)] == [("b", "VideoError"), ("c", "ValueError")]
    assert pq.read_table(path).column_names == ["video_id", "uri", "error_type", "message"]
    update_failures(root, {"b", "c"}, [])
    assert read_failures(root) == [] and Path(path).exists()


def test_tracks_round_trip_through_parquet(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    n, length, frames = 5, 4, 9
    tracks = VideoTracks(
        num_frames=frames, band_start=torch.tensor([0, 2, 5, 3, 1]),
        points=torch.rand(n, length, 2, generator=generator) * 32,
        visible=torch.rand(n, length, generator=generator) > 0.3, query_frames=torch.tensor([1, 3, 6, 4, 2]),
    )
    folder = write_tracks(str(tmp_path), "clip", tracks, frame_size=32)
    table = pq.read_table(Path(folder) / "part-00000.parquet")
    assert table.schema.metadata[b"frame_size"] == b"32" and table.num_rows == n * length
    dense = dense_tracks(tracks)
    for row in table.to_pylist():
        point, frame = row["point_id"], row["frame_index"]
        assert tracks.band_start[point] <= frame < tracks.band_start[point] + length
        assert row["query_frame"] == int(tracks.query_frames[point])
        assert (row["x"], row["y"]) == pytest.approx(dense.points[frame, point].tolist())
        assert row["visible"] == bool(dense.visible[frame, point])


def test_stitched_frames_are_bit_identical_whatever_the_arrival_order() -> None:
    windows = plan_windows(30, 16, 8)  # frames 14 and 15 lie in three windows
    generator = torch.Generator().manual_seed(1)
    scores = {w: torch.randn(w.length, 3, 5, 5, generator=generator) for w in windows}

    def stitch(order: list) -> torch.Tensor:
        stitcher = ScoreStitcher(windows, 30)
        out = dict(item for w in order for item in stitcher.add(w, scores[w]))
        return torch.stack([out[f] for f in range(30)])

    forward = stitch(windows)
    assert torch.equal(forward, stitch(list(reversed(windows))))
    assert torch.equal(forward, stitch([windows[1], windows[2], windows[0]]))
    probabilities = native_probabilities(forward[0], 7, 9)
    assert probabilities.shape == (3, 7, 9)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(7, 9))
