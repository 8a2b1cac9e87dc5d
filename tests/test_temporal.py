"""Phase-B temporal modes (smite_ops.temporal) and UNet cost counting on the tiny SD-shaped model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from smite_ops.backbone import load_backbone
from smite_ops.guidance import GuidanceError, GuidanceSettings, GuidedSegmenter
from smite_ops.part_model import PartModel
from smite_ops.segmentation import SegmentSettings, WindowSegmenter
from smite_ops.temporal import TemporalRefiner
from smite_ops.tiny_model import write_tiny_sd
from smite_ops.track_filter import track_vote_filter
from smite_ops.tracking.base import Tracks
from smite_ops.voting import project_to_grid

PARTS, FRAMES, SIZE = 3, 4, 96
FAST = GuidanceSettings(track_weight=0.1, track_loss="soft", timesteps=(104, 103), iterations=2, slice_frames=2)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> WindowSegmenter:
    torch.set_num_threads(1)
    path = write_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd", seed=0)
    conditioning = torch.randn(77, 32, generator=torch.Generator().manual_seed(0))
    model = PartModel(["background", "a", "b"], "tiny", "", 128, conditioning, torch.zeros(2, 32), {}, {})
    return WindowSegmenter(load_backbone(str(path)), model, SegmentSettings(resolution=128, hierarchical=False))


def frames() -> torch.Tensor:
    return torch.randint(0, 256, (FRAMES, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)


def drifting_tracks() -> Tracks:
    """A grid of points every 12 px drifting right by 3 px per frame, all visible."""
    ys, xs = torch.meshgrid(torch.arange(8) * 12.0 + 6, torch.arange(8) * 12.0 + 6, indexing="ij")
    start = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    points = torch.stack([start + torch.tensor([3.0 * f, 0.0]) for f in range(FRAMES)])
    return Tracks(points, torch.ones(points.shape[:2], dtype=torch.bool), torch.zeros(64, dtype=torch.long))


def test_filter_mode_filters_the_reference_without_the_unet(segmenter: WindowSegmenter) -> None:
    reference = torch.randn(FRAMES, PARTS, 16, 16, generator=torch.Generator().manual_seed(2))
    before = segmenter.runner.frame_forwards
    filtered = TemporalRefiner("filter", None, voting_window=3, radius=1)(frames(), reference, drifting_tracks(),
                                                                        (SIZE, SIZE), seed=1)
    assert segmenter.runner.frame_forwards == before
    tracks = drifting_tracks()
    cells, valid = project_to_grid(tracks.points, tracks.visible, (SIZE, SIZE), (16, 16))
    torch.testing.assert_close(filtered, track_vote_filter(reference, cells, valid, 3, 1), atol=0, rtol=0)
    assert (filtered - reference).abs().max() > 0


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fast_mode_costs_what_the_settings_say(segmenter: WindowSegmenter, checkpointing: bool) -> None:
    settings = replace(FAST, gradient_checkpointing=checkpointing)
    reference = segmenter(frames(), seed=1)
    refiner = TemporalRefiner("fast", GuidedSegmenter(segmenter, settings), voting_window=3)
    before = segmenter.runner.frame_forwards
    scores = refiner(frames(), reference, drifting_tracks(), (SIZE, SIZE), seed=1)
    # the reference pass is phase A's: phase B runs 2 passes and 2 updates x (forward + backward) per frame
    assert segmenter.runner.frame_forwards - before == settings.frame_forwards(FRAMES) - FRAMES
    assert scores.shape == reference.shape and torch.isfinite(scores).all()


def test_fast_mode_guides_toward_the_filtered_reference(segmenter: WindowSegmenter) -> None:
    reference = segmenter(frames(), seed=1)
    guided = GuidedSegmenter(segmenter, FAST)
    fast = TemporalRefiner("fast", guided, voting_window=3)
    full = TemporalRefiner("full", guided, voting_window=3)
    tracks = drifting_tracks()
    votes = fast.filter(reference, tracks, (SIZE, SIZE))
    toward_votes = guided(frames(), reference, tracks, (SIZE, SIZE), seed=1, votes=votes)
    torch.testing.assert_close(fast(frames(), reference, tracks, (SIZE, SIZE), seed=1),
                               fast.filter(toward_votes, tracks, (SIZE, SIZE)))
    plain = full(frames(), reference, tracks, (SIZE, SIZE), seed=1)
    torch.testing.assert_close(plain, guided(frames(), reference, tracks, (SIZE, SIZE), seed=1))
    assert (plain - toward_votes).abs().max() > 0  # the fixed votes change the target


def test_modes_are_checked() -> None:
    with pytest.raises(GuidanceError, match="one of filter, fast, full"):
        TemporalRefiner("slow", None)  # type: ignore[arg-type]
    with pytest.raises(GuidanceError, match="needs a guided segmenter"):
        TemporalRefiner("fast", None)
