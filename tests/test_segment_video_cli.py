"""`smite segment-video`'s happy path: a real clip and part model in, label PNGs and an overlay out (issue 19).

The clip fits one window, so the expected labels are simply the segmenter's scores for the decoded frames
at the window's seed, resized to the frame and argmaxed; the PNGs must hold exactly those.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from pipeline.batch.stitch import native_labels
from pipeline.config import load_config
from pipeline.io.inputs import video_id_of
from pipeline.io.video import probe_video, read_frames, write_video
from pipeline.method.backbone_source import TINY_BACKBONE
from pipeline.method.settings import window_segmenter
from smite_ops.backbone import load_backbone
from smite_ops.part_model import PartModel, save_part_model

PARTS = ["background", "left", "right"]
FRAMES, HEIGHT, WIDTH = 6, 40, 56
SETTINGS = ["model.resolution=64"]


def clip() -> np.ndarray:
    """A left dark / right bright field with a drifting bright square, ``(T, H, W, 3)`` uint8."""
    frames = np.zeros((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    frames[:, :, WIDTH // 2 :] = 200
    for t in range(FRAMES):
        frames[t, 10:22, 4 + 3 * t : 16 + 3 * t] = (255, 40, 40)
    return frames


def test_segment_video_writes_the_segmenters_labels_and_an_overlay(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    video = tmp_path / "clip one.mp4"
    write_video(str(video), clip(), fps=8)
    backbone = load_backbone(str(TINY_BACKBONE))
    conditioning = torch.randn(77, 32, generator=torch.Generator().manual_seed(0))
    model = PartModel(PARTS, backbone.source, backbone.content_hash, 64, conditioning, torch.zeros(2, 32), {}, {})
    save_part_model(model, str(tmp_path / "model"))

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment-video", str(video), "--model", str(tmp_path / "model"),
                                      "--out", str(out), "-c", "tiny", *[f"--set={s}" for s in SETTINGS]])
    assert result.exit_code == 0, result.output
    video_id = video_id_of(str(video))
    assert f"({FRAMES} frames" in result.output and f"{video_id}.mp4" in result.output

    config = load_config("tiny", SETTINGS)
    segmenter = window_segmenter(backbone, model, config)
    decoded = torch.from_numpy(read_frames(str(video))).permute(0, 3, 1, 2)
    expected = native_labels(segmenter(decoded, seed=config.segment.seed), HEIGHT, WIDTH).numpy()
    segmenter.runner.close()
    pngs = sorted((out / video_id).glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(FRAMES)]
    written = np.stack([np.array(Image.open(p)) for p in pngs])
    np.testing.assert_array_equal(written, expected)
    assert len(np.unique(expected)) > 1  # a real labelling, not one class everywhere
    overlay = probe_video(str(out / f"{video_id}.mp4"))
    assert (overlay.num_frames, overlay.height, overlay.width) == (FRAMES, HEIGHT, WIDTH)
