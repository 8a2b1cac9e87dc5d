"""Tracking benchmark: tracker speed, chunked-tracking memory, and tracker work per output frame.

Prints three tables (not a test):

1. speed: seconds per frame per 1,000 points of ``LucasKanadeTracker`` and ``CoTracker3Tracker`` (random
   weights: timing does not depend on their values) at the production model resolution 384x512, on CPU;
2. memory: peak resident set size (Linux ``VmHWM``: everything the process touched — numpy, torch,
   OpenCV and the interpreter; tracemalloc would miss torch's allocator) of chunked LK tracking of a
   300- and a 600-frame synthetic video, each in a fresh subprocess, plus the growth over the RSS just
   before tracking (``ru_maxrss`` is not used: Linux carries the parent's peak into the child);
3. work: tracker point-frames computed per output frame (sum over tracker calls of points x frames,
   divided by the video length) by the shared-track design, against the reference's calling pattern
   (per 16-frame window, stride 8: 16 runs x 4096 queries x 16 frames per 8 new output frames).

Run: ``.venv/bin/python benchmarks/tracking.py`` (``--quick`` for a smaller, faster run).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from smite_ops.tracking.base import PointTracker, Tracks
from smite_ops.tracking.cotracker3 import CoTracker3Offline, CoTracker3Tracker
from smite_ops.tracking.long_video import ChunkConfig, VideoTracks, track_long_video
from smite_ops.tracking.lucas_kanade import LucasKanadeTracker
from smite_ops.tracking.queries import grid_queries, query_frames_for

HEIGHT, WIDTH = 384, 512  # CoTracker3's model resolution, where the pipeline tracks
REFERENCE_POINTS, REFERENCE_WINDOW, REFERENCE_STRIDE = 4096, 16, 8  # METHOD.md §4.2 / §5, guided mode
QUERY_EVERY = 8  # a query frame every 8 frames ...
CHUNKS = ChunkConfig(chunk_frames=48, overlap_frames=8, horizon=16)  # ... each point tracked 16 frames each way


class MovingTexture:
    """A synthetic video rendered on demand: a smooth random texture under slow rotation and drift."""

    def __init__(self, seed: int = 0) -> None:
        noise = np.random.default_rng(seed).random((2 * HEIGHT, 2 * WIDTH, 3)).astype(np.float32)
        blurred = cv2.GaussianBlur(noise, (0, 0), 3.0)
        self.texture = cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)

    def read_chunk(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``[start, stop)`` as ``(stop - start, 3, 384, 512)`` uint8."""
        frames = []
        for t in range(start, stop):
            phase = 2 * math.pi * t / 200
            matrix = cv2.getRotationMatrix2D((WIDTH, HEIGHT), 5 * math.sin(phase), 1.0)
            matrix[:, 2] -= (WIDTH / 2 + 30 * math.sin(phase), HEIGHT / 2 + 20 * math.cos(phase))
            frames.append(cv2.warpAffine(self.texture, matrix, (WIDTH, HEIGHT)))
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


@dataclass
class CountingTracker:
    """A ``PointTracker`` that forwards to ``inner`` and counts the point-frames it is asked for."""

    inner: PointTracker
    point_frames: int = 0
    calls: int = 0

    def track(self, video: torch.Tensor, queries: torch.Tensor) -> Tracks:
        self.point_frames += video.shape[0] * queries.shape[0]
        self.calls += 1
        return self.inner.track(video, queries)


def random_cotracker3() -> CoTracker3Tracker:
    """CoTracker3 with seeded random weights of the checkpoint's shapes (std 1/sqrt(fan-in))."""
    model = CoTracker3Offline()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = math.prod(parameter.shape[1:]) if parameter.ndim >= 2 else 100
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
    return CoTracker3Tracker(model.eval(), iters=6, backward=True)


