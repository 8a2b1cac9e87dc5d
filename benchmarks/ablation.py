"""Guidance ablation on the synthetic benchmark with the tiny model (prints a table, not a test).

Rows: no guidance (the reference's shipped single-pass segmentation) and {tracking only, low-pass only, both}
x {reference variant, paper variant} of the spatio-temporal guidance (METHOD.md §4.4, §5-7):

- reference: spatial low-pass, DCT per slice, cross-entropy against the voted labels (the reference code);
- paper: 3D (spatio-temporal) low-pass with the DCT over the whole window, KL against the voted vectors.

Weights are the reference's suggested ones (tracking 0.1, low-pass 8); all other values are the reference's
defaults (4 timesteps 104..101, 15 iterations, 4-frame slices, voting window 15). Every row uses the guided
windows (16 frames, overlap 8), blended by ``pipeline.batch.stitch``; ``S_ref`` of a window is its own unguided pass
(phase A of ARCHITECTURE.md §4, without the reference's serial hand-over). Tracks: the weight-free
Lucas-Kanade tracker on the native frames, once per video, shared by the windows.

Columns: mIoU (reference convention, background included, %), DAVIS boundary F, flicker (ground-truth-
consistent label flicker, lower is better, ``smite_ops.metrics.gt_consistent_flicker``), and cost in UNet
frame-forward equivalents per output frame (a backward counts as two forwards), plus wall time.

Run from the repository root: ``.venv/bin/python -m benchmarks.ablation`` (generates a benchmark and trains a
model in a temporary folder), or ``--data DATASET_DIR --model PART_MODEL_DIR`` to reuse them. ``--quick`` runs 3
iterations per step instead of 15 (not the reference setting; for smoke tests only). On 2 shared CPU cores the
default run (one 24-frame car video at 128 px) takes about 20 minutes, almost all of it in the guided rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.batch.stitch import ScoreStitcher, native_labels
from pipeline.batch.windows import plan_windows
from pipeline.config import load_config
from pipeline.evaluation.smite50 import read_ground_truth
from pipeline.io.video import read_frames
from pipeline.method.backbone_source import load_job_backbone
from pipeline.method.settings import map_options
from pipeline.synth.generate import generate_benchmark
from pipeline.training.train import train_part_model
from smite_ops.guidance import GuidanceSettings, GuidedSegmenter
from smite_ops.metrics import davis_f, gt_consistent_flicker, miou
from smite_ops.part_model import load_part_model
from smite_ops.segmentation import SegmentSettings, WindowSegmenter
from smite_ops.tracking.base import PointTracker, Tracks
from smite_ops.tracking.long_video import ChunkConfig, VideoTracks, slice_tracks, track_long_video
from smite_ops.tracking.lucas_kanade import LucasKanadeTracker
from smite_ops.tracking.queries import grid_queries, query_frames_for

WINDOW, OVERLAP = 16, 8  # the reference's guided windows (METHOD.md §4.2)
TRACK_WEIGHT, REG_WEIGHT = 0.1, 8.0  # the reference's suggested weights (METHOD.md §7)


@dataclass(frozen=True)
class Row:
    name: str
    settings: GuidanceSettings | None  # None: unguided single pass


def rows(iterations: int) -> list[Row]:
    """The ablation rows; ``iterations`` latent updates per step."""
    reference = GuidanceSettings(iterations=iterations, track_loss="hard")  # weights set per row
    paper = replace(reference, lowpass="spatiotemporal", dct_span="window", track_loss="soft")
    table = [Row("no guidance", None)]
    for variant, base in (("reference", reference), ("paper", paper)):
        for terms, (track, reg) in (("tracking", (TRACK_WEIGHT, 0.0)), ("low-pass", (0.0, REG_WEIGHT)),
                                    ("both", (TRACK_WEIGHT, REG_WEIGHT))):
            table.append(Row(f"{terms} / {variant}", replace(base, track_weight=track, reg_weight=reg)))
    return table


def video_tracks(
    frames: torch.Tensor, spacing: int, every: int = 8, tracker: PointTracker | None = None
) -> VideoTracks:
    """Tracks of ``(T, 3, H, W)`` uint8 frames: a grid every ``spacing`` px, seeded every ``every`` frames
    (default tracker: Lucas-Kanade)."""
    count, _, height, width = frames.shape
    queries = grid_queries(height, width, query_frames_for(count, every), spacing)
    config = ChunkConfig(chunk_frames=max(count, 2), overlap_frames=1, horizon=16)
    return track_long_video(tracker or LucasKanadeTracker(), lambda a, b: frames[a:b], count, queries, config)


@dataclass
class VideoCase:
    """One test video: frames, ground truth and tracks."""

    frames: torch.Tensor  # (T, 3, H, W) uint8
    gt: np.ndarray  # (T, H, W) uint8
    tracks: VideoTracks


def load_cases(dataset: Path, num_parts: int, spacing: int) -> list[VideoCase]:
    cases = []
    for video in sorted((dataset / "videos").glob("*.mp4")):
        frames = torch.from_numpy(read_frames(str(video))).permute(0, 3, 1, 2).contiguous()
        truth = read_ground_truth(dataset / "gt" / video.stem, num_parts)
        if truth.frame_indices != list(range(len(frames))):
            raise ValueError(f"{dataset / 'gt' / video.stem}: the ablation needs dense ground truth")
        cases.append(VideoCase(frames, truth.labels, video_tracks(frames, spacing)))
    return cases


def segment(case: VideoCase, row: Row, segmenter: WindowSegmenter, seed: int) -> tuple[np.ndarray, int]:
    """Labels ``(T, H, W)`` of a video and the UNet frame-forwards spent."""
    count, _, height, width = case.frames.shape
    windows = plan_windows(count, WINDOW, OVERLAP)
    stitcher = ScoreStitcher(windows, count)
    guided = GuidedSegmenter(segmenter, row.settings) if row.settings else None
    labels = np.zeros((count, height, width), dtype=np.uint8)
    forwards = 0
    for window in windows:
        frames = case.frames[window.start : window.stop]
        scores = segmenter(frames, seed=seed + window.start)
        forwards += window.length
        if guided is not None and row.settings is not None:
            tracks: Tracks = slice_tracks(case.tracks, window.start, window.stop)
            scores = guided(frames, scores, tracks, (height, width), seed=seed + window.start)
            forwards += row.settings.frame_forwards(window.length) - window.length
        for index, blended in stitcher.add(window, scores):
            labels[index] = native_labels(blended[None], height, width)[0].numpy()
    return labels, forwards


def prepare(args: argparse.Namespace, scratch: Path) -> tuple[Path, Path]:
    """The dataset folder and the part model folder (generated and trained when not given)."""
    dataset = Path(args.data) if args.data else generate_benchmark(
        scratch / "bench", seed=0, size=args.size, num_references=8, videos_per_kind=args.videos,
        num_frames=args.frames, kinds=[args.kind],
    )[1]  # the coarse granularity
    if args.model:
        return dataset, Path(args.model)
    epochs = [f"train.epochs={args.epochs}"] if args.epochs else []
    config = load_config("tiny", [f"model.resolution={args.resolution}", *epochs])
    result = train_part_model(str(dataset / "references"), scratch / "model", config, progress=False)
    print(f"trained {result.model_dir}: best validation mIoU {result.best_miou:.1f} at epoch {result.best_epoch}")
    return dataset, result.model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a synthetic dataset folder (<kind>_<granularity>)")
    parser.add_argument("--model", help="a trained part model folder (tiny backbone)")
    parser.add_argument("--kind", default="car")
    parser.add_argument("--videos", type=int, default=1)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="generated video size in pixels")
    parser.add_argument("--resolution", type=int, default=128, help="working resolution when training")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the tiny configuration's)")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--quick", action="store_true", help="3 iterations per step instead of 15")
    parser.add_argument("--only", nargs="*", help="run only rows whose name contains one of these words")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads() // 2, 1))
    with tempfile.TemporaryDirectory() as scratch:
        dataset, model_dir = prepare(args, Path(scratch))
        config = load_config("tiny")
        backbone = load_job_backbone(config.model, config.runtime)
        part_model = load_part_model(str(model_dir), expect_base_hash=backbone.content_hash)
        parts = part_model.part_names
        settings = SegmentSettings(resolution=part_model.resolution, hierarchical=False)
        segmenter = WindowSegmenter(backbone, part_model, settings, options=map_options(config))
        spacing = max(1, args.size * 8 // part_model.resolution)  # one point per map cell, as the reference
        cases = load_cases(dataset, len(parts), spacing)
        print(f"{dataset.name}: {len(cases)} video(s), {len(parts)} classes, model at {part_model.resolution} px")
        print("| rows | mIoU | F | flicker | frame-forwards / frame | seconds |")
        print("|---|---|---|---|---|---|")
        for row in rows(3 if args.quick else 15):
            if args.only and not any(word in row.name for word in args.only):
                continue
            started = time.perf_counter()
            scores, cost, frames = [], 0, 0
            for case in cases:
                labels, forwards = segment(case, row, segmenter, args.seed)
                result = miou(labels, case.gt, len(parts))
                scores.append((result.reference, davis_f(labels, case.gt), gt_consistent_flicker(labels, case.gt)))
                cost, frames = cost + forwards, frames + len(labels)
            m, f, flicker = np.mean(scores, axis=0)
            seconds = time.perf_counter() - started
            cells = f"{m:.2f} | {f:.3f} | {flicker:.4f} | {cost / frames:.0f} | {seconds:.0f}"
            print(f"| {row.name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
