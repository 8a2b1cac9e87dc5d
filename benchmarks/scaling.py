"""Scale-out benchmark: throughput against shard actors, and what the driver spends per output frame.

The segmenter costs a fixed ``--cost-ms`` per frame spent asleep (a GPU's time, which uses no CPU here) and
returns cheap two-class scores, so the numbers measure the pipeline around the model: decoding, transfer,
stitching, run-length encoding, Parquet, overlay encoding (in writer tasks) and scheduling (the driver). Each
row runs in a fresh process with a ``ray.cluster_utils.Cluster`` of ``--nodes`` nodes holding logical GPUs (one
per actor) and ``--writer-cpus`` logical CPUs per node for the writer tasks. Columns:

- frames/s over the video's span (first shard started to commit, so actor start-up is left out) and its ratio
  to ``N`` times the one-actor rate of the same video (the target is >= 0.9 for N = 2, 4, 8), and frames/s
  over the whole ``segment_videos`` call;
- driver CPU per output frame (``time.process_time`` of the driver process, all its threads), ms;
- driver peak resident memory (``VmHWM``), MiB;
- object-store peak: the peak resident memory of the cluster's raylets (they hold the shared-memory object
  store, whose pages count as theirs once touched), summed over nodes, MiB.

Physical cores bound the writers: keep ``frames/s x writer CPU per frame`` under the machine's cores (raise
``--cost-ms`` on a small machine), or the rows measure the machine, not the pipeline.

Run from the repository root::

    .venv/bin/python -m benchmarks.scaling [--frames 192] [--cost-ms 100] [--actors 1 2 4 8] [--sizes 256 1080]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pipeline.batch.actors import peak_rss_mib
from pipeline.batch.driver import segment_videos
from pipeline.batch.segmenters import LoadedSegmenter
from pipeline.config import load_config
from pipeline.io.video import write_video

REPOSITORY = Path(__file__).resolve().parent.parent
MAP_SIZE = 32


@dataclass(frozen=True)
class SleepingSegmenterFactory:
    """A segmenter that sleeps ``cost_s`` per frame and labels bright pixels as the object."""

    cost_s: float

    def __call__(self) -> LoadedSegmenter:
        def segment(frames: Tensor, seed: int) -> Tensor:
            time.sleep(self.cost_s * frames.shape[0])
            grey = torch.nn.functional.interpolate(frames.float().mean(1, keepdim=True), size=(MAP_SIZE, MAP_SIZE))
            bright = grey / 255.0
            return torch.cat([1 - bright, bright], dim=1)

        return LoadedSegmenter(segment, ["background", "object"], f"sleep-{self.cost_s}")

    def fingerprint(self) -> dict[str, float]:
        return {"sleep_s": self.cost_s}


def make_video(path: Path, frames: int, height: int) -> Path:
    """A ``frames``-frame 16:9 clip of a bright disc moving over a dark background."""
    width = height * 16 // 9 // 2 * 2
    y, x = np.mgrid[0:height, 0:width]

    def frame(t: int) -> np.ndarray:
        cx, cy = width * (0.2 + 0.6 * t / frames), height / 2
        disc = (x - cx) ** 2 + (y - cy) ** 2 < (height / 4) ** 2
        return np.repeat((30 + 200 * disc).astype(np.uint8)[..., None], 3, axis=2)

    write_video(str(path), (frame(t) for t in range(frames)), fps=24)
    return path


def descendants_peak_mib(name: str) -> float:
    """Summed peak resident memory (``VmHWM``) of this process's descendants called ``name``, MiB."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid, rest = text.split(" (", 1)
        comm, fields = rest.rsplit(") ", 1)
        parents[int(pid)], names[int(pid)] = int(fields.split()[1]), comm
    mine = {os.getpid()}
    for _ in range(8):  # a few levels of process tree
        mine |= {pid for pid, parent in parents.items() if parent in mine}
    total = 0.0
    for pid in mine:
        if names.get(pid) == name:
            with suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    return total


