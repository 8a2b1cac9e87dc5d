"""Measured cost of the production path on one GPU: training steps, tracking, phase A and every phase-B mode.

Everything runs through the production code: an SD-2.1-base-shaped UNet and VAE with random weights (cost does
not depend on their values) are saved in diffusers format and loaded with :func:`pipeline.method.backbone_source.
load_job_backbone`, in the job's dtype (``auto``: bf16 on CUDA), from the ``smite`` preset; settings come from
:mod:`pipeline.method.settings`; the video is an H.264 file decoded by :mod:`pipeline.io.video`; tracks come from
our CoTracker3 (random weights) through :func:`pipeline.batch.shared_tracks.compute_video_tracks`. Rows:

- ``train stage 1`` / ``train stage 2``: one :meth:`smite_ops.learning.PartLearner.step` at 512 px (float32
  weights under bf16 autocast, classifier-free guidance doubling the batch, as ``smite train`` runs);
- ``tracking``: CoTracker3 on the whole test video, query grid and chunks as the job's ``tracker`` section
  (fp32, the job's default; ``tracking bf16`` with ``bf16=True``);
- ``phase A``: one unguided window of ``segment.window`` frames;
- ``phase B <mode>``: one window of ``guidance.window`` frames refined in ``filter``, ``fast`` and ``full``
  mode (each with its preset).

Seconds are CUDA-synchronised wall time, the median of ``--repeats`` runs after one warm-up; memory is the
peak allocated by PyTorch during the row (``torch.cuda.max_memory_allocated``). "per output frame" divides a
window's time by the frames the window advances (window - overlap). Run::

    python -m benchmarks.gpu_cost [--repeats 3] [--frames 48]
    python -m benchmarks.gpu_cost --smoke      # the same code on CPU with the tiny backbone, in about a minute
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from benchmarks.window_cost import SD21_UNET, SD_VAE
from pipeline.batch.shared_tracks import compute_video_tracks, make_tracker
from pipeline.config import JobConfig, load_config
from pipeline.io.video import probe_video, read_frames, write_video
from pipeline.method.backbone_source import load_job_backbone
from pipeline.method.settings import learn_settings, temporal_refiner, window_segmenter
from smite_ops.backbone import Backbone
from smite_ops.learning import PartLearner
from smite_ops.part_model import PartModel
from smite_ops.tiny_model import sd_ddim_scheduler
from smite_ops.tracking.base import Tracks
from smite_ops.tracking.cotracker3 import CoTracker3Tracker
from smite_ops.tracking.cotracker3.model import CoTracker3Offline
from smite_ops.tracking.long_video import slice_tracks

NUM_PARTS = 6
PRESET_KEYS = ("overlap", "timesteps", "iterations")  # null = the mode's preset (configs/smite.yaml spells full's)


def save_sd21_shaped(root: Path) -> Path:
    """Save a random SD-2.1-base-shaped UNet, VAE and DDIM scheduler in diffusers format under ``root``."""
    torch.manual_seed(0)
    UNet2DConditionModel(**SD21_UNET).save_pretrained(root / "unet")
    AutoencoderKL(**SD_VAE).save_pretrained(root / "vae")
    sd_ddim_scheduler().save_pretrained(root / "scheduler")
    return root


def random_part_model(backbone: Backbone, resolution: int) -> PartModel:
    """A part model with random conditioning of the backbone's width (``NUM_PARTS`` classes)."""
    conditioning = torch.randn(77, backbone.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(0))
    return PartModel(
        part_names=["background", *(f"part{i}" for i in range(1, NUM_PARTS))], base_model=backbone.source,
        base_hash=backbone.content_hash, resolution=resolution, conditioning=conditioning,
        tokens=conditioning[1:NUM_PARTS].clone(),
    )


def synthetic_video(path: Path, frames: int, size: int) -> str:
    """An H.264 file of ``frames`` smooth moving colour fields (``size`` x ``size``)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    clip = [
        np.stack([np.sin(6 * x + t / 5), np.cos(5 * y - t / 7), np.sin(4 * (x + y) + t / 3)], -1) * 110 + 128
        for t in range(frames)
    ]
    write_video(str(path), np.stack(clip).astype(np.uint8), fps=24)
    return str(path)


class Timer:
    """Times rows on one device: median seconds over repeats after a warm-up, and peak allocated memory."""

    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device = device
        self.repeats = repeats
        self.rows: list[dict[str, object]] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def row(
        self, name: str, run: Callable[[], object], advance: int, forwards: Callable[[], int] | None = None
    ) -> object:
        """Time ``run``; ``advance`` = output frames one run accounts for; ``forwards`` counts UNet frame-forwards."""
        result = run()  # warm-up (kernels, autotuning, allocator)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        seconds, counted = [], []
        for _ in range(self.repeats):
            before = forwards() if forwards else 0
            self._sync()
            started = time.perf_counter()
            result = run()
            self._sync()
            seconds.append(time.perf_counter() - started)
            counted.append((forwards() if forwards else 0) - before)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else float("nan")
        median = statistics.median(seconds)
        self.rows.append({
            "row": name, "seconds": median, "advance": advance, "ms_per_output_frame": 1000 * median / advance,
            "unet_frame_forwards": counted[-1], "peak_gib": peak,
        })
        print(f"{name}: {median:.3f} s, peak {peak:.2f} GiB", flush=True)
        return result

    def table(self) -> str:
        lines = [
            "| row | seconds | output frames | ms / output frame | UNet frame-fwd | ms / frame-fwd | peak GiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            fwd = r["unet_frame_forwards"]
            per_fwd = f"{1000 * r['seconds'] / fwd:.1f}" if fwd else "-"
            lines.append(
                f"| {r['row']} | {r['seconds']:.3f} | {r['advance']} | {r['ms_per_output_frame']:.1f} | {fwd or '-'} "
                f"| {per_fwd} | {r['peak_gib']:.2f} |"
            )
        return "\n".join(lines)


def mode_config(config: JobConfig, mode: str) -> JobConfig:
    """``config`` with ``guidance.mode = mode`` and that mode's preset for the preset keys."""
    data = config.model_dump(mode="json")
    data["guidance"] |= {"mode": mode, **dict.fromkeys(PRESET_KEYS)}
    return JobConfig.model_validate(data)


