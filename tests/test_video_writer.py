"""Output writing off the driver, without Ray (issue 15, item 1): segments partition the frames, each is blended
exactly as the whole-video stitcher blends it, written in any order, and committed into the same dataset a
single writer would have produced; the driver-side bookkeeping releases each result once its readers are done."""

import itertools
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from pipeline.batch.actors import ShardResult, ShardStats, phase_a_reference
from pipeline.batch.plan import Shard, VideoPlan, covering_shards, plan_segments
from pipeline.batch.stitch import ScoreStitcher, native_probabilities, stitch_range
from pipeline.batch.video_job import VideoJob
from pipeline.batch.video_writer import (
    SegmentWritten,
    VideoOutputs,
    commit_video,
    discard_staged,
    withdraw_outputs,
    write_segment,
)
from pipeline.batch.windows import group_shards, plan_windows
from pipeline.io.inputs import VideoInput
from pipeline.io.video import VideoError, VideoInfo, concat_videos, probe_video, read_frames, write_video
from pipeline.sinks.manifest import read_manifest
from pipeline.sinks.masks import VideoMaskWriter
from pipeline.sinks.overlay import overlay_labels, part_palette
from smite_ops.tracking.long_video import VideoTracks

PARTS = ["background", "body", "wheel"]


def _shards(num_frames: int, window: int, overlap: int, per_shard: int) -> tuple[Shard, ...]:
    """The shards of a ``num_frames`` clip planned as the batch plans them."""
    windows = plan_windows(num_frames, window, overlap)
    return tuple(
        Shard("clip", "clip.mp4", index, tuple(group), num_frames)
        for index, group in enumerate(group_shards(windows, per_shard))
    )


@pytest.mark.parametrize(("frames", "window", "overlap", "per_shard"),
                         list(itertools.product([1, 7, 16, 17, 40, 61], [4, 16], [0, 3], [1, 2, 5])))
def test_segments_own_every_frame_once_and_name_exactly_the_shards_that_cover_them(
    frames: int, window: int, overlap: int, per_shard: int
) -> None:
    shards = _shards(frames, window, overlap, per_shard)
    segments = plan_segments(shards)
    owned = [f for segment in segments for f in range(segment.start, segment.stop)]
    assert owned == list(range(frames)) and all(s.start < s.stop for s in segments)
    for segment in segments:
        covering = {
            shard.index for shard in shards for w in shard.windows for f in range(segment.start, segment.stop)
            if w.start <= f < w.stop
        }
        assert segment.shards == tuple(sorted(covering)) == covering_shards(shards, segment.start, segment.stop)


def _scores(shards: tuple[Shard, ...], seed: int = 0) -> dict[int, ShardResult]:
    """Random float16 window scores ``(T, 3, 6, 6)`` for every shard, by shard index."""
    generator = torch.Generator().manual_seed(seed)
    return {
        shard.index: ShardResult(
            shard,
            tuple((w, torch.randn(w.length, len(PARTS), 6, 6, generator=generator).half()) for w in shard.windows),
        )
        for shard in shards
    }


def _whole_video(shards: tuple[Shard, ...], results: dict[int, ShardResult], frames: int) -> torch.Tensor:
    """The oracle: every frame blended by one whole-video stitcher, ``(frames, P, h, w)``."""
    stitcher = ScoreStitcher([w for shard in shards for w in shard.windows], frames)
    blended = dict(item for result in results.values() for w, s in result.scores for item in stitcher.add(w, s))
    return torch.stack([blended[f] for f in range(frames)])


def test_a_range_is_blended_bit_for_bit_as_the_whole_video_stitcher_blends_it() -> None:
    shards = _shards(30, 16, 8, 1)  # frames 14 and 15 lie in three windows
    results = _scores(shards)
    whole = _whole_video(shards, results, 30)
    for start, stop in [(0, 30), (0, 8), (8, 16), (14, 16), (29, 30)]:
        pairs = [pair for result in reversed(list(results.values())) for pair in result.scores]  # any order
        part = torch.stack([scores for _, scores in stitch_range(pairs, 30, start, stop)])
        assert torch.equal(part, whole[start:stop])
    with pytest.raises(ValueError, match=r"do not cover every frame of \[0, 30\)"):
        list(stitch_range(results[0].scores, 30, 0, 30))


