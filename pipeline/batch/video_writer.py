"""Writing one video's outputs, segment by segment, wherever a worker is free (ARCHITECTURE.md §4 step 6).

The driver only schedules: when every shard covering a segment (:class:`pipeline.batch.plan.Segment`) has
returned, it hands the shards' results to :func:`write_segment` as a Ray task, which blends the segment's frames
(:func:`pipeline.batch.stitch.stitch_range`), turns them into native-resolution probabilities and labels, writes
their mask rows to the segment's own Parquet file and, with overlays on, encodes the segment's overlay as an
MP4 of its own, all in the run's staging folder. Once every segment is written, :func:`commit_video` (another
task) joins the overlay parts without re-encoding, writes the tracks, moves the mask partition into place and
writes the manifest that marks the video committed. Neither function imports Ray: both run in-process too.

Every frame is written once, by the one segment that owns it, from the same blended scores whatever the actor
count and the order in which shards finished, so the mask files are byte-identical from run to run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from pipeline.batch.actors import ShardResult
from pipeline.batch.plan import Segment
from pipeline.batch.stitch import native_probabilities, stitch_range
from pipeline.io.video import VideoInfo, concat_videos, iter_frames, write_video
from pipeline.sinks.manifest import VideoManifest, read_manifest, remove_manifest, write_manifest
from pipeline.sinks.masks import VideoMaskWriter, mask_partition, publish_masks
from pipeline.sinks.out_root import staging_path
from pipeline.sinks.overlay import overlay_file, overlay_labels, part_palette
from pipeline.sinks.tracks import track_partition, write_tracks
from smite_ops.tracking.long_video import VideoTracks


@dataclass(frozen=True)
class VideoOutputs:
    """Where one video's outputs go and what they record: the small description sent with each writer task.

    Attributes:
        root: the output root (local path or fsspec URL).
        run_id: the run's staging folder name (see :mod:`pipeline.sinks.out_root`).
        video_id, uri: the video.
        info: its probe result.
        part_names, model_id: from the segmenter, for the mask rows.
        overlay_fps: frame rate of the overlay video, frames/s; None: no overlay.
        config_digest, commit_key: recorded in the manifest.
        track_frame_size: side of the square frame the tracks are in, pixels.
    """

    root: str
    run_id: str
    video_id: str
    uri: str
    info: VideoInfo
    part_names: list[str]
    model_id: str
    overlay_fps: float | None
    config_digest: str
    commit_key: str
    track_frame_size: int

    def _staged_url(self, *names: str) -> str:
        """URL (a path for local roots) of a file or folder under this video's staging area."""
        fs, _ = fsspec.core.url_to_fs(str(self.root))
        path = staging_path(self.root, self.run_id, *names)
        return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)

    def overlay_parts(self) -> str:
        """The staging folder of the overlay's per-segment parts."""
        return self._staged_url("overlays", self.video_id)

    def overlay_part(self, index: int) -> str:
        """The staged overlay of segment ``index``."""
        return f"{self.overlay_parts()}/part-{index:05d}.mp4"

    @property
    def overlay_uri(self) -> str:
        """Where the committed overlay video goes."""
        return overlay_file(self.root, self.video_id)


@dataclass(frozen=True)
class SegmentWritten:
    """One staged segment: its index, frames and mask rows written, and the wall time it took, s."""

    index: int
    frames: int
    rows: int
    seconds: float


def _labelled_frames(
    video: VideoOutputs, segment: Segment, results: tuple[ShardResult, ...], masks: VideoMaskWriter
) -> Iterator[np.ndarray]:
    """Blend the segment's frames, write each one's mask rows, and yield its ``(H, W)`` label map, in order."""
    info = video.info
    windows = (pair for result in results for pair in result.scores)
    for index, blended in stitch_range(windows, info.num_frames, segment.start, segment.stop):
        probabilities = native_probabilities(blended, info.height, info.width)
        labels = probabilities.argmax(dim=0).numpy()
        masks.write_frame(index, index / info.fps, labels, probabilities.numpy())
        yield labels