def measure_training(timer: Timer, config: JobConfig, part_model: PartModel) -> None:
    """One stage-1 and one stage-2 optimisation step on one 512-px sample."""
    backbone = load_job_backbone(config.model, config.runtime, for_training=True)
    settings = learn_settings(config)
    base = part_model.conditioning
    learner = PartLearner(backbone, part_model.part_names, base, base[1:NUM_PARTS], torch.zeros_like(base), settings)
    side = config.model.resolution
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, side, side, generator=generator) * 2 - 1
    mask = torch.randint(0, NUM_PARTS, (side, side), generator=generator)
    for stage, epoch in (("1", 0), ("2", settings.token_epochs)):
        step = partial(learner.step, image, mask, epoch, generator)
        timer.row(f"train stage {stage} (one step)", step, 1)
    learner.runner.close()


def measure_tracking(timer: Timer, config: JobConfig, video: str) -> Tracks:
    """The job's tracker over the whole video (as the job runs it), then CoTracker3 under bf16 autocast on CUDA."""
    tracker = make_tracker(config)
    info = probe_video(video)
    tracks = timer.row(f"tracking ({config.tracker.kind})", partial(compute_video_tracks, info, config, tracker),
                       info.num_frames)
    if isinstance(tracker, CoTracker3Tracker) and torch.cuda.is_available():
        bf16 = CoTracker3Tracker(tracker.predictor.model, iters=config.tracker.iterations, bf16=True)
        timer.row("tracking (cotracker3, bf16)", partial(compute_video_tracks, info, config, bf16), info.num_frames)
    return slice_tracks(tracks, 0, config.guidance.window)


def measure_tracker_settings(timer: Timer, config: JobConfig, video: str) -> None:
    """The job's tracker over the whole video at shorter chunks and coarser query grids (time and memory)."""
    info = probe_video(video)
    for chunk, spacing in ((24, 8), (16, 8), (48, 16), (24, 16)):
        variant = config.model_copy(update={"tracker": config.tracker.model_copy(
            update={"chunk_frames": chunk, "chunk_overlap": min(config.tracker.chunk_overlap, chunk // 2),
                    "grid_spacing": spacing})})
        tracker = make_tracker(variant)
        timer.row(f"tracking (chunks of {chunk} frames, grid every {spacing} px)",
                  partial(compute_video_tracks, info, variant, tracker), info.num_frames)


def save_cotracker3(path: Path) -> str:
    """Save a CoTracker3 offline model with random weights as a checkpoint file (a plain state dict)."""
    torch.manual_seed(0)
    torch.save(CoTracker3Offline().state_dict(), path)
    return str(path)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=48, help="frames of the test video (tracking row)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny backbone at 64 px, one repeat")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--sweep", action="store_true",
                        help="instead: tracking at other chunk lengths and grid spacings, full mode with checkpointing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.smoke:
            overrides = ["model.base=tiny", "model.resolution=64", "runtime.device=cpu", "tracker.kind=lucas_kanade"]
            repeats, frames = 1, 16
        else:
            overrides = [
                f"model.base={save_sd21_shaped(work / 'sd21-shaped')}",
                f"tracker.checkpoint={save_cotracker3(work / 'cotracker3.pth')}",
            ]
            repeats, frames = args.repeats, args.frames
        config = load_config("smite", overrides)
        backbone = load_job_backbone(config.model, config.runtime)
        device = backbone.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"device: {name}, dtype {backbone.dtype}, {config.model.resolution} px, torch {torch.__version__}")
        timer = Timer(device, repeats)
        part_model = random_part_model(backbone, config.model.resolution)
        if not args.sweep:
            measure_training(timer, config, part_model)
        if device.type == "cuda":
            torch.cuda.empty_cache()

        video = synthetic_video(work / "clip.mp4", frames, config.model.resolution)
        if args.sweep:
            measure_tracker_settings(timer, config, video)
        tracks = measure_tracking(timer, config, video)
        segmenter = window_segmenter(backbone, part_model, config)
        clip = torch.from_numpy(read_frames(video)).permute(0, 3, 1, 2)
        segment = config.segment
        timer.row(
            f"phase A ({segment.window}-frame window)", lambda: segmenter(clip[: segment.window], seed=0),
            min(segment.window, len(clip)) - segment.overlap, lambda: segmenter.runner.frame_forwards,
        )
        window = clip[: config.guidance.window]
        reference = segmenter(window, seed=0)
        side = config.model.resolution
        modes = [("full", ["guidance.gradient_checkpointing=true"])] if args.sweep else [
            ("filter", []), ("fast", []), ("full", [])]
        for mode, extra in modes:
            guidance = mode_config(load_config("smite", [*overrides, *extra]), mode).guidance
            refine = temporal_refiner(segmenter, guidance)
            timer.row(
                " ".join([f"phase B {mode} ({guidance.window}-frame window, overlap {guidance.overlap})", *extra]),
                lambda refine=refine: refine(window, reference, tracks, (side, side), 0),
                guidance.window - guidance.overlap, lambda: segmenter.runner.frame_forwards,
            )
    print(f"\n{timer.table()}")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "dtype": str(backbone.dtype), "rows": timer.rows}, indent=1))


if __name__ == "__main__":
    main()