def seconds_per_frame_per_kpoint(tracker: PointTracker, frames: int, spacing: int) -> tuple[float, int]:
    """Time one ``tracker.track`` of ``frames`` frames with a grid of points queried in the middle frame."""
    video = MovingTexture().read_chunk(0, frames)
    queries = grid_queries(HEIGHT, WIDTH, [frames // 2], spacing)
    begin = time.perf_counter()
    with torch.inference_mode():
        tracker.track(video, queries)
    elapsed = time.perf_counter() - begin
    return elapsed / (frames * queries.shape[0] / 1000), queries.shape[0]


def memory_run(num_frames: int, spacing: int) -> dict[str, float]:
    """Chunked LK tracking of a ``num_frames`` video (this process): RSS and tracker work, as a dict."""
    source = MovingTexture()
    queries = grid_queries(HEIGHT, WIDTH, query_frames_for(num_frames, QUERY_EVERY), spacing)
    lucas_kanade = LucasKanadeTracker()
    lucas_kanade.track(source.read_chunk(0, 2), torch.tensor([[0.0, 10.0, 10.0]]))  # page in OpenCV's code
    tracker = CountingTracker(lucas_kanade)
    before = resident_mib("VmRSS")
    begin = time.perf_counter()
    tracks = track_long_video(tracker, source.read_chunk, num_frames, queries, CHUNKS)
    return {
        "frames": num_frames,
        "points": queries.shape[0],
        "seconds": time.perf_counter() - begin,
        "rss_before_mib": before,
        "rss_peak_mib": resident_mib("VmHWM"),
        "store_mib": store_bytes(tracks) / 2**20,
        "point_frames": tracker.point_frames,
        "calls": tracker.calls,
    }


def resident_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from ``/proc/self/status``, in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field} line (this benchmark needs Linux)")
    return int(match.group(1)) / 1024


def store_bytes(tracks: VideoTracks) -> int:
    """Bytes held by a ``VideoTracks``."""
    tensors = (tracks.band_start, tracks.points, tracks.visible, tracks.query_frames)
    return sum(t.numel() * t.element_size() for t in tensors)


def run_in_subprocess(num_frames: int, spacing: int) -> dict[str, float]:
    """``memory_run`` in a fresh interpreter, so that its peak RSS is its own."""
    command = [sys.executable, __file__, "--memory-run", str(num_frames), "--spacing", str(spacing)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and points (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenCV threads (default 2)")
    parser.add_argument("--spacing", type=int, default=16, help="grid spacing (px) of the memory / work runs")
    parser.add_argument("--memory-run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    if args.memory_run:
        print(json.dumps(memory_run(args.memory_run, args.spacing)))
        return

    speed_table(args.threads, args.quick)
    runs = [run_in_subprocess(length, args.spacing) for length in ((100, 200) if args.quick else (300, 600))]
    memory_table(runs, args.spacing)
    work_table(runs, args.spacing)


def speed_table(threads: int, quick: bool) -> None:
    """Print seconds per frame per 1k points of both trackers."""
    print(f"## speed (CPU, {threads} threads, {HEIGHT}x{WIDTH}, backward tracking on)")
    print("| tracker | frames | points | s / frame / 1k points |\n|---|---|---|---|")
    spacing = 32 if quick else 14  # 14 px: 27 x 36 = 972 points
    trackers = {"Lucas-Kanade": (LucasKanadeTracker(), 24), "CoTracker3 (random weights)": (random_cotracker3(), 8)}
    for name, (tracker, frames) in trackers.items():
        frames = 4 if quick else frames
        seconds, points = seconds_per_frame_per_kpoint(tracker, frames, spacing)
        print(f"| {name} | {frames} | {points} | {seconds:.4f} |")


def memory_table(runs: list[dict[str, float]], spacing: int) -> None:
    """Print the RSS of the chunked-tracking runs and the ratio of the longest to the shortest."""
    print(f"\n## memory: chunked LK tracking, {CHUNKS}, a {spacing}-px grid every {QUERY_EVERY} frames")
    print("| frames | points | seconds | RSS before (MiB) | peak RSS (MiB) | growth (MiB) | track store (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        growth = run["rss_peak_mib"] - run["rss_before_mib"]
        print(
            f"| {run['frames']} | {run['points']} | {run['seconds']:.1f} | {run['rss_before_mib']:.0f} "
            f"| {run['rss_peak_mib']:.0f} | {growth:.0f} | {run['store_mib']:.1f} |"
        )
    short, long = runs[0], runs[-1]
    ratio = long["rss_peak_mib"] / short["rss_peak_mib"]
    print(f"peak RSS ratio {long['frames']}/{short['frames']} frames: {ratio:.2f}")


def work_table(runs: list[dict[str, float]], spacing: int) -> None:
    """Print tracker point-frames per output frame: measured runs, scaled to 4096 points, and the reference."""
    print("\n## work: tracker point-frames per output frame")
    print("| design | points per query frame | point-frames / output frame |\n|---|---|---|")
    grid_points = (HEIGHT // spacing) * (WIDTH // spacing)
    for run in runs:
        measured = run["point_frames"] / run["frames"]
        scaled = measured * REFERENCE_POINTS / grid_points
        label = f"shared tracks, {run['frames']} frames, {run['calls']} tracker calls"
        print(f"| {label} (measured) | {grid_points} | {measured:.0f} |")
        print(f"| {label} (scaled to 4096 points per query frame) | {REFERENCE_POINTS} | {scaled:.0f} |")
    reference = REFERENCE_WINDOW * REFERENCE_POINTS * REFERENCE_WINDOW / REFERENCE_STRIDE
    print(f"| reference: 16 runs per 16-frame window, stride 8 | {REFERENCE_POINTS} in each frame | {reference:.0f} |")


if __name__ == "__main__":
    main()
