"""Cost of segmenting one window on CPU: wall time and peak memory, tiny backbone vs an SD-2.1-shaped one.

One window = :class:`smite_ops.segmentation.WindowSegmenter` on ``F`` frames: VAE encoding, one UNet pass with
cross-frame self-attention and Q/K capture, cross-attention logits and the inference-variant WAS (single pass,
no hierarchical crops). Two backbones:

- ``tiny``: the shipped tiny backbone (``pipeline/assets/tiny-sd``) at 256 px, 16 frames;
- ``sd21``: a UNet built from the SD-2.1-base config (random weights: cost does not depend on their values) and
  an SD-shaped VAE, float32, at 512 px. Sixteen frames at 512 px are too slow for two CPU cores, so it is
  measured at 1, 2 and 4 frames and extrapolated to 16 with a least-squares fit ``a + b F + c F^2`` (the
  cross-frame self-attention grows quadratically with ``F``); the table says which rows are extrapolated.

Each measurement runs in a fresh subprocess; peak memory is that process's resident-set high-water mark
(``VmHWM``) and the growth over the RSS just before the window. Run::

    .venv/bin/python -m benchmarks.window_cost [--threads 2] [--sd-frames 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from pipeline.method.backbone_source import TINY_BACKBONE
from smite_ops.backbone import Backbone, load_backbone
from smite_ops.part_model import PartModel
from smite_ops.segmentation import SegmentSettings, WindowSegmenter
from smite_ops.tiny_model import sd_ddim_scheduler

SD21_UNET = {
    "sample_size": 64,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}
SD_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
}
NUM_PARTS = 6
TARGET_FRAMES = 16


def _memory_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _sd21_backbone() -> Backbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD21_UNET).eval().requires_grad_(False)
        vae = AutoencoderKL(**SD_VAE).eval().requires_grad_(False)
    return Backbone(
        unet=unet, vae=vae, scheduler=sd_ddim_scheduler(), text_encoder=None, tokenizer=None, source="sd21-shaped",
        root=Path("."), content_hash="sha256:random", device=torch.device("cpu"), dtype=torch.float32,
    )


def measure(model: str, frames: int) -> dict[str, float]:
    """Time and memory of one window of ``frames`` frames (run in a fresh process for the memory numbers)."""
    backbone = load_backbone(str(TINY_BACKBONE)) if model == "tiny" else _sd21_backbone()
    resolution = 256 if model == "tiny" else 512
    dim = backbone.unet.config.cross_attention_dim
    conditioning = torch.randn(77, dim, generator=torch.Generator().manual_seed(0))
    part_model = PartModel(
        part_names=["background", *(f"part{i}" for i in range(1, NUM_PARTS))], base_model=backbone.source,
        base_hash=backbone.content_hash, resolution=resolution, conditioning=conditioning,
        tokens=conditioning[1:NUM_PARTS].clone(),
    )
    segmenter = WindowSegmenter(backbone, part_model, SegmentSettings(resolution=resolution, hierarchical=False))
    window = torch.randint(0, 256, (frames, 3, resolution, resolution), dtype=torch.uint8)
    before = _memory_kib("VmRSS")
    started = time.perf_counter()
    scores = segmenter(window, seed=0)
    seconds = time.perf_counter() - started
    assert scores.shape[:2] == (frames, NUM_PARTS)
    peak = _memory_kib("VmHWM")
    return {"seconds": seconds, "peak_mib": peak / 1024, "growth_mib": (peak - before) / 1024}


def _in_subprocess(model: str, frames: int, threads: int) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.window_cost", "--one", model, str(frames), "--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _extrapolate(points: list[tuple[int, dict[str, float]]], key: str, frames: int) -> float:
    """Least-squares ``a + b F + c F^2`` through the measured points (a line when only two), at ``frames``."""
    xs = np.array([f for f, _ in points], float)
    ys = np.array([m[key] for _, m in points], float)
    degree = min(2, len(points) - 1)
    return float(np.polyval(np.polyfit(xs, ys, degree), frames))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sd-frames", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    command = " ".join([sys.executable, "-m", "benchmarks.window_cost", *sys.argv[1:]])
    print(f"command: {command}\n\ntorch threads: {args.threads}, float32, CPU\n")
    rows = [("tiny @256", TARGET_FRAMES, _in_subprocess("tiny", TARGET_FRAMES, args.threads), "measured")]
    points = [(frames, _in_subprocess("sd21", frames, args.threads)) for frames in args.sd_frames]
    rows += [("SD-2.1 @512", frames, result, "measured") for frames, result in points]
    if TARGET_FRAMES not in args.sd_frames and len(points) >= 2:
        fitted = {key: _extrapolate(points, key, TARGET_FRAMES) for key in ("seconds", "peak_mib", "growth_mib")}
        rows.append(("SD-2.1 @512", TARGET_FRAMES, fitted, "extrapolated"))
    print("| backbone | frames | seconds / window | peak RSS (MiB) | growth (MiB) | how |")
    print("|---|---:|---:|---:|---:|---|")
    for name, frames, result, how in rows:
        print(
            f"| {name} | {frames} | {result['seconds']:.1f} | {result['peak_mib']:.0f} | "
            f"{result['growth_mib']:.0f} | {how} |"
        )


if __name__ == "__main__":
    main()