def _overlays(video: VideoOutputs, segment: Segment, labels: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The segment's source frames with their parts drawn in, decoded a few at a time."""
    palette = part_palette(len(video.part_names))
    for chunk in iter_frames(video.uri, segment.start, segment.stop, chunk=8):
        for frame in chunk:
            yield overlay_labels(frame, next(labels), palette)


def write_segment(video: VideoOutputs, segment: Segment, *results: ShardResult) -> SegmentWritten:
    """Blend, label and stage frames ``[segment.start, segment.stop)`` of ``video`` (a Ray task in a batch).

    Args:
        video: the video's output description.
        segment: the frames to write.
        results: the final-phase results of every shard in ``segment.shards`` (any order).

    Returns:
        What was staged. On an error the segment's staged files are removed and the error re-raised.
    """
    started = time.perf_counter()
    with VideoMaskWriter(
        video.root, video.video_id, video.part_names, video.model_id, run_id=video.run_id, part=segment.index
    ) as masks:
        labels = _labelled_frames(video, segment, results, masks)
        if video.overlay_fps is not None:
            overlays = _overlays(video, segment, labels)
            write_video(video.overlay_part(segment.index), overlays, fps=video.overlay_fps, joinable=True)
        else:
            for _ in labels:
                pass
        rows = masks.close()
    return SegmentWritten(segment.index, segment.stop - segment.start, rows, time.perf_counter() - started)


def commit_video(
    video: VideoOutputs,
    segments: tuple[SegmentWritten, ...],
    timings: dict[str, float],
    frame_forwards: int,
    tracks: VideoTracks | None = None,
    tracker_point_frames: int = 0,
) -> VideoManifest:
    """Publish a video whose segments are all staged (overlay, tracks, masks), then its manifest (a Ray task).

    An earlier commit of the video is withdrawn first (its manifest removed); when any step fails (e.g. a full
    disk), the outputs published so far are removed again, so only committed videos have outputs.

    Args:
        video: the video's output description.
        segments: every segment's :func:`write_segment` result, in segment order.
        timings: ``total`` (s from the first shard to this call), ``model`` (segmenter time, s) and ``write``
            (:attr:`SegmentWritten.seconds` of every segment, summed, s); the time this commit takes is added to
            ``total``.
        frame_forwards: UNet frame-forward equivalents spent on the video, both phases.
        tracks: the video's point tracks, written when given.
        tracker_point_frames: the tracker work spent on the tracks (``VideoTracks.point_frames``).

    Returns:
        The manifest written.
    """
    started = time.perf_counter()
    remove_manifest(video.root, video.video_id)
    outputs: dict[str, str] = {}
    try:
        if video.overlay_fps is not None:
            concat_videos(video.overlay_uri, [video.overlay_part(segment.index) for segment in segments])
            outputs["overlay"] = video.overlay_uri
        if tracks is not None:
            outputs["tracks"] = write_tracks(
                video.root, video.video_id, tracks, video.track_frame_size, run_id=video.run_id
            )
        outputs["masks"] = publish_masks(video.root, video.run_id, video.video_id)
        info, frames = video.info, max(video.info.num_frames, 1)
        manifest = VideoManifest(
            video_id=video.video_id, uri=video.uri, num_frames=info.num_frames, fps=info.fps, height=info.height,
            width=info.width, model_id=video.model_id, part_names=video.part_names,
            config_digest=video.config_digest, outputs=outputs,
            timings={**timings, "total": timings["total"] + time.perf_counter() - started},
            mask_rows=sum(segment.rows for segment in segments), commit_key=video.commit_key,
            cost={
                "unet_frame_forwards": frame_forwards / frames, "tracker_point_frames": tracker_point_frames / frames
            },
        )
        write_manifest(video.root, manifest)
    except BaseException:
        withdraw_outputs(video)
        raise
    discard_staged(video)
    return manifest


def withdraw_outputs(video: VideoOutputs) -> None:
    """Remove the published outputs (masks, overlay, tracks) of a video left without a manifest, best effort.

    Called when a commit fails part-way, in the task (a write error) or by the driver (the task's process died):
    its manifest was withdrawn first, so whatever is in place is uncommitted. A video whose manifest exists is
    committed and left alone.
    """
    if read_manifest(video.root, video.video_id) is not None:
        return
    fs, _ = fsspec.core.url_to_fs(str(video.root))
    published = (mask_partition(video.root, video.video_id), track_partition(video.root, video.video_id),
                 fsspec.core.url_to_fs(video.overlay_uri)[1])
    for path in published:
        with suppress(OSError):
            if fs.exists(path):
                fs.rm(path, recursive=True)


def discard_staged(video: VideoOutputs) -> None:
    """Remove what is staged for ``video`` in its run (its mask files and overlay parts), best effort."""
    fs, _ = fsspec.core.url_to_fs(str(video.root))
    for names in (("masks", f"video_id={video.video_id}"), ("overlays", video.video_id)):
        path = staging_path(video.root, video.run_id, *names)
        with suppress(OSError):
            if fs.exists(path):
                fs.rm(path, recursive=True)
