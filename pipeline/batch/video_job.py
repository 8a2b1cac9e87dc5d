"""One video in the batch driver: stitch its shard results in as they arrive, stream the outputs, commit.

With guidance on, a video runs in two phases over the same windows (ARCHITECTURE.md §4 step 3): phase A's
unguided scores are stitched into a whole-video reference, handed out shard by shard as soon as a shard's
frames are complete (:meth:`VideoJob.add` returns them), and phase B's guided scores are what is written.

Frames leave the stitcher in order; each is turned into native-resolution class probabilities (softmax of
the stitched scores, resized bilinearly) and labels (their argmax), written to the mask dataset and, when
overlays are on, drawn over the decoded source frame (the driver decodes the video once, in step with the
stitcher). Memory is bounded by the shards in flight, not by the length of the video.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import suppress

import fsspec
import numpy as np
import torch
from tqdm import tqdm

from pipeline.batch.actors import ShardResult
from pipeline.batch.plan import Shard, VideoPlan
from pipeline.batch.stitch import ScoreStitcher, native_probabilities
from pipeline.config import JobConfig
from pipeline.io.video import iter_frames
from pipeline.sinks.manifest import VideoManifest, remove_manifest, write_manifest
from pipeline.sinks.masks import VideoMaskWriter
from pipeline.sinks.overlay_video import OverlaySink
from pipeline.sinks.tracks import write_tracks
from smite_ops.tracking.long_video import VideoTracks


def _source_frames(uri: str) -> Iterator[np.ndarray]:
    """The video's frames one by one, ``(H, W, 3)`` uint8, decoded in small chunks."""
    for chunk in iter_frames(uri, chunk=8):
        yield from chunk


