"""The batch driver: segment many videos on Ray with bounded memory; it schedules and commits, workers do the rest.

:func:`segment_videos` expands the inputs, starts the shard actors (each loads the segmenter once), then
loops: it opens videos one at a time as capacity frees up (probe, plan, skip the committed ones) and submits
their shards to the least busy actor. A shard's scores stay in Ray's object store; the driver reads only its
small stats. Once every shard covering a segment of frames has returned, a writer task (any worker with
``runtime.cpus_per_writer`` CPUs) blends, labels and stages the segment (:mod:`pipeline.batch.video_writer`); once
every segment of a video is staged, a commit task publishes it. The driver never holds frames or scores, so its
cost per frame is a few task submissions and its memory does not grow with resolution or video length.

At most ``runtime.max_shards_in_flight`` shards are outstanding (running, or returned with results not yet read
by every segment or phase-B shard that needs them), so neither a 10-hour video nor 10 000 videos fill the object
store; when every held result waits for a shard not yet submitted, that shard is submitted anyway. With guidance
on, each video runs in two phases over the same windows (:mod:`pipeline.batch.video_job`): a phase-B shard reads
the phase-A results of the shards around it and the video's point tracks, computed once per video by an actor
and shared through the object store.

A video that fails (unreadable, no frames, a segmenter or write error, an actor that keeps dying) is dropped with
its staged outputs and recorded in ``failures.parquet``; the batch goes on. A dead actor process is restarted
by Ray and its shards retried (:mod:`pipeline.batch.actors`), so a single crash costs no video; a writer task
whose worker dies is retried by Ray.

Output layout under ``out_uri``: ``masks/`` (Parquet, hive-partitioned by ``video_id``, a file per segment),
``overlays/<video_id>.mp4``, ``tracks/`` (when ``output.tracks``), ``_manifest/<video_id>.json``,
``failures.parquet``; while a run is on, ``_lock.json`` (its lease) and ``_staging/<run id>/`` (its in-progress
files; see :mod:`pipeline.sinks.out_root`). A video's outputs appear only when it commits. Writer tasks of a
local output root run on the driver's node (the only one that sees that folder); give a shared filesystem or an
object-store URL to spread them over the cluster.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import ray
from fsspec.implementations.local import LocalFileSystem
from ray.actor import ActorHandle
from ray.exceptions import AuthenticationError, RayActorError, RayError, RayTaskError
from ray.util.placement_group import remove_placement_group
from tqdm import tqdm

from pipeline.batch.actors import ShardStats, reserve_actor_slots, start_worker, writer_options
from pipeline.batch.commit_key import commit_key
from pipeline.batch.plan import Shard, plan_video
from pipeline.batch.results import BatchResult, VideoResult, WorkerStats, describe_video
from pipeline.batch.segmenters import PartModelFactory, SegmenterFactory
from pipeline.batch.shared_tracks import check_tracker, needs_tracks
from pipeline.batch.video_job import Ready, VideoJob
from pipeline.batch.video_writer import SegmentWritten, VideoOutputs, commit_video, withdraw_outputs, write_segment
from pipeline.config import JobConfig, RuntimeConfig
from pipeline.io.inputs import VideoInput, as_videos
from pipeline.io.video import probe_video
from pipeline.sinks.manifest import Failure, VideoManifest, is_committed, manifest_path, update_failures
from pipeline.sinks.out_lock import OutputLock
from pipeline.sinks.out_root import check_writable, output_fs, remove_leftovers
from smite_ops.errors import InputError

LOCAL_PLACEMENT_S = 5.0
"""Placement wait on a local Ray cluster started by :func:`ray_session`, s."""


class BatchError(InputError):
    """The batch cannot start (e.g. the segmenter cannot be built); one line naming the cause."""


class RayClusterError(InputError):
    """The Ray cluster a job names cannot be joined (unreachable, or it wants a token the job does not have)."""


def join_ray(address: str | None, runtime_env: dict[str, Any] | None = None) -> None:
    """``ray.init`` at ``address`` (None: a local instance), turning what a user can fix into one line.

    Raises:
        RayClusterError: no cluster answers at ``address``, or it refused the job's authentication token.
    """
    try:
        ray.init(address=address, include_dashboard=False, runtime_env=runtime_env)
    except ConnectionError as error:
        raise RayClusterError(_connect_problem(address, error)) from None


def _connect_problem(address: str | None, error: BaseException) -> str:
    """One line saying why joining the cluster at ``address`` failed, from the chain of causes of ``error``."""
    causes = [error]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    # Ray keeps the last refusal of its connection retries only as text inside a RuntimeError
    if any(isinstance(cause, AuthenticationError) or "InvalidAuthToken" in str(cause) for cause in causes):
        return (f"Ray cluster at {address}: it refused this job's authentication token; set RAY_AUTH_MODE=token "
                "and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token (`ray get-auth-token` there)")
    return f"Ray cluster at {address}: cannot connect ({str(error).strip().splitlines()[0]})"


@contextmanager
def ray_session(runtime: RuntimeConfig) -> Iterator[float]:
    """Use the running Ray session, else join ``runtime.ray_address`` / ``RAY_ADDRESS``, else start a local one.

    Yields how long to wait for the actors' placement, s: ``runtime.placement_timeout_s``, or at most
    :data:`LOCAL_PLACEMENT_S` for a local cluster started here (it cannot grow). A session started here is shut
    down on exit.
    """
    if ray.is_initialized():
        yield runtime.placement_timeout_s
        return
    address = runtime.ray_address or os.environ.get("RAY_ADDRESS")
    join_ray(address, runtime.runtime_env)
    try:
        yield runtime.placement_timeout_s if address else min(runtime.placement_timeout_s, LOCAL_PLACEMENT_S)
    finally:
        ray.shutdown()


def _describe(error: BaseException) -> tuple[str, str]:
    """``(error class name, one-line message)`` of an error, unwrapping what Ray wraps around it."""
    if isinstance(error, RayTaskError) and error.cause is not None:
        error = error.cause
    if isinstance(error, RayActorError) and error.actor_init_failed:
        # the constructor's traceback is only kept as text; its last line is "<class>: <message>"
        kind, _, message = str(error).strip().splitlines()[-1].partition(": ")
        return kind, message
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return type(error).__name__, lines[0]


class _Driver:
    """The scheduling loop of one batch (see the module docstring)."""

    def __init__(
        self, videos: list[VideoInput], out_uri: str, config: JobConfig, factory: SegmenterFactory, progress: bool,
        commit_key: str, on_video: Callable[[VideoResult], None], placement_timeout_s: float,
    ) -> None:
        self.out_uri = out_uri
        self.config = config
        self.factory = factory
        self.progress = progress
        self.commit_key = commit_key
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.on_video = on_video
        self.pending = deque(videos)
        self.results: dict[str, VideoResult] = {}
        self.jobs: dict[str, VideoJob] = {}
        self.tracks: dict[str, ray.ObjectRef] = {}
        self.tracker_work: dict[str, ray.ObjectRef] = {}
        self.queue: deque[tuple[Shard, Ready | None]] = deque()  # (shard, its phase-A inputs when it runs phase B)
        self.in_flight: dict[ray.ObjectRef, Callable[[ray.ObjectRef], None]] = {}  # what to do once it is ready
        self.running_shards = 0
        self.groups = reserve_actor_slots(config.runtime, placement_timeout_s, tqdm.write)
        self.load = [0] * len(self.groups)
        self.limit = max(config.runtime.max_shards_in_flight, len(self.groups))
        self.peak_outstanding = 0
        local_output = isinstance(output_fs(out_uri)[0], LocalFileSystem)
        writer = writer_options(config.runtime, self.groups, local_output, tqdm.write)
        self.write_segment = ray.remote(write_segment).options(**writer)
        self.commit_video = ray.remote(commit_video).options(**writer, max_retries=0)  # a commit is not repeatable
        self.bar = tqdm(total=len(videos), desc="videos", unit="video", disable=not progress)
        self.actors: list[ActorHandle] = [start_worker(factory, config, group) for group in self.groups]
        try:
            self.part_names, self.model_id = ray.get(self.actors[0].describe.remote())
        except RayActorError as error:
            self.shutdown()
            self.bar.close()
            kind, message = _describe(error)
            raise BatchError(f"cannot build the segmenter in a Ray actor: {kind}: {message}") from None

    def _finish(self, result: VideoResult) -> None:
        self.results[result.video_id] = result
        self.on_video(result)
        self.bar.update(1)

    def _fail(self, video: VideoInput, error: BaseException) -> None:
        job = self.jobs.pop(video.video_id, None)
        if job is not None:
            job.abort()
        self.tracks.pop(video.video_id, None)
        self.tracker_work.pop(video.video_id, None)
        kind, message = _describe(error)
        self._finish(VideoResult(video.video_id, video.uri, "failed", error_type=kind, error=message))

    def _least_loaded(self) -> int:
        return min(range(len(self.actors)), key=lambda index: self.load[index])

    def _open_next_video(self) -> bool:
        """Open the next video that needs work and queue its shards; False when no video is left."""
        while self.pending:
            video = self.pending.popleft()
            if is_committed(self.out_uri, video.video_id, self.commit_key):
                self._finish(VideoResult(video.video_id, video.uri, "skipped"))
                continue
            try:
                plan = plan_video(video, probe_video(video.uri), self.config)
            except Exception as error:  # one bad video never stops the batch
                self._fail(video, error)
                continue
            output = self.config.output
            outputs = VideoOutputs(
                self.out_uri, self.run_id, video.video_id, video.uri, plan.info, self.part_names, self.model_id,
                (output.overlay_fps or plan.info.fps) if output.overlays else None, self.config.digest(),
                self.commit_key, self.config.model.resolution,
            )
            self.jobs[video.video_id] = VideoJob(plan, outputs, self.config.guidance.enabled, self.progress)
            if needs_tracks(self.config):
                actor = self._least_loaded()
                tracks, work = self.actors[actor].track.options(num_returns=2).remote(plan.info, self.config)
                self.tracks[video.video_id], self.tracker_work[video.video_id] = tracks, work
            self.queue.extend((shard, None) for shard in plan.shards)
            return True
        return False

    def _outstanding(self) -> int:
        return self.running_shards + sum(job.held_results for job in self.jobs.values())

    def _submit(self) -> None:
        """Submit queued shards (opening videos as needed) until the in-flight bound is reached.

        With nothing in flight one shard is submitted whatever the bound: the results held may all wait for it
        (with guidance, a phase-B shard reads the phase-A results of its neighbours).
        """
        while self._outstanding() < self.limit or not self.in_flight:
            if not self.queue and not self._open_next_video():
                return
            if not self.queue:
                continue
            shard, phase_a = self.queue.popleft()
            if shard.video_id not in self.jobs:  # its video failed meanwhile
                continue
            actor = self._least_loaded()
            run = self.actors[actor].run.options(num_returns=2)
            if phase_a is None:
                result, stats = run.remote(shard)
            else:
                result, stats = run.remote(shard, self.tracks[shard.video_id], *phase_a.inputs)
            self.in_flight[stats] = partial(self._shard_done, shard, actor, result, phase_a)
            self.load[actor] += 1
            self.running_shards += 1
            self.peak_outstanding = max(self.peak_outstanding, self._outstanding())

    def _shard_done(self, shard: Shard, actor: int, result: ray.ObjectRef, phase_a: Ready | None,
                    stats_ref: ray.ObjectRef) -> None:
        """A shard returned: record it, start the work it completes, or fail its video."""
        self.load[actor] -= 1
        self.running_shards -= 1
        job = self.jobs.get(shard.video_id)
        try:
            stats: ShardStats = ray.get(stats_ref)
        except RayActorError as error:  # Ray's restarts are used up: replace the actor for the next shards
            self.actors[actor] = start_worker(self.factory, self.config, self.groups[actor])
            if job is not None:
                self._fail(job.plan.video, error)
            return
        except RayTaskError as error:
            if job is not None:
                self._fail(job.plan.video, error)
            return
        if job is None:
            return
        if phase_a is not None:
            job.finished(phase_a)
        for work in job.add(shard, stats, result):
            if isinstance(work.item, Shard):  # phase B goes first: it finishes videos and frees memory soonest
                self.queue.appendleft((work.item, work))
            else:
                ref = self.write_segment.remote(job.outputs, work.item, *work.inputs)
                self.in_flight[ref] = partial(self._segment_done, job.video_id, work)

    def _segment_done(self, video_id: str, work: Ready, ref: ray.ObjectRef) -> None:
        """A segment's writer task finished: record it, and commit its video once every segment is written."""
        job = self.jobs.get(video_id)
        try:
            written: SegmentWritten = ray.get(ref)
        except RayError as error:  # a write error fails this video only
            if job is not None:
                self._fail(job.plan.video, error)
            return
        if job is None:
            return
        job.segment_written(work, written)
        if job.complete:
            tracks = self.tracks.pop(video_id, None)
            segments = tuple(job.written[index] for index in sorted(job.written))
            ref = self.commit_video.remote(
                job.outputs, segments, job.timings(), job.frame_forwards,
                tracks if self.config.output.tracks else None, self.tracker_work.pop(video_id, 0),
            )
            self.in_flight[ref] = partial(self._committed, video_id)

    def _committed(self, video_id: str, ref: ray.ObjectRef) -> None:
        """A video's commit task finished: report the video done, or failed."""
        job = self.jobs[video_id]
        try:
            manifest: VideoManifest = ray.get(ref)
        except RayError as error:
            withdraw_outputs(job.outputs)  # the task may have died between publishing and the manifest
            self._fail(job.plan.video, error)
            return
        del self.jobs[video_id]
        job.close()
        video = job.plan.video
        outputs = {**manifest.outputs, "manifest": manifest_path(self.out_uri, video.video_id)}
        self._finish(VideoResult(
            video.video_id, video.uri, "done", num_frames=manifest.num_frames, outputs=outputs,
            seconds=manifest.timings["total"], model_seconds=manifest.timings["model"],
        ))

    def run(self) -> None:
        """Process every video; on an interruption the open videos' pending outputs are dropped."""
        try:
            self._submit()
            while self.in_flight:
                [ready], _ = ray.wait(list(self.in_flight), num_returns=1)
                self.in_flight.pop(ready)(ready)
                self._submit()
        finally:
            for job in list(self.jobs.values()):
                job.abort()
            self.bar.close()

    def worker_stats(self) -> tuple[WorkerStats, ...]:
        """Counters and peak memory of every shard actor."""
        return tuple(ray.get([actor.stats.remote() for actor in self.actors]))

    def shutdown(self) -> None:
        """Stop the shard actors and free their placement groups."""
        for actor in self.actors:
            ray.kill(actor)
        for group in self.groups:
            if group is not None:
                remove_placement_group(group)


