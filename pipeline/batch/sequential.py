"""`smite segment-video`: one video, one process, windows in sequence (development and small jobs).

Writes ``OUT/<video_id>/<frame:05d>.png`` label maps (the layout `smite evaluate-masks` reads) and, when
``output.overlays`` is on, ``OUT/<video_id>.mp4`` with coloured parts. Frames are decoded per window and
released as soon as every window covering them is done, so memory does not grow with the video.

The outputs of a video appear together or not at all: label maps are written to a hidden staging folder
(``OUT/.<video_id>.partial-<hex>``) that replaces ``OUT/<video_id>`` only once every frame is done, so an error
leaves the previous outputs (or none) and a rerun of a shorter video keeps no stale frames; the overlay is
written atomically by :func:`pipeline.io.video.write_video`, and removed when overlays are off.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.batch.stitch import ScoreStitcher, native_labels
from pipeline.batch.windows import plan_windows
from pipeline.config import JobConfig
from pipeline.evaluation.evaluate import save_label_maps
from pipeline.io.inputs import video_id_of
from pipeline.io.video import probe_video, read_frames, write_video
from pipeline.method.backbone_source import load_job_backbone
from pipeline.method.settings import window_segmenter
from pipeline.sinks.overlay import overlay_labels, part_palette
from smite_ops.part_model import PartModel, load_part_model
from smite_ops.segmentation import WindowSegmenter


@dataclass(frozen=True)
class SegmentedVideo:
    """Where one segmented video's outputs went, and how long it took."""

    video_id: str
    num_frames: int
    labels_dir: Path
    overlay: Path | None
    seconds: float


def build_segmenter(model_dir: str, config: JobConfig) -> tuple[WindowSegmenter, PartModel]:
    """Load the part model and the backbone, check they belong together, and build a window segmenter."""
    part_model = load_part_model(model_dir)
    backbone = load_job_backbone(config.model, config.runtime)
    part_model.check_fits(backbone.content_hash, where=model_dir)
    return window_segmenter(backbone, part_model, config), part_model


def stitched_frames(
    uri: str, segmenter: WindowSegmenter, config: JobConfig, progress: bool = True
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Segment a video window by window; yield ``(index, frame (H,W,3) uint8, labels (H,W) uint8)`` in order."""
    info = probe_video(uri)
    windows = plan_windows(info.num_frames, config.segment.window, config.segment.overlap)
    stitcher = ScoreStitcher(windows, info.num_frames)
    pending: dict[int, np.ndarray] = {}
    for window in tqdm(windows, desc=video_id_of(uri), unit="window", disable=not progress):
        frames = read_frames(uri, window.start, window.stop)
        pending.update({window.start + i: frame for i, frame in enumerate(frames)})
        scores = segmenter(torch.from_numpy(frames).permute(0, 3, 1, 2), seed=config.segment.seed + window.start)
        for index, blended in stitcher.add(window, scores):
            labels = native_labels(blended[None], info.height, info.width)[0].numpy().astype(np.uint8)
            yield index, pending.pop(index), labels


@contextmanager
def _staged_folder(out: Path, name: str) -> Iterator[str]:
    """Yield a hidden staging folder name under ``out``; on success it replaces ``out/name``, else it is removed.

    Leftovers of earlier runs killed before they could clean up (``.<name>.partial-*``) are removed first.
    """
    for leftover in out.glob(f".{glob_escape(name)}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = f".{name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        yield staging
        (out / staging).mkdir(parents=True, exist_ok=True)  # a video of zero frames still gets its folder
        final, retired = out / name, out / f".{name}.partial-{uuid.uuid4().hex[:12]}"
        if final.exists():
            final.rename(retired)
        (out / staging).rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(out / staging, ignore_errors=True)


def segment_video_file(
    uri: str, model_dir: str, out_dir: str | Path, config: JobConfig, progress: bool = True
) -> SegmentedVideo:
    """Segment one video into label PNGs (and an overlay mp4); see the module docstring for the layout."""
    started = time.perf_counter()
    info = probe_video(uri)
    segmenter, part_model = build_segmenter(model_dir, config)
    video_id = video_id_of(uri)
    out = Path(out_dir)
    palette = part_palette(len(part_model.part_names))
    overlay_path = out / f"{video_id}.mp4" if config.output.overlays else None

    def saved_frames(staging: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index, frame, labels in stitched_frames(uri, segmenter, config, progress):
            save_label_maps(out, staging, [index], labels[None])
            yield frame, labels

    try:
        with _staged_folder(out, video_id) as staging:
            if overlay_path is not None:
                overlays = (overlay_labels(frame, labels, palette) for frame, labels in saved_frames(staging))
                write_video(str(overlay_path), overlays, fps=config.output.overlay_fps or info.fps)
            else:
                for _ in saved_frames(staging):
                    pass
                (out / f"{video_id}.mp4").unlink(missing_ok=True)  # an earlier run's overlay of other labels
    finally:
        segmenter.runner.close()
    return SegmentedVideo(video_id, info.num_frames, out / video_id, overlay_path, time.perf_counter() - started)