class VideoJob:
    """The driver-side state of one video between its first shard and its commit.

    Args:
        plan: the video's plan.
        root: output root (local path or fsspec URL).
        part_names, model_id: from the segmenter, for the mask rows.
        config: the job configuration (``output`` section and digest).
        progress: show a per-video progress bar (frames).
        run_id: the run's staging folder name (see :mod:`pipeline.sinks.out_root`).
        commit_key: recorded in the manifest (see :mod:`pipeline.batch.commit_key`).
    """

    def __init__(
        self, plan: VideoPlan, root: str, part_names: list[str], model_id: str, config: JobConfig, progress: bool,
        run_id: str, commit_key: str,
    ) -> None:
        self.plan = plan
        self.root = root
        self.part_names = part_names
        self.model_id = model_id
        self.config = config
        self.run_id = run_id
        self.commit_key = commit_key
        self.started = time.perf_counter()
        self.model_seconds = 0.0
        self.frame_forwards = 0
        video, info = plan.video, plan.info
        self.stitcher = ScoreStitcher(list(plan.windows), info.num_frames)
        self._completed_stops: list[int] = []
        guided = config.guidance.enabled
        self.reference = ScoreStitcher(list(plan.windows), info.num_frames) if guided else None
        self._reference_stops: list[int] = []
        self._reference_frames: dict[int, torch.Tensor] = {}
        self._awaiting_reference: deque[Shard] = deque(plan.shards if guided else ())
        self.masks = VideoMaskWriter(root, video.video_id, part_names, model_id, run_id=run_id)
        self.overlay: OverlaySink | None = None
        self._frames: Iterator[np.ndarray] | None = None
        if config.output.overlays:
            uri = f"{str(root).rstrip('/')}/overlays/{video.video_id}.mp4"
            self.overlay = OverlaySink(uri, config.output.overlay_fps or info.fps, len(part_names))
            self._frames = _source_frames(video.uri)
        self.bar = tqdm(total=info.num_frames, desc=video.video_id, unit="frame", leave=False, disable=not progress)

    @property
    def video_id(self) -> str:
        return self.plan.video.video_id

    @property
    def complete(self) -> bool:
        """Whether every frame has been written."""
        return self.stitcher.next_frame == self.plan.info.num_frames

    @property
    def held_shards(self) -> int:
        """Shards whose results arrived but whose frames still wait for an earlier shard (memory held)."""
        held = sum(stop > self.stitcher.next_frame for stop in self._completed_stops)
        if self.reference is not None:
            held += sum(stop > self.reference.next_frame for stop in self._reference_stops)
        return held

    def add(self, result: ShardResult) -> list[tuple[Shard, torch.Tensor]]:
        """Stitch one shard's window scores in and write every frame that became complete.

        Returns:
            With guidance on, after a phase-A result: the shards now ready for phase B, each with its reference
            scores ``(shard.stop - shard.start, P, h, w)`` float32; otherwise an empty list.
        """
        self.model_seconds += result.model_seconds
        self.frame_forwards += result.frame_forwards
        if self.reference is not None and not result.guided:
            self._reference_stops.append(result.shard.stop)
            for window, scores in result.scores:
                self._reference_frames.update(self.reference.add(window, scores))
            return self._ready_for_guidance(self.reference)
        self._completed_stops.append(result.shard.stop)
        for window, scores in result.scores:
            for index, blended in self.stitcher.add(window, scores):
                self._write_frame(index, blended)
        return []

    def _ready_for_guidance(self, reference: ScoreStitcher) -> list[tuple[Shard, torch.Tensor]]:
        """Shards whose frames all have stitched phase-A scores in ``reference``, with those scores; frames
        no longer needed by a later shard are dropped."""
        ready = []
        while self._awaiting_reference and self._awaiting_reference[0].stop <= reference.next_frame:
            shard = self._awaiting_reference.popleft()
            ready.append((shard, torch.stack([self._reference_frames[f] for f in range(shard.start, shard.stop)])))
            keep_from = self._awaiting_reference[0].start if self._awaiting_reference else self.plan.info.num_frames
            for frame in [f for f in self._reference_frames if f < keep_from]:
                del self._reference_frames[frame]
        return ready

    def _write_frame(self, index: int, blended: torch.Tensor) -> None:
        """Write frame ``index`` from its stitched ``(P, h, w)`` scores."""
        info = self.plan.info
        probabilities = native_probabilities(blended, info.height, info.width)
        labels = probabilities.argmax(dim=0).numpy()
        self.masks.write_frame(index, index / info.fps, labels, probabilities.numpy())
        if self.overlay is not None and self._frames is not None:
            self.overlay.write(next(self._frames), labels)
        self.bar.update(1)

    def commit(self, tracks: VideoTracks | None, tracker_point_frames: int = 0) -> VideoManifest:
        """Publish every output (overlay, tracks, masks), then the manifest that marks the video committed.

        ``tracks`` are written when given; ``tracker_point_frames`` is the tracker work spent on the video's
        tracks (``VideoTracks.point_frames``), recorded in the manifest's ``cost``. An earlier commit of the
        video is withdrawn first (its manifest removed); when any step fails (e.g. a full disk), the outputs
        published so far are removed again, so only committed videos have outputs.
        """
        remove_manifest(self.root, self.video_id)
        outputs: dict[str, str] = {}
        try:
            manifest = self._publish(tracks, tracker_point_frames, outputs)
        except BaseException:
            self._unpublish(outputs)
            raise
        self.close()
        return manifest

    def _publish(
        self, tracks: VideoTracks | None, tracker_point_frames: int, outputs: dict[str, str]
    ) -> VideoManifest:
        """Move the outputs into place, recording each in ``outputs`` as it lands, and write the manifest."""
        video, info = self.plan.video, self.plan.info
        if self.overlay is not None:
            outputs["overlay"] = self.overlay.commit()
        if tracks is not None:
            outputs["tracks"] = write_tracks(
                self.root, video.video_id, tracks, self.config.model.resolution, run_id=self.run_id
            )
        outputs["masks"] = self.masks.commit()
        timings = {"total": time.perf_counter() - self.started, "model": self.model_seconds}
        frames = max(info.num_frames, 1)
        cost = {
            "unet_frame_forwards": self.frame_forwards / frames,
            "tracker_point_frames": tracker_point_frames / frames,
        }
        manifest = VideoManifest(
            video_id=video.video_id, uri=video.uri, num_frames=info.num_frames, fps=info.fps, height=info.height,
            width=info.width, model_id=self.model_id, part_names=self.part_names,
            config_digest=self.config.digest(), outputs=outputs, timings=timings, mask_rows=self.masks.rows_written,
            commit_key=self.commit_key, cost=cost,
        )
        write_manifest(self.root, manifest)
        return manifest

    def _unpublish(self, outputs: dict[str, str]) -> None:
        """Remove published outputs of a commit that failed (best effort: the disk may still be failing)."""
        fs, _ = fsspec.core.url_to_fs(str(self.root))
        for kind, location in outputs.items():
            path = fsspec.core.url_to_fs(location)[1] if kind == "overlay" else location
            with suppress(OSError):
                fs.rm(path, recursive=True)

    def abort(self) -> None:
        """Drop every pending output of the video."""
        with suppress(OSError):
            self.masks.abort()
        if self.overlay is not None:
            self.overlay.abort()
        self.close()

    def close(self) -> None:
        """Release the source decoder and the progress bar."""
        if self._frames is not None:
            self._frames.close()  # type: ignore[attr-defined]
            self._frames = None
        self.bar.close()
