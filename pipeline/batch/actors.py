"""What runs on Ray workers: shard actors that hold a loaded segmenter and also track whole videos.

:class:`ShardWorker` is a plain class (usable without Ray); :func:`start_worker` makes a Ray actor of it with
the resources of ``runtime`` (``num_gpus`` for GPU actors, ``num_cpus`` for CPU ones), in a placement group
reserved by :func:`reserve_actor_slots`. An actor builds its
segmenter once, from a picklable factory, then processes shards: it decodes only the shard's frames and
returns every window's class scores at the segmenter's output size in half precision, with a small
:class:`ShardStats` as a second return value, so that the driver can follow the work without fetching scores.

An actor process that dies (killed, out of memory, node lost) is restarted by Ray, which runs the factory
again and retries the shard that was running and those queued on it, up to :data:`MAX_RESTARTS` times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.actor import ActorHandle
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from pipeline.batch.plan import Shard
from pipeline.batch.results import WorkerStats
from pipeline.batch.segmenters import SegmenterFactory
from pipeline.batch.shared_tracks import compute_video_tracks, make_tracker
from pipeline.batch.stitch import stitch_range
from pipeline.batch.windows import Window
from pipeline.config import JobConfig, RuntimeConfig
from pipeline.io.video import VideoInfo, read_frames
from smite_ops.errors import InputError
from smite_ops.tracking.base import PointTracker
from smite_ops.tracking.long_video import VideoTracks, slice_tracks

MAX_RESTARTS = 3
"""How many times Ray restarts a dead shard actor (and retries its shards) before giving up on it."""
QUICK_PLACEMENT_S = 2.0
"""How long placement may take before :func:`reserve_actor_slots` says that it is waiting, s."""


class PlacementError(InputError):
    """The cluster cannot place a shard actor with the resources the job asks for."""


@dataclass(frozen=True)
class ShardStats:
    """What one shard cost: all the driver reads of a shard's result.

    Attributes:
        guided: whether the shard ran phase B (guided refinement).
        model_seconds: wall time spent inside segmenter calls, s.
        decode_seconds: wall time spent decoding the shard's frames, s.
        frame_forwards: UNet frame-forward equivalents spent on the shard (a backward counts two).
    """

    guided: bool
    model_seconds: float
    decode_seconds: float
    frame_forwards: int = 0


@dataclass(frozen=True)
class ShardResult:
    """The scores of one shard (what it cost is :class:`ShardStats`, the actor task's second return value).

    Attributes:
        shard: the shard processed.
        scores: per window, in shard order, ``(window.length, P, h, w)`` float16 class scores.
    """

    shard: Shard
    scores: tuple[tuple[Window, torch.Tensor], ...]


def phase_a_reference(shard: Shard, phase_a: tuple[ShardResult, ...]) -> torch.Tensor:
    """The stitched phase-A scores of frames ``[shard.start, shard.stop)``, ``(T, P, h, w)`` float32.

    ``phase_a`` holds the phase-A results of every shard covering those frames (:func:`covering_shards`).
    """
    windows = (pair for result in phase_a for pair in result.scores)
    frames = stitch_range(windows, shard.num_frames, shard.start, shard.stop)
    return torch.stack([scores for _, scores in frames])


class ShardWorker:
    """Holds one loaded segmenter and runs shards through it.

    Args:
        factory: builds the segmenter (called once, here).
        seed: the job seed; window ``[s, e)`` is segmented with seed ``seed + s`` whatever shard holds it.
        resolution: the working resolution, in pixels (the frame size of the tracks).
    """

    def __init__(self, factory: SegmenterFactory, seed: int, resolution: int) -> None:
        self.loaded = factory()
        self.seed = seed
        self.resolution = resolution
        self.shards = 0
        self.model_seconds = 0.0
        self._tracker: PointTracker | None = None

    def describe(self) -> tuple[list[str], str]:
        """``(part_names, model_id)`` of the loaded segmenter."""
        return self.loaded.part_names, self.loaded.model_id

    def run(
        self, shard: Shard, tracks: VideoTracks | None = None, *phase_a: ShardResult
    ) -> tuple[ShardResult, ShardStats]:
        """Decode frames ``[shard.start, shard.stop)`` and segment each window of the shard.

        Phase A (no ``tracks``): unguided scores. Phase B: guided refinement of each window against the video's
        shared ``tracks`` (pixels of the square working-resolution frame) and its slice of the reference, the
        stitched scores of ``phase_a``: the phase-A results of every shard covering the shard's frames.

        Returns:
            The result and its stats (two return values of the actor task).
        """
        started = time.perf_counter()
        frames = torch.from_numpy(read_frames(shard.uri, shard.start, shard.stop)).permute(0, 3, 1, 2)
        decode_seconds = time.perf_counter() - started
        if tracks is not None and (self.loaded.refine is None or not phase_a):
            raise ValueError("guided refinement needs a segmenter with guidance on and phase-A reference scores")
        reference = phase_a_reference(shard, phase_a) if tracks is not None else None
        model_seconds = 0.0
        count = self.loaded.frame_forwards or (lambda: 0)
        forwards_before = count()
        scores = []
        for window in shard.windows:
            local = slice(window.start - shard.start, window.stop - shard.start)
            seed = self.seed + window.start
            started = time.perf_counter()
            if tracks is None or reference is None:
                window_scores = self.loaded.segment(frames[local], seed)
            else:
                side = self.resolution
                window_tracks = slice_tracks(tracks, window.start, window.stop)
                window_scores = self.loaded.refine(frames[local], reference[local], window_tracks, (side, side), seed)
            model_seconds += time.perf_counter() - started
            if window_scores.ndim != 4 or window_scores.shape[0] != window.length:
                raise ValueError(
                    f"{shard.uri}: the segmenter returned scores of shape {tuple(window_scores.shape)} for "
                    f"{window.length} frames; expected (T, P, h, w)"
                )
            scores.append((window, window_scores.to(torch.float16).cpu()))
        self.shards += 1
        self.model_seconds += model_seconds
        stats = ShardStats(tracks is not None, model_seconds, decode_seconds, count() - forwards_before)
        return ShardResult(shard, tuple(scores)), stats

    def track(self, info: VideoInfo, config: JobConfig) -> tuple[VideoTracks, int]:
        """Point tracks of one whole video (see :mod:`pipeline.batch.shared_tracks`), with the tracker built once,
        and the tracker work spent on them (``VideoTracks.point_frames``).

        Run as an actor task with two returns, the tracks stay in the object store: every shard that needs them
        gets them from there without a recompute, and the driver reads only the work count. Tracking runs in
        the shard actors because they already hold the job's CPUs or GPUs (a separate task could wait forever
        for resources the actors keep).
        """
        if self._tracker is None:
            self._tracker = make_tracker(config)
        tracks = compute_video_tracks(info, config, self._tracker)
        return tracks, tracks.point_frames

    def stats(self) -> WorkerStats:
        """This process's counters and peak resident memory."""
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        return WorkerStats(os.getpid(), node_id, self.shards, self.model_seconds, peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (Linux ``VmHWM``; NaN where /proc is not available).

    Not ``ru_maxrss``, which Linux carries over from the process that forked this one.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # the value is in KiB
    except OSError:
        pass
    return float("nan")


def actor_bundle(runtime: RuntimeConfig) -> dict[str, float]:
    """The resources one shard actor asks for (zero amounts left out)."""
    bundle = {"CPU": runtime.cpus_per_actor, "GPU": runtime.gpus_per_actor}
    return {name: amount for name, amount in bundle.items() if amount > 0}


def reserve_actor_slots(
    runtime: RuntimeConfig, timeout_s: float, notify: Callable[[str], None]
) -> list[PlacementGroup | None]:
    """Reserve one placement group per shard actor, as Ray schedules them, and keep those placed in time.

    Ray places a group as soon as a node with its resources exists, including one an autoscaler starts for
    it; this waits for that up to ``timeout_s``, saying so in one line, then goes on with the groups placed and
    says how many; an actor that asks for no resources needs no group (None).

    Raises:
        PlacementError: not one actor could be placed; one line naming the ``runtime`` keys to change.
    """
    bundle = actor_bundle(runtime)
    if not bundle:
        return [None] * runtime.num_actors
    groups = [placement_group([bundle]) for _ in range(runtime.num_actors)]
    ready_refs = {group.ready(): group for group in groups}
    ready, pending = ray.wait(list(ready_refs), num_returns=len(groups), timeout=min(QUICK_PLACEMENT_S, timeout_s))
    if pending:
        notify(f"waiting up to {timeout_s:.0f} s for Ray to place {len(pending)} of {len(groups)} shard actor(s) "
               f"of {bundle} (runtime.num_actors, runtime.cpus_per_actor, runtime.gpus_per_actor)")
        more, pending = ray.wait(pending, num_returns=len(pending), timeout=max(0.0, timeout_s - QUICK_PLACEMENT_S))
        ready += more
    for ref in pending:
        remove_placement_group(ready_refs[ref])
    placed = [ready_refs[ref] for ref in ready]
    if not placed:
        raise PlacementError(
            f"runtime: Ray could not place a shard actor of {bundle} within {timeout_s:.0f} s (cluster: "
            f"{ray.cluster_resources()}); lower runtime.gpus_per_actor / runtime.cpus_per_actor, add nodes, or "
            "raise runtime.placement_timeout_s"
        )
    if pending:
        notify(f"runtime.num_actors={runtime.num_actors}: only {len(placed)} shard actor(s) of {bundle} could be "
               f"placed within {timeout_s:.0f} s; running with {len(placed)}")
    return placed


def free_cpus(groups: list[PlacementGroup | None], node_id: str | None = None) -> float:
    """CPUs of the cluster (or of node ``node_id``) not reserved by the shard actors' placement ``groups``."""
    total = sum(
        node["Resources"].get("CPU", 0.0) for node in ray.nodes()
        if node["Alive"] and node_id in (None, node["NodeID"])
    )
    for group in groups:
        if group is None:
            continue
        table = placement_group_table(group)
        for index, bundle in table["bundles"].items():
            if node_id in (None, table["bundles_to_node_id"].get(index)):
                total -= bundle.get("CPU", 0.0)
    return total


def writer_options(
    runtime: RuntimeConfig, groups: list[PlacementGroup | None], local_output: bool, notify: Callable[[str], None]
) -> dict[str, Any]:
    """Ray options of the writer tasks (:mod:`pipeline.batch.video_writer`).

    Each asks for ``runtime.cpus_per_writer`` CPUs; when the shard actors leave fewer than that (on the driver's
    node, for a ``local_output`` root: the only node that sees it), writers share the actors' CPUs instead, said
    in one line, rather than wait forever. A local output root pins the writers to the driver's node.
    """
    node_id = ray.get_runtime_context().get_node_id() if local_output else None
    cpus = runtime.cpus_per_writer
    free = free_cpus(groups, node_id)
    if cpus > free:
        where = "on the driver's node (the output root is a local folder)" if local_output else "in the cluster"
        notify(f"runtime.cpus_per_writer={cpus:g}: only {max(free, 0):g} CPU(s) left {where} beside the shard "
               "actors; the writer tasks share the actors' CPUs")
        cpus = 0.0
    options: dict[str, Any] = {"num_cpus": cpus}
    if node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return options


def start_worker(factory: SegmenterFactory, config: JobConfig, group: PlacementGroup | None) -> ActorHandle:
    """Start one shard actor in its placement ``group``; Ray restarts it up to ``MAX_RESTARTS`` times."""
    runtime = config.runtime
    strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0) if group else None
    actor_class = ray.remote(ShardWorker).options(
        num_cpus=runtime.cpus_per_actor,
        num_gpus=runtime.gpus_per_actor,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_RESTARTS,
        scheduling_strategy=strategy,
    )
    return actor_class.remote(factory, config.segment.seed, config.model.resolution)
