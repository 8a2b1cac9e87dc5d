"""Planning a batch: inputs expanded to videos, windows and shards per video (pure, no Ray)."""

from pathlib import Path

import fsspec
import pytest

from pipeline.batch.plan import plan_video, window_geometry
from pipeline.config import load_config
from pipeline.io.inputs import InputError, VideoInput, expand_inputs, video_id_of
from pipeline.io.video import VideoError, VideoInfo


def _info(frames: int) -> VideoInfo:
    return VideoInfo(uri="clip.mp4", num_frames=frames, fps=24.0, height=48, width=64, duration_s=frames / 24)


def _spans(plan) -> list[list[tuple[int, int]]]:
    return [[(w.start, w.stop) for w in shard.windows] for shard in plan.shards]


@pytest.mark.parametrize(
    ("frames", "per_shard", "expected"),
    [
        (1, 4, [[(0, 1)]]),  # a single frame
        (10, 4, [[(0, 10)]]),  # shorter than one window
        (18, 2, [[(0, 18)]]),  # exactly one window
        (72, 2, [[(0, 18), (18, 36)], [(36, 54), (54, 72)]]),  # exact multiple of windows and shards
        (40, 2, [[(0, 18), (18, 36)], [(22, 40)]]),  # remainder window (shifted back), remainder shard
    ],
)
def test_unguided_plans_cover_every_frame(frames: int, per_shard: int, expected: list) -> None:
    config = load_config(None, ["guidance.track_weight=0", f"runtime.windows_per_shard={per_shard}"])
    plan = plan_video(VideoInput("clip", "clip.mp4"), _info(frames), config)
    assert _spans(plan) == expected
    assert [shard.index for shard in plan.shards] == list(range(len(expected)))
    covered = {f for shard in plan.shards for w in shard.windows for f in range(w.start, w.stop)}
    assert covered == set(range(frames))
    assert plan.shards[-1].stop == frames and plan.shards[0].start == 0


def test_plans_are_deterministic_and_follow_the_guidance_geometry() -> None:
    unguided = load_config(None, ["guidance.track_weight=0"])
    guided = load_config(None, ["guidance.track_weight=1.0", "runtime.windows_per_shard=3"])
    assert window_geometry(unguided) == (18, 0) and window_geometry(guided) == (16, 8)
    assert window_geometry(load_config(None, ["guidance.mode=fast"])) == (16, 0)  # fast: windows without overlap
    video = VideoInput("clip", "clip.mp4")
    first, second = plan_video(video, _info(288), guided), plan_video(video, _info(288), guided)
    assert first == second
    assert len(first.windows) == 35 and len(first.shards) == 12 and first.windows[-1].start == 272
    assert first.shards[1].start == 24 and first.shards[1].stop == 56  # windows [24,40) [32,48) [40,56)


def test_a_video_without_frames_is_refused() -> None:
    with pytest.raises(VideoError, match="clip.mp4: the video has no frames"):
        plan_video(VideoInput("clip", "clip.mp4"), _info(0), load_config(None))


def test_paths_globs_folders_and_urls_expand_to_videos(tmp_path: Path) -> None:
    for name in ("b.mp4", "a.mov", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.mp4").write_bytes(b"x")
    assert [v.video_id for v in expand_inputs([str(tmp_path)])] == ["a.mov~", "b"]  # folders: video files only
    assert [v.video_id for v in expand_inputs([str(tmp_path / "**" / "*.mp4")])] == ["b", "sub~2Fc"]
    # an explicit file is kept whatever its extension; duplicates collapse; input order is kept
    named = expand_inputs([str(tmp_path / "notes.txt"), str(tmp_path / "b.mp4"), str(tmp_path / "*.mp4")])
    assert named == [VideoInput("notes.txt~", str(tmp_path / "notes.txt")), VideoInput("b", str(tmp_path / "b.mp4"))]
    fs = fsspec.filesystem("memory")
    fs.pipe({"/batch/x.mp4": b"x", "/batch/y.mkv": b"y"})
    assert expand_inputs(["memory://batch/*"]) == [
        VideoInput("x", "memory:///batch/x.mp4"), VideoInput("y.mkv~", "memory:///batch/y.mkv"),
    ]
    assert video_id_of("s3://bucket/a/clip.final.mp4") == "clip.final"


def test_bad_inputs_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no inputs"):
        expand_inputs([])
    with pytest.raises(InputError, match=r"missing\.mp4: no such file or folder"):
        expand_inputs([str(tmp_path / "missing.mp4")])
    with pytest.raises(InputError, match="the pattern matches no file"):
        expand_inputs([str(tmp_path / "*.avi")])
    with pytest.raises(InputError, match="the folder holds no video file"):
        expand_inputs([str(tmp_path)])
    with pytest.raises(InputError, match=r"foo://x\.mp4: cannot open this URL \(Protocol not known: foo\)"):
        expand_inputs(["foo://x.mp4"])
