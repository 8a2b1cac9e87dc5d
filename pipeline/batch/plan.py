"""Plan a video job: windows (METHOD.md §4.2 defaults) grouped into shards, the unit of work of an actor, and
the frames split into segments, the unit of output writing.

Windows of neighbouring shards overlap, so a frame's blended scores can need two shards. Each segment owns the
frames from its shard's start to the next shard's start and names every shard whose windows cover one of them;
a writer blends exactly those windows (:func:`pipeline.batch.stitch.stitch_range`), so every frame is written
once, by one segment, with the same value whatever order the shards finished in.

Pure and deterministic: the same probe result and configuration always give the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from pipeline.batch.windows import Window, group_shards, plan_windows
from pipeline.config import JobConfig
from pipeline.io.inputs import VideoInput
from pipeline.io.video import VideoError, VideoInfo


@dataclass(frozen=True)
class Shard:
    """Consecutive windows of one video, processed together by one actor.

    Attributes:
        video_id: the video's id.
        uri: where the video is read from.
        index: position of the shard in its video's plan.
        windows: the windows, in frame order; the shard decodes frames ``[start, stop)``.
        num_frames: frames of the whole video (blending weights depend on where the video ends).
    """

    video_id: str
    uri: str
    index: int
    windows: tuple[Window, ...]
    num_frames: int

    @property
    def start(self) -> int:
        return self.windows[0].start

    @property
    def stop(self) -> int:
        return max(window.stop for window in self.windows)


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, stop)`` of a video, written together by one writer task.

    Attributes:
        index: position in the video's plan (also the number of its mask file).
        start, stop: the frames it owns.
        shards: indices of the shards whose windows cover any of those frames, increasing.
    """

    index: int
    start: int
    stop: int
    shards: tuple[int, ...]


@dataclass(frozen=True)
class VideoPlan:
    """Everything the driver needs to run one video: its probe result, windows, shards and segments."""

    video: VideoInput
    info: VideoInfo
    windows: tuple[Window, ...]
    shards: tuple[Shard, ...]
    segments: tuple[Segment, ...]


def covering_shards(shards: tuple[Shard, ...], start: int, stop: int) -> tuple[int, ...]:
    """Indices of the ``shards`` with a window that covers a frame of ``[start, stop)``."""
    return tuple(
        shard.index for shard in shards if any(w.start < stop and w.stop > start for w in shard.windows)
    )


def plan_segments(shards: tuple[Shard, ...]) -> tuple[Segment, ...]:
    """One segment per shard: from its start to the next shard's start (the last one to the video's end)."""
    bounds = [shard.start for shard in shards] + [shards[-1].num_frames]
    return tuple(
        Segment(index, start, stop, covering_shards(shards, start, stop))
        for index, (start, stop) in enumerate(pairwise(bounds))
    )


def window_geometry(config: JobConfig) -> tuple[int, int]:
    """``(window, overlap)`` in frames: the guidance geometry (16, 8) when guidance is on, else (18, 0)."""
    section = config.guidance if config.guidance.enabled else config.segment
    return section.window, section.overlap


def plan_video(video: VideoInput, info: VideoInfo, config: JobConfig) -> VideoPlan:
    """Plan the windows and shards of one probed video.

    Raises:
        VideoError: the video has no frames.
    """
    if info.num_frames < 1:
        raise VideoError(video.uri, "the video has no frames")
    window, overlap = window_geometry(config)
    windows = plan_windows(info.num_frames, window, overlap)
    shards = tuple(
        Shard(video.video_id, video.uri, index, tuple(group), info.num_frames)
        for index, group in enumerate(group_shards(windows, config.runtime.windows_per_shard))
    )
    return VideoPlan(video, info, tuple(windows), shards, plan_segments(shards))
