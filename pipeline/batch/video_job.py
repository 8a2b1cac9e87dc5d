"""One video in the batch driver: the shard results it holds, the work that became ready, and when it is done.

Pure bookkeeping of object references (no Ray import, no scores): the driver records each finished shard's result
reference here and gets back what can run now. Without guidance that is the segments whose shards have all
returned (:class:`pipeline.batch.plan.Segment`), written by workers (:mod:`pipeline.batch.video_writer`). With
guidance a video runs in two phases over the same windows (ARCHITECTURE.md §4 step 3): a phase-B shard becomes
ready once the phase-A results of every shard covering its frames are in (the actor stitches its reference from
them), and the segments are written from the phase-B results.

A result is held until every piece of work reading it has finished, then its reference is dropped, which frees
it in the object store; :attr:`VideoJob.held_results` is what the driver's in-flight bound counts.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from pipeline.batch.actors import ShardStats
from pipeline.batch.plan import Segment, Shard, VideoPlan, covering_shards
from pipeline.batch.video_writer import SegmentWritten, VideoOutputs, discard_staged

ResultKey = tuple[bool, int]
"""``(is a phase-A result of a guided video, shard index)``."""


@dataclass(frozen=True)
class Ready:
    """Work that can run now: a phase-B shard or a segment to write, with the result references it reads.

    Attributes:
        item: the phase-B shard or the segment.
        inputs: references to the shard results it reads (``ray.ObjectRef`` of :class:`ShardResult`), in the order
            of ``keys``.
        keys: which results those are; hand the ``Ready`` back to :meth:`VideoJob.finished` when the work is done.
    """

    item: Shard | Segment
    inputs: tuple[Any, ...]
    keys: tuple[ResultKey, ...]


class VideoJob:
    """The driver-side state of one video between its first shard and its commit.

    Args:
        plan: the video's plan.
        outputs: where its outputs go (sent to the writer tasks).
        guided: whether it runs two phases.
        progress: show a per-video progress bar (frames written).
    """

    def __init__(self, plan: VideoPlan, outputs: VideoOutputs, guided: bool, progress: bool) -> None:
        self.plan = plan
        self.outputs = outputs
        self.guided = guided
        self.started = time.perf_counter()
        self.model_seconds = 0.0
        self.frame_forwards = 0
        self.written: dict[int, SegmentWritten] = {}
        self._held: dict[ResultKey, Any] = {}
        self._readers: Counter[ResultKey] = Counter()  # unfinished work that reads each result
        self._waiting: list[tuple[Shard | Segment, tuple[ResultKey, ...]]] = []
        for segment in plan.segments:
            self._wait_for(segment, tuple((False, shard) for shard in segment.shards))
        if guided:
            for shard in plan.shards:
                readers = covering_shards(plan.shards, shard.start, shard.stop)
                self._wait_for(shard, tuple((True, index) for index in readers))
        self.bar = tqdm(total=plan.info.num_frames, desc=self.video_id, unit="frame", leave=False, disable=not progress)

    def _wait_for(self, item: Shard | Segment, keys: tuple[ResultKey, ...]) -> None:
        self._waiting.append((item, keys))
        self._readers.update(keys)

    @property
    def video_id(self) -> str:
        return self.plan.video.video_id

    @property
    def held_results(self) -> int:
        """Shard results returned and still to be read by some work (memory held in the object store)."""
        return len(self._held)

    @property
    def complete(self) -> bool:
        """Whether every segment has been written (the video can be committed)."""
        return len(self.written) == len(self.plan.segments)

    def add(self, shard: Shard, stats: ShardStats, result: Any) -> list[Ready]:
        """Record a finished shard's ``result`` reference and its ``stats``; returns the work that became ready."""
        self.model_seconds += stats.model_seconds
        self.frame_forwards += stats.frame_forwards
        self._held[(self.guided and not stats.guided, shard.index)] = result
        ready, waiting = [], []
        for item, keys in self._waiting:
            if all(key in self._held for key in keys):
                ready.append(Ready(item, tuple(self._held[key] for key in keys), keys))
            else:
                waiting.append((item, keys))
        self._waiting = waiting
        return ready

    def finished(self, work: Ready) -> None:
        """``work`` is done: drop the results nobody else reads."""
        for key in work.keys:
            self._readers[key] -= 1
            if self._readers[key] == 0:
                del self._held[key]

    def segment_written(self, work: Ready, written: SegmentWritten) -> None:
        """A segment's writer task finished with ``written``."""
        self.finished(work)
        self.written[written.index] = written
        self.bar.update(written.frames)

    def timings(self) -> dict[str, float]:
        """``total`` (s since the job opened), ``model`` (segmenter time, s) and ``write`` (the segment writer
        tasks' wall time, summed, s) for the manifest."""
        return {
            "total": time.perf_counter() - self.started, "model": self.model_seconds,
            "write": sum(written.seconds for written in self.written.values()),
        }

    def abort(self) -> None:
        """Drop every staged output of the video."""
        discard_staged(self.outputs)
        self.close()

    def close(self) -> None:
        """Release the held results and the progress bar."""
        self._held.clear()
        self.bar.close()