def run_row(
    video: str, out: str, actors: int, nodes: int, cost_s: float, writer_cpus: int, overlays: bool
) -> dict[str, float]:
    """One measurement in this process: a fresh cluster, one ``segment_videos`` call, the driver's costs."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster()
    per_node = -(-actors // nodes)
    for _ in range(nodes):
        cluster.add_node(num_cpus=per_node + writer_cpus, num_gpus=per_node)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        config = load_config("tiny", [
            f"runtime.num_actors={actors}", "runtime.gpus_per_actor=1", "runtime.cpus_per_actor=1",
            "runtime.windows_per_shard=1", "segment.window=8", "segment.overlap=0", "guidance.track_weight=0",
            f"runtime.max_shards_in_flight={2 * actors}", f"output.overlays={str(overlays).lower()}",
        ])
        cpu, started = time.process_time(), time.perf_counter()
        result = segment_videos([video], "", out, config, progress=False,
                                segmenter_factory=SleepingSegmenterFactory(cost_s))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        store_mib = descendants_peak_mib("raylet")
    finally:
        ray.shutdown()
        cluster.shutdown()
    [done] = result.videos
    if done.status != "done":
        raise RuntimeError(f"{video}: {done.error_type}: {done.error}")
    return {"frames": done.num_frames, "seconds": seconds, "span_s": done.seconds, "driver_cpu_s": cpu,
            "driver_mib": peak_rss_mib(), "store_mib": store_mib}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[192], help="video lengths, frames")
    parser.add_argument("--cost-ms", type=float, default=100.0, help="simulated segmenter cost per frame, ms")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--nodes", type=int, default=2, help="cluster nodes (actors spread over them)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1080], help="video heights, pixels")
    parser.add_argument("--writer-cpus", type=int, default=1, help="logical CPUs per node for writer tasks")
    parser.add_argument("--no-overlays", dest="overlays", action="store_false",
                        help="masks only: the writers' cheapest work, to see the scheduling scale on few cores")
    parser.add_argument("--row", nargs=3, metavar=("VIDEO", "OUT", "ACTORS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.row:
        video, out, actors = args.row
        row = run_row(video, out, int(actors), args.nodes, args.cost_ms / 1000, args.writer_cpus, args.overlays)
        print(json.dumps(row))
        return
    print("command: " + " ".join([sys.executable, "-m", "benchmarks.scaling", *sys.argv[1:]]))
    print(f"\n{args.cost_ms:.0f} ms simulated segmenter cost per frame, {args.nodes} nodes, "
          f"{args.writer_cpus} writer CPU(s) per node, overlays {'on' if args.overlays else 'off'}\n")
    print("| video | frames | actors | frames/s (span) | vs N x one actor | frames/s (call) | driver CPU ms / frame "
          "| driver peak MiB | object-store peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for frames in args.frames:
            for height in args.sizes:
                video = make_video(Path(scratch) / f"clip{height}-{frames}.mp4", frames, height)
                single = None
                for actors in args.actors:
                    command = [sys.executable, "-m", "benchmarks.scaling", "--nodes", str(args.nodes), "--cost-ms",
                               str(args.cost_ms), "--writer-cpus", str(args.writer_cpus),
                               *([] if args.overlays else ["--no-overlays"]), "--row", str(video),
                               f"{scratch}/out-{height}-{frames}-{actors}", str(actors)]
                    done = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY)
                    if done.returncode != 0:
                        sys.exit(f"{height}p, {actors} actors: the run failed:\n{done.stderr[-3000:]}")
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    rate = row["frames"] / row["span_s"]
                    single = single or rate / actors
                    print(f"| {height}p | {frames} | {actors} | {rate:.2f} | {rate / (actors * single):.2f} | "
                          f"{row['frames'] / row['seconds']:.2f} | {1000 * row['driver_cpu_s'] / row['frames']:.1f} "
                          f"| {row['driver_mib']:.0f} | {row['store_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
