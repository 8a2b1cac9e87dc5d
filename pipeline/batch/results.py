"""What a batch run returns: per-video and per-run results, read by the CLI, the flows and the report.

Plain dataclasses with no Ray import, so readers of results (:mod:`pipeline.report.html`, the flows) stay light;
:func:`pipeline.batch.driver.segment_videos` fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class WorkerStats:
    """One actor process: its pid and node, shards done and model time since it (re)started, peak RSS in MiB."""

    pid: int
    node_id: str
    shards: int
    model_seconds: float
    peak_rss_mib: float


@dataclass(frozen=True)
class VideoResult:
    """What happened to one video of the batch.

    Attributes:
        video_id, uri: the video.
        status: ``done`` (segmented and committed now), ``skipped`` (committed by an earlier run with the same
            configuration) or ``failed`` (see ``error``; also a row of ``failures.parquet``).
        num_frames: frames segmented (0 unless done).
        outputs: output kind (``masks``, ``overlay``, ``tracks``, ``manifest``) -> path or URL.
        seconds: wall time from its first shard to its commit, s.
        model_seconds: time inside segmenter calls for this video, summed over actors, s.
        error_type, error: the error's class name and one-line message, for a failed video.
    """

    video_id: str
    uri: str
    status: Status
    num_frames: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    model_seconds: float = 0.0
    error_type: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """The outcome of :func:`segment_videos`.

    Attributes:
        out_uri: the output root.
        videos: one result per input video, in input order.
        failures_path: path of ``failures.parquet``.
        seconds: wall time of the whole call, s (actor start-up included).
        workers: per shard-actor process at the end: shards done, model seconds, peak RSS (MiB).
        peak_outstanding: the most shards outstanding at once (running, or returned with results that some work
            still has to read): at most the in-flight bound, or what one video needs to make progress when that is
            more (with guidance: the phase-A results around a phase-B shard and the phase-B results its segment
            reads).
    """

    out_uri: str
    videos: tuple[VideoResult, ...]
    failures_path: str
    seconds: float
    workers: tuple[WorkerStats, ...]
    peak_outstanding: int

    def with_status(self, status: Status) -> list[VideoResult]:
        """The videos that ended with ``status``."""
        return [video for video in self.videos if video.status == status]

    @property
    def frames(self) -> int:
        """Frames segmented by this call."""
        return sum(video.num_frames for video in self.videos)


def describe_video(result: VideoResult) -> str:
    """One line for a finished video: its id, status, frames and time, or its error."""
    if result.status == "failed":
        return f"{result.video_id}: failed: {result.error_type}: {result.error}"
    if result.status == "skipped":
        return f"{result.video_id}: skipped (already committed)"
    return f"{result.video_id}: done, {result.num_frames} frames in {result.seconds:.1f} s"
