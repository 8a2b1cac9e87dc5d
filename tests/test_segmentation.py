"""Window segmentation: shapes, seeded determinism, the coarse-to-fine and multi-crop modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import JobConfig
from pipeline.method.settings import segment_settings
from smite_ops.backbone import Backbone, load_backbone
from smite_ops.group_norm import FramePooledGroupNorm
from smite_ops.part_model import PartModel
from smite_ops.segmentation import SegmentSettings, WindowSegmenter, object_boxes, paste_crops
from smite_ops.tiny_model import write_tiny_sd

torch.set_num_threads(1)
PARTS = ["background", "body", "wheel"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return load_backbone(str(write_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd", seed=0)))


def _segmenter(backbone: Backbone, cross_frame: bool = True, **settings: object) -> WindowSegmenter:
    generator = torch.Generator().manual_seed(0)
    conditioning = torch.randn(77, 32, generator=generator)
    part_model = PartModel(
        part_names=PARTS, base_model=str(backbone.root), base_hash=backbone.content_hash, resolution=64,
        conditioning=conditioning, tokens=conditioning[1:3].clone(),
    )
    segment = SegmentSettings(**{"resolution": 64, "hierarchical": False} | settings)
    return WindowSegmenter(backbone, part_model, segment, cross_frame=cross_frame)


def _frames(count: int = 3, height: int = 48, width: int = 40) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, height, width), generator=torch.Generator().manual_seed(1)).byte()


def test_window_scores_are_seeded(backbone: Backbone) -> None:
    segmenter = _segmenter(backbone)
    frames = _frames()
    first, again, other = segmenter(frames, seed=5), segmenter(frames, seed=5), segmenter(frames, seed=6)
    segmenter.runner.close()
    assert first.shape == (3, len(PARTS), 8, 8) and first.dtype == torch.float32  # 64 px -> 8x8 maps
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.isfinite(first).all()


@pytest.mark.parametrize(
    ("settings", "side"),
    [({"output_size": 20}, 20), ({"hierarchical": True}, 16), ({"multi_crop": True}, 8),
     ({"hierarchical": True, "multi_crop": True, "output_size": 12}, 12)],
)
def test_modes_give_the_requested_grid(backbone: Backbone, settings: dict[str, object], side: int) -> None:
    segmenter = _segmenter(backbone, **settings)
    scores = segmenter(_frames(2), seed=0)
    segmenter.runner.close()
    assert scores.shape == (2, len(PARTS), side, side)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("pooled", [True, False])
def test_group_norms_pool_over_the_window_by_default(backbone: Backbone, pooled: bool) -> None:
    """Production pools resnet/output group norms over the window (official, METHOD.md §2.2): with
    per-frame self-attention, frame 0's scores then depend on frame 1, and only then."""
    assert SegmentSettings().pooled_group_norm and segment_settings(JobConfig()).pooled_group_norm
    segmenter = _segmenter(backbone, cross_frame=False, pooled_group_norm=pooled)
    pooled_norms = [m for m in backbone.unet.modules() if isinstance(m, FramePooledGroupNorm)]
    frames, other = _frames(2), _frames(2)
    other[1] = 255 - other[1]
    first, second = segmenter(frames, seed=3), segmenter(other, seed=3)
    segmenter.runner.close()
    assert bool(pooled_norms) == pooled
    assert torch.equal(first[0], second[0]) != pooled


def test_crops_are_pasted_into_their_boxes() -> None:
    fine = torch.full((2, 3, 4, 4), -5.0)
    fine[:, 2] = -1.0  # class 2 wins inside every crop
    boxes = [(10, 20, 30, 40), (0, 0, 80, 40)]
    labels = paste_crops(fine, boxes, (80, 40), out=16).argmax(1)
    expected = torch.zeros(2, 16, 16, dtype=torch.long)
    expected[0, 2:6, 8:16] = 2  # rows 10..30 of 80 -> 2..6 of 16; columns 20..40 of 40 -> 8..16
    expected[1] = 2
    assert torch.equal(labels, expected)


def test_object_boxes_expand_and_clamp() -> None:
    foreground = torch.zeros(3, 20, 30, dtype=torch.bool)
    foreground[0, 5:15, 10:20] = True
    foreground[1, 0:4, 25:30] = True
    foreground[2, 3, 3] = True  # too small: whole frame
    assert object_boxes(foreground, expand=0.1) == [(4, 9, 16, 21), (0, 25, 4, 30), (0, 0, 20, 30)]


def test_shipped_tiny_backbone_loads() -> None:
    from pipeline.method.backbone_source import TINY_BACKBONE

    backbone = load_backbone(str(TINY_BACKBONE), with_text_encoder=True)
    assert isinstance(backbone.root, Path) and backbone.text_encoder is not None
    assert sum(f.stat().st_size for f in TINY_BACKBONE.rglob("*") if f.is_file()) < 20 * 2**20
