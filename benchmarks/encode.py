"""Overlay encoding: is the H.264 bitstream repeatable, and what does each x264 threading setting cost?

Overlays are part of the rerun contract (a rerun writes byte-identical files), so ``pipeline.io.video`` pins
x264's threading (``X264_THREADING``) and, on CPUs with AVX-512, its instruction set (``X264_INSTRUCTION_SET``).
This script encodes the same frames ``--repeats`` times with each setting and prints how many distinct files came
out and the mean seconds per encode. Rows (each with the shipped instruction set):

- ``auto``: x264's default (frame threads, their number from the machine's core count);
- ``single``: one thread;
- ``frame-4`` / ``sliced-4``: four frame threads / four slice threads (the shipped setting);
- ``sliced-4-avx512`` (on CPUs with AVX-512 only): the shipped threading with every instruction set x264 detects.

Run from the repository root: ``.venv/bin/python -m benchmarks.encode [--frames 48 --size 256x384]``.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

import pipeline.io.video as video

SETTINGS: dict[str, dict[str, str]] = {
    "auto": {},
    "single": {"threads": "1"},
    "frame-4": {"threads": "4"},
    "sliced-4": {"threads": "4", "sliced-threads": "1"},
}


def moving_pattern(num_frames: int, height: int, width: int) -> np.ndarray:
    """A smooth colour pattern drifting over time: ``(T, H, W, 3)`` uint8."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    red = 128 + 100 * np.sin(2 * np.pi * (x + 2 * t) / width)
    green = 128 + 100 * np.cos(2 * np.pi * (y - t) / height)
    blue = 60 + (x + y) % 128 + 0 * t
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def measure(
    frames: np.ndarray, setting: dict[str, str], instruction_set: dict[str, str], repeats: int, folder: Path
) -> tuple[int, float]:
    """(distinct output files, mean seconds per encode) over ``repeats`` encodes of ``frames`` at 24 fps."""
    video.X264_THREADING, video.X264_INSTRUCTION_SET = setting, instruction_set
    digests, seconds = set(), []
    for index in range(repeats):
        path = folder / f"{index}.mp4"
        started = time.perf_counter()
        video.write_video(str(path), frames, fps=24.0)
        seconds.append(time.perf_counter() - started)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return len(digests), float(np.mean(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="256x384", help="HEIGHTxWIDTH in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    height, width = (int(side) for side in args.size.split("x"))
    frames = moving_pattern(args.frames, height, width)
    print(f"{args.frames} frames of {height}x{width}, {args.repeats} encodes per row\n")
    print("| setting | x264 options | distinct files | s per encode |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        rows = [(name, setting, video.X264_INSTRUCTION_SET) for name, setting in SETTINGS.items()]
        if video.X264_INSTRUCTION_SET:
            rows.append(("sliced-4-avx512", SETTINGS["sliced-4"], {}))
        for name, setting, instruction_set in rows:
            distinct, mean = measure(frames, setting, instruction_set, args.repeats, Path(folder))
            options = ":".join(f"{k}={v}" for k, v in {**setting, **instruction_set}.items()) or "(default)"
            print(f"| {name} | {options} | {distinct} | {mean:.3f} |", flush=True)


if __name__ == "__main__":
    main()
