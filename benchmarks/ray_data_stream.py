"""Ray Data against the batch driver, on the work Ray Data fits: many short videos, unguided (issue 15, item 2).

Ray Data streams rows through operators with backpressure, which fits "a stream of whole videos through an
actor pool". It does not fit what the driver also does: overlapping windows whose frames need two shards, two
phases per video whose phase B reads phase A's neighbours, shards of one long video spread over actors. So the
comparison is on whole videos: each Ray Data row is one video, segmented window by window in a pool actor (the
sleeping segmenter of :mod:`benchmarks.scaling`) and written and committed by the same writer functions the
batch uses (:mod:`pipeline.batch.video_writer`), one segment per video. Columns per setting: frames/s over the
call, driver CPU per output frame (``time.process_time``: Ray Data's streaming executor runs in the driver
process), driver peak memory.

Run from the repository root::

    .venv/bin/python -m benchmarks.ray_data_stream [--videos 12] [--frames 24] [--cost-ms 100] [--actors 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.scaling import REPOSITORY, SleepingSegmenterFactory, make_video
from pipeline.batch.actors import ShardResult, peak_rss_mib
from pipeline.batch.driver import segment_videos
from pipeline.batch.plan import Segment, Shard
from pipeline.batch.video_writer import VideoOutputs, commit_video, write_segment
from pipeline.batch.windows import plan_windows
from pipeline.config import load_config
from pipeline.io.video import probe_video, read_frames

WINDOW = 8


@dataclass
class WholeVideoSegmenter:
    """A Ray Data actor UDF: segment each row's video window by window, then write and commit its outputs."""

    cost_s: float
    out: str

    def __post_init__(self) -> None:
        self.loaded = SleepingSegmenterFactory(self.cost_s)()

    def __call__(self, row: dict) -> dict:
        uri, info = row["uri"], probe_video(row["uri"])
        windows = tuple(plan_windows(info.num_frames, WINDOW, 0))
        frames = torch.from_numpy(read_frames(uri)).permute(0, 3, 1, 2)
        scores = tuple((w, self.loaded.segment(frames[w.start : w.stop], w.start).half()) for w in windows)
        shard = Shard(row["video_id"], uri, 0, windows, info.num_frames)
        video = VideoOutputs(self.out, "ray-data", row["video_id"], uri, info, self.loaded.part_names,
                             self.loaded.model_id, info.fps, "", "", 0)
        segment = Segment(0, 0, info.num_frames, (0,))
        written = write_segment(video, segment, ShardResult(shard, scores))
        commit_video(video, (written,), {"total": 0.0, "model": 0.0}, 0)
        return {"video_id": row["video_id"], "frames": written.frames}


def run_ray_data(videos: list[str], out: str, actors: int, cost_s: float) -> int:
    """Stream ``videos`` through a pool of ``actors`` :class:`WholeVideoSegmenter`; returns frames written."""
    import ray.data

    rows = [{"uri": uri, "video_id": Path(uri).stem} for uri in videos]
    dataset = ray.data.from_items(rows).map(
        WholeVideoSegmenter, fn_constructor_kwargs={"cost_s": cost_s, "out": out}, concurrency=actors, num_gpus=1,
    )
    return sum(row["frames"] for row in dataset.iter_rows())


def run_driver(videos: list[str], out: str, actors: int, cost_s: float) -> int:
    """The same videos through :func:`segment_videos` (one shard per video); returns frames written."""
    config = load_config("tiny", [
        f"runtime.num_actors={actors}", "runtime.gpus_per_actor=1", "runtime.cpus_per_actor=1",
        "runtime.windows_per_shard=1000", f"segment.window={WINDOW}", "segment.overlap=0",
        f"runtime.max_shards_in_flight={2 * actors}",
    ])
    result = segment_videos(videos, "", out, config, progress=False, segmenter_factory=SleepingSegmenterFactory(cost_s))
    if result.with_status("failed"):
        raise RuntimeError(f"failed: {result.with_status('failed')}")
    return result.frames


def run_row(kind: str, folder: str, out: str, actors: int, cost_s: float) -> dict[str, float]:
    """One measurement in this process: a local Ray with ``actors`` logical GPUs and one more CPU per actor."""
    import ray

    ray.init(num_cpus=2 * actors, num_gpus=actors, include_dashboard=False, log_to_driver=False)
    try:
        videos = sorted(str(path) for path in Path(folder).glob("*.mp4"))
        cpu, started = time.process_time(), time.perf_counter()
        frames = (run_ray_data if kind == "ray-data" else run_driver)(videos, out, actors, cost_s)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        ray.shutdown()
    return {"frames": frames, "seconds": seconds, "driver_cpu_s": cpu, "driver_mib": peak_rss_mib()}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=24, help="frames per video")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--cost-ms", type=float, default=100.0, help="simulated segmenter cost per frame, ms")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--row", nargs=3, metavar=("KIND", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.row:
        kind, folder, out = args.row
        print(json.dumps(run_row(kind, folder, out, args.actors, args.cost_ms / 1000)))
        return
    print("command: " + " ".join([sys.executable, "-m", "benchmarks.ray_data_stream", *sys.argv[1:]]))
    print(f"\n{args.videos} videos of {args.frames} frames at {args.height}p, {args.cost_ms:.0f} ms simulated cost "
          f"per frame, {args.actors} actors\n")
    print("| scheduler | frames/s (call) | driver CPU ms / frame | driver peak MiB |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "videos"
        folder.mkdir()
        for index in range(args.videos):
            make_video(folder / f"clip{index:03d}.mp4", args.frames, args.height)
        for kind in ("driver", "ray-data"):
            command = [sys.executable, "-m", "benchmarks.ray_data_stream", "--cost-ms", str(args.cost_ms),
                       "--actors", str(args.actors), "--row", kind, str(folder), f"{scratch}/out-{kind}"]
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY)
            if done.returncode != 0:
                sys.exit(f"{kind}: the run failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {kind} | {row['frames'] / row['seconds']:.2f} | "
                  f"{1000 * row['driver_cpu_s'] / row['frames']:.1f} | {row['driver_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