def test_phase_b_reference_is_the_stitched_phase_a_scores_of_the_shards_frames() -> None:
    shards = _shards(40, 16, 8, 2)
    results = _scores(shards, seed=3)
    whole = _whole_video(shards, results, 40)
    for shard in shards:
        phase_a = tuple(results[i] for i in covering_shards(shards, shard.start, shard.stop))
        assert torch.equal(phase_a_reference(shard, phase_a), whole[shard.start : shard.stop])


@pytest.fixture
def video(tmp_path: Path) -> tuple[str, np.ndarray]:
    frames = np.random.default_rng(0).integers(0, 256, (21, 18, 26, 3), dtype=np.uint8)
    uri = str(tmp_path / "clip.mp4")
    write_video(uri, frames, fps=12.0)
    return uri, read_frames(uri)


def _outputs(root: Path, uri: str, overlays: bool) -> VideoOutputs:
    """Output description of the test clip under ``root`` (run ``run1``)."""
    return VideoOutputs(str(root), "run1", "clip", uri, probe_video(uri), PARTS, "model-x", 12.0 if overlays else None,
                        "digest", "key", 64)


def _files(root: Path) -> list[str]:
    """Every file under ``root``, relative, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_segments_written_in_any_order_commit_the_dataset_one_writer_would_write(video, tmp_path: Path) -> None:
    uri, decoded = video
    shards = _shards(21, 6, 2, 2)
    results = _scores(shards, seed=5)
    segments = plan_segments(shards)
    assert len(segments) == 3
    outputs = _outputs(tmp_path / "out", uri, overlays=True)
    written = [
        write_segment(outputs, segment, *(results[i] for i in reversed(segment.shards)))
        for segment in reversed(segments)
    ]
    assert [w.frames for w in written] == [s.stop - s.start for s in reversed(segments)]
    manifest = commit_video(outputs, tuple(reversed(written)), {"total": 2.0, "model": 1.5}, 42)

    blended = _whole_video(shards, results, 21)  # the single-writer oracle, in one pass
    palette = part_palette(len(PARTS))
    overlays = []
    with VideoMaskWriter(str(tmp_path / "oracle"), "clip", PARTS, "model-x") as oracle:
        for index, scores in enumerate(blended):
            probabilities = native_probabilities(scores, 18, 26)
            labels = probabilities.argmax(0).numpy()
            oracle.write_frame(index, index / 12.0, labels, probabilities.numpy())
            overlays.append(overlay_labels(decoded[index], labels, palette))
        oracle.commit()
    got = ds.dataset(tmp_path / "out" / "masks", partitioning="hive").to_table()
    want = ds.dataset(tmp_path / "oracle" / "masks", partitioning="hive").to_table()
    assert got.equals(want) and got.num_rows == manifest.mask_rows
    assert _files(tmp_path / "out") == [
        "_manifest/clip.json", "masks/video_id=clip/part-00000.parquet", "masks/video_id=clip/part-00001.parquet",
        "masks/video_id=clip/part-00002.parquet", "overlays/clip.mp4",
    ]
    overlay = read_frames(str(tmp_path / "out" / "overlays" / "clip.mp4")).astype(int)
    assert overlay.shape == (21, 18, 26, 3)
    distances = np.abs(overlay[:, None] - np.stack(overlays)[None]).mean(axis=(2, 3, 4))
    assert (distances.argmin(axis=1) == np.arange(21)).all()  # lossy H.264 of the same frames, in order
    recorded = read_manifest(str(tmp_path / "out"), "clip")
    assert recorded is not None and recorded["cost"]["unet_frame_forwards"] == 2.0 and recorded["commit_key"] == "key"
    assert recorded["timings"]["model"] == 1.5 and recorded["timings"]["total"] >= 2.0


def test_a_failing_segment_leaves_nothing_and_discard_removes_what_others_staged(video, tmp_path: Path) -> None:
    uri, _ = video
    shards = _shards(21, 6, 2, 2)
    results = _scores(shards)
    first, second = plan_segments(shards)[:2]
    outputs = _outputs(tmp_path, uri, overlays=True)
    write_segment(outputs, first, *(results[i] for i in first.shards))
    assert _files(tmp_path) == ["_staging/run1/masks/video_id=clip/part-00000.parquet",
                                "_staging/run1/overlays/clip/part-00000.mp4", "clip.mp4"]
    with pytest.raises(ValueError, match="do not cover"):
        write_segment(outputs, second, results[second.shards[0]])  # a covering shard is missing
    assert len(_files(tmp_path)) == 3
    discard_staged(outputs)
    assert _files(tmp_path) == ["clip.mp4"]


def test_joined_parts_decode_to_the_parts_frames_in_order(tmp_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (17, 20, 30, 3), dtype=np.uint8)
    bounds = [(0, 5), (5, 6), (6, 17)]
    parts = [str(tmp_path / f"part-{a}.mp4") for a, _ in bounds]
    for part, (a, b) in zip(parts, bounds, strict=True):
        write_video(part, frames[a:b], fps=10.0, joinable=True)
    concat_videos(str(tmp_path / "joined.mp4"), parts)
    info = probe_video(str(tmp_path / "joined.mp4"))
    assert (info.num_frames, info.fps, info.height, info.width) == (17, 10.0, 20, 30)
    expected = np.concatenate([read_frames(part) for part in parts])
    np.testing.assert_array_equal(read_frames(str(tmp_path / "joined.mp4")), expected)
    np.testing.assert_array_equal(read_frames(str(tmp_path / "joined.mp4"), 4, 7), expected[4:7])
    with pytest.raises(VideoError, match=r"^.*/missing\.mp4: no such file$"):
        concat_videos(str(tmp_path / "bad.mp4"), [parts[0], str(tmp_path / "missing.mp4")])
    assert not (tmp_path / "bad.mp4").exists() and not list(tmp_path.glob(".bad.mp4*"))


def _job(shards: tuple[Shard, ...], guided: bool, root: Path) -> VideoJob:
    """A driver-side job over ``shards`` of an 8 x 8 clip (only its plan is read)."""
    frames = shards[0].num_frames
    info = VideoInfo("clip.mp4", frames, 12.0, 8, 8, frames / 12)
    plan = VideoPlan(VideoInput("clip", "clip.mp4"), info, tuple(w for s in shards for w in s.windows), shards,
                     plan_segments(shards))
    outputs = VideoOutputs(str(root), "run1", "clip", "clip.mp4", info, PARTS, "m", None, "d", "k", 64)
    return VideoJob(plan, outputs, guided, progress=False)


def test_unguided_segments_become_ready_with_their_shards_and_results_are_dropped_once_read(tmp_path: Path) -> None:
    shards = _shards(40, 16, 4, 1)  # windows [0,16) [12,28) [24,40): segments [0,12) [12,24) [24,40)
    job = _job(shards, guided=False, root=tmp_path)
    stats = ShardStats(False, 1.0, 0.0, 2)
    assert [(w.item.start, w.item.stop, w.inputs) for w in job.add(shards[1], stats, "r1")] == []
    ready = job.add(shards[0], stats, "r0")
    assert [(w.item.start, w.inputs) for w in ready] == [(0, ("r0",)), (12, ("r0", "r1"))]
    assert job.held_results == 2
    job.segment_written(ready[0], SegmentWritten(0, 12, 5, 0.1))
    assert job.held_results == 2  # r0 is still read by the second segment
    job.segment_written(ready[1], SegmentWritten(1, 12, 5, 0.1))
    assert job.held_results == 1 and not job.complete  # r1 waits for the last segment
    [last] = job.add(shards[2], stats, "r2")
    assert last.inputs == ("r1", "r2")
    job.segment_written(last, SegmentWritten(2, 16, 5, 0.1))
    assert job.complete and job.held_results == 0
    assert (job.model_seconds, job.frame_forwards) == (3.0, 6)


def test_guided_phase_b_waits_for_the_phase_a_results_around_it(tmp_path: Path) -> None:
    shards = _shards(32, 16, 8, 1)  # windows [0,16) [8,24) [16,32)
    job = _job(shards, guided=True, root=tmp_path)
    phase_a, phase_b = ShardStats(False, 1.0, 0.0, 1), ShardStats(True, 1.0, 0.0, 4)
    assert job.add(shards[0], phase_a, "a0") == []
    [b0] = job.add(shards[1], phase_a, "a1")
    assert (b0.item, b0.inputs) == (shards[0], ("a0", "a1"))
    [b1, b2] = job.add(shards[2], phase_a, "a2")
    assert (b1.item, b1.inputs, b2.item, b2.inputs) == (shards[1], ("a0", "a1", "a2"), shards[2], ("a1", "a2"))
    job.finished(b0)
    job.finished(b1)
    assert job.held_results == 2  # a0 is read by nobody now; a1 and a2 still by phase B of shard 2
    [segment] = job.add(shards[0], phase_b, "b0")
    assert segment.inputs == ("b0",)  # segment [0, 8): phase-B scores only
    job.finished(b2)
    assert job.held_results == 1 and job.frame_forwards == 1 * 3 + 4


def test_aborting_a_job_drops_its_staged_outputs(video, tmp_path: Path) -> None:
    uri, _ = video
    shards = _shards(21, 6, 2, 2)
    segment = plan_segments(shards)[0]
    outputs = _outputs(tmp_path / "out", uri, overlays=False)
    write_segment(outputs, segment, *(_scores(shards)[i] for i in segment.shards))
    assert _files(tmp_path / "out") == ["_staging/run1/masks/video_id=clip/part-00000.parquet"]
    job = VideoJob(VideoPlan(VideoInput("clip", uri), outputs.info, (), shards, plan_segments(shards)), outputs,
                   guided=False, progress=False)
    job.abort()
    assert _files(tmp_path / "out") == []


def test_the_manifest_reports_the_segment_writers_time(video, tmp_path: Path) -> None:
    uri, _ = video
    shards = _shards(21, 6, 2, 2)
    results = _scores(shards)
    outputs = _outputs(tmp_path / "out", uri, overlays=True)
    segments = plan_segments(shards)
    job = VideoJob(VideoPlan(VideoInput("clip", uri), outputs.info, (), shards, segments), outputs, guided=False,
                   progress=False)
    for shard in shards:  # in-process, as the driver schedules it
        for work in job.add(shard, ShardStats(False, 0.5, 0.0, 1), results[shard.index]):
            job.segment_written(work, write_segment(outputs, work.item, *work.inputs))
    assert job.complete
    written = tuple(job.written[segment.index] for segment in segments)
    commit_video(outputs, written, job.timings(), job.frame_forwards)
    recorded = read_manifest(str(tmp_path / "out"), "clip")
    assert recorded is not None
    timings = recorded["timings"]
    assert timings["write"] == pytest.approx(sum(w.seconds for w in written)) and timings["write"] > 0
    assert timings["model"] == 0.5 * len(shards) and timings["total"] >= timings["write"]


def test_outputs_left_without_a_manifest_are_withdrawn_and_committed_ones_kept(video, tmp_path: Path) -> None:
    uri, _ = video
    shards = _shards(21, 6, 2, 2)
    results = _scores(shards)
    outputs = _outputs(tmp_path / "out", uri, overlays=True)
    written = tuple(write_segment(outputs, s, *(results[i] for i in s.shards)) for s in plan_segments(shards))
    tracks = VideoTracks(21, torch.tensor([0]), torch.zeros(1, 21, 2), torch.ones(1, 21, dtype=torch.bool),
                         torch.tensor([0]))
    commit_video(outputs, written, {"total": 0.0, "model": 0.0}, 0, tracks)
    committed = _files(tmp_path / "out")
    assert {"overlays/clip.mp4", "tracks/video_id=clip/part-00000.parquet"} <= set(committed)
    withdraw_outputs(outputs)
    assert _files(tmp_path / "out") == committed  # a manifest: committed, kept
    (tmp_path / "out" / "_manifest" / "clip.json").unlink()  # as if the commit died before its manifest
    withdraw_outputs(outputs)
    assert _files(tmp_path / "out") == []