def _print_video(result: VideoResult) -> None:
    tqdm.write(describe_video(result))


def _ignore_video(result: VideoResult) -> None:
    """The ``on_video`` of a quiet batch."""


def segment_videos(
    inputs: Sequence[str] | Sequence[VideoInput],
    model_dir: str,
    out_uri: str,
    config: JobConfig,
    *,
    progress: bool = True,
    segmenter_factory: SegmenterFactory | None = None,
    on_video: Callable[[VideoResult], None] | None = None,
) -> BatchResult:
    """Segment every video of ``inputs`` and write the outputs under ``out_uri``.

    Before Ray starts, the output root is checked writable and its lock taken (:mod:`pipeline.sinks.out_lock`; one
    run per root), and what dead runs left there is removed (:func:`pipeline.sinks.out_root.remove_leftovers`).

    Args:
        inputs: video files, folders, globs or fsspec URLs (see :mod:`pipeline.io.inputs`), or videos already
            expanded (:class:`VideoInput`, ids kept as given).
        model_dir: the learned part model (used by the default segmenter factory).
        out_uri: output root, a local path or fsspec URL (layout in the module docstring).
        config: the job configuration.
        progress: show an overall progress bar (videos) and one per video (frames).
        segmenter_factory: builds the segmenter inside each actor; default
            :class:`~pipeline.batch.segmenters.PartModelFactory` of ``model_dir`` and ``config``.
        on_video: called with each video's result as soon as it is done, skipped or failed; default: print
            :func:`describe_video` when ``progress`` is on.

    Returns:
        A :class:`BatchResult`: per-video status, output paths, timings and errors.

    Raises:
        InputError: an input matches no video, tracks are needed from CoTracker3 without a readable
            checkpoint, the output root is not writable or another run holds it (nothing is started).
        BatchError: the segmenter cannot be built.
        PlacementError: Ray cannot place a single shard actor within ``runtime.placement_timeout_s``.
    """
    started = time.perf_counter()
    check_tracker(config)
    videos = as_videos(inputs)
    factory = segmenter_factory or PartModelFactory(model_dir, config)
    key = commit_key(config, factory)
    callback = on_video or (_print_video if progress else _ignore_video)
    check_writable(out_uri)
    with OutputLock(out_uri):
        remove_leftovers(out_uri)
        with ray_session(config.runtime) as placement_timeout_s:
            driver = _Driver(videos, out_uri, config, factory, progress, key, callback, placement_timeout_s)
            try:
                driver.run()
                workers = driver.worker_stats()
            finally:
                driver.shutdown()
                remove_leftovers(out_uri)  # this run's emptied staging folders
        results = tuple(driver.results[video.video_id] for video in videos)
        failures = [
            Failure(r.video_id, r.uri, r.error_type or "", r.error or "") for r in results if r.status == "failed"
        ]
        failures_path = update_failures(out_uri, {video.video_id for video in videos}, failures)
    elapsed = time.perf_counter() - started
    return BatchResult(out_uri, results, failures_path, elapsed, workers, driver.peak_outstanding)
