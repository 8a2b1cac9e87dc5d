"""Plan a video job: windows (METHOD.md §4.2 defaults) grouped into shards, the unit of work of an actor.

Pure and deterministic: the same probe result and configuration always give the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    video_id: str
    uri: str
    index: int
    windows: tuple[Window, ...]

    @property
    def start(self) -> int:
        return self.windows[0].start

    @property
    def stop(self) -> int:
        return max(window.stop for window in self.windows)


@dataclass(frozen=True)
class VideoPlan:
    """Everything the driver needs to run one video: its probe result, windows and shards."""

    video: VideoInput
    info: VideoInfo
    windows: tuple[Window, ...]
    shards: tuple[Shard, ...]


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
        Shard(video.video_id, video.uri, index, tuple(group))
        for index, group in enumerate(group_shards(windows, config.runtime.windows_per_shard))
    )
    return VideoPlan(video, info, tuple(windows), shards)
