"""Batch pipeline benchmark: throughput, orchestration overhead and memory of ``segment_videos`` on CPU.

Prints two tables (not a test), for the embedded tiny backbone with a part model trained for one epoch on a
synthetic reference set (its quality does not matter for speed):

1. throughput with 1 and 2 shard actors on one video: frames/s end to end (the whole ``segment_videos`` call,
   actor start-up and model loading included) and over the video's own span (first shard to commit), and the
   ratio of that span to the time spent inside segmenter calls per busy actor (orchestration overhead: decode,
   transfer, stitching, RLE, overlay encoding, scheduling; target <= 1.15 with one actor);
2. memory: peak resident set size (Linux ``VmHWM``) of the driver and of the actor for a short and a 10x longer
   video, each in a fresh subprocess (target: the long video within 1.2x of the short one).

Run from the repository root as a module (a script named ``pipeline.py`` would shadow the package):
``.venv/bin/python -m benchmarks.batch_throughput`` (``--quick`` for 60/600 frames instead of 200/2000).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import ray
import torch

from pipeline.batch.actors import peak_rss_mib
from pipeline.batch.driver import segment_videos
from pipeline.config import JobConfig, load_config
from pipeline.synth import generate_benchmark
from pipeline.training.train import train_part_model

REPOSITORY = Path(__file__).resolve().parent.parent


def job_config(resolution: int, actors: int) -> JobConfig:
    """The tiny CPU configuration at ``resolution`` px with ``actors`` one-CPU shard actors, one window per shard."""
    return load_config("tiny", [
        f"model.resolution={resolution}", f"runtime.num_actors={actors}", "runtime.cpus_per_actor=1",
        "runtime.windows_per_shard=1", "train.epochs=1", "train.token_epochs=1",
    ])


def make_video(work: Path, frames: int, size: int) -> Path:
    """A synthetic car video of ``frames`` frames (and its reference set); returns the dataset folder."""
    return generate_benchmark(work / f"data{frames}", size=size, num_references=2, videos_per_kind=1,
                              num_frames=frames, kinds=["car"])[0]


def run_once(video: Path, model: Path, out: Path, config: JobConfig) -> dict[str, float]:
    """Segment one video in a fresh local Ray session; returns timings (s), frames and peak memory (MiB)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = segment_videos([str(video)], str(model), str(out), config, progress=False)
    finally:
        ray.shutdown()
    [done] = result.videos
    if done.status != "done":
        raise RuntimeError(f"{video}: {done.error_type}: {done.error}")
    return {
        "frames": done.num_frames, "call_s": result.seconds, "video_s": done.seconds,
        "model_s": done.model_seconds, "driver_mib": peak_rss_mib(),
        "actor_mib": max(worker.peak_rss_mib for worker in result.workers),
        "busy_actors": sum(worker.shards > 0 for worker in result.workers),
    }


def throughput_table(video: Path, model: Path, work: Path, resolution: int) -> None:
    print("\n| actors | frames | end-to-end frames/s | video-span frames/s | span / (model time per actor) |")
    print("|---|---|---|---|---|")
    for actors in (1, 2):
        row = run_once(video, model, work / f"out-{actors}", job_config(resolution, actors))
        per_actor = row["model_s"] / row["busy_actors"]
        print(f"| {actors} | {row['frames']} | {row['frames'] / row['call_s']:.1f} | "
              f"{row['frames'] / row['video_s']:.1f} | {row['video_s'] / per_actor:.3f} |")


def memory_table(videos: dict[int, Path], model: Path, work: Path, resolution: int) -> None:
    print("\n| frames | driver peak RSS (MiB) | actor peak RSS (MiB) | seconds |")
    print("|---|---|---|---|")
    rows = {}
    for frames, video in videos.items():
        args = [sys.executable, "-m", "benchmarks.batch_throughput", "--memory-run", str(video), str(model),
                str(work / f"mem-{frames}"), str(resolution)]
        done = subprocess.run(args, check=True, capture_output=True, text=True, cwd=REPOSITORY)
        row = rows[frames] = json.loads(done.stdout.splitlines()[-1])
        print(f"| {frames} | {row['driver_mib']:.0f} | {row['actor_mib']:.0f} | {row['call_s']:.1f} |")
    short, long = (rows[f] for f in sorted(rows))
    print(f"\nlong / short: driver {long['driver_mib'] / short['driver_mib']:.2f}x, "
          f"actor {long['actor_mib'] / short['actor_mib']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60- and 600-frame videos instead of 200 and 2000")
    parser.add_argument("--size", type=int, default=128, help="video side in pixels")
    parser.add_argument("--resolution", type=int, default=128, help="working resolution in pixels")
    parser.add_argument("--memory-run", nargs=4, metavar=("VIDEO", "MODEL", "OUT", "RES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_run:
        video, model, out, resolution = args.memory_run
        print(json.dumps(run_once(Path(video), Path(model), Path(out), job_config(int(resolution), 1))))
        return
    short, long = (60, 600) if args.quick else (200, 2000)
    with tempfile.TemporaryDirectory(prefix="smite-bench-") as tmp:
        work = Path(tmp)
        data = {frames: make_video(work, frames, args.size) for frames in (short, long)}
        model = work / "model"
        train_part_model(str(data[short] / "references"), model, job_config(args.resolution, 1), progress=False)
        videos = {frames: folder / "videos" / "car_00.mp4" for frames, folder in data.items()}
        print(f"tiny backbone, 1-epoch part model, {args.size}px video, working resolution {args.resolution}, "
              f"{torch.get_num_threads()} torch thread(s) per process, CPU")
        throughput_table(videos[short], model, work, args.resolution)
        memory_table(videos, model, work, args.resolution)


if __name__ == "__main__":
    main()
