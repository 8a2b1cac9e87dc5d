"""Tile averaging and crop paste-back of :class:`WindowSegmenter` against a stub runner with known maps.

The stub stands in for the UNet (the only part replaced): every pass returns constant maps that say which
pass it was, so the expected whole-frame scores follow by hand from the tile and box geometry (issue 19).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pipeline.method.backbone_source import TINY_BACKBONE
from smite_ops.backbone import load_backbone
from smite_ops.part_model import PartModel
from smite_ops.segmentation import SegmentSettings, WindowSegmenter, resize, to_unit_range
from smite_ops.unet_maps import MapOptions

PARTS, FRAMES, SIDE, GRID = 3, 2, 64, 8  # 64 px frames at a 64 px working resolution, 8 x 8 maps


class StubRunner:
    """The :class:`MapRunner` calls a segmenter makes, with maps chosen per pass by ``maps_of(call, images)``."""

    def __init__(self, maps_of) -> None:
        self.maps_of = maps_of
        self.images: list[Tensor] = []
        self.timesteps: list[int] = []
        self.generators: list[torch.Generator | None] = []

    def encode(self, images: Tensor, generator: torch.Generator) -> Tensor:
        self.images.append(images)
        return images

    def add_noise(self, latents: Tensor, timestep: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        self.timesteps.append(timestep)
        self.generators.append(generator)
        return latents, latents

    def predict(self, noisy: Tensor, timestep: int, conditioning: Tensor, num_frames: int) -> Tensor:
        return noisy

    def inference_maps(self, num_parts: int) -> Tensor:
        return self.maps_of(len(self.images) - 1, self.images[-1])

    def release(self) -> None:
        pass


@pytest.fixture(scope="module")
def segmenter_of():
    torch.set_num_threads(1)
    backbone = load_backbone(str(TINY_BACKBONE))
    model = PartModel(["background", "a", "b"], "tiny", "", SIDE, torch.zeros(77, 32), torch.zeros(2, 32), {}, {})
    segmenter = WindowSegmenter(backbone, model, SegmentSettings(resolution=SIDE, hierarchical=False))
    segmenter.runner.close()

    def make(settings: SegmentSettings, maps_of) -> WindowSegmenter:
        segmenter.settings, segmenter.runner = settings, StubRunner(maps_of)
        return segmenter

    return make


def frames() -> Tensor:
    return torch.randint(0, 256, (FRAMES, 3, SIDE, SIDE), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_four_tiles_average_into_their_overlaps(segmenter_of) -> None:
    """Tile k's maps are ``10 k + p`` for class p; 56 px tiles at offsets 0 and 8 of a 64 px frame."""

    def maps_of(call: int, images: Tensor) -> Tensor:
        assert images.shape == (FRAMES, 3, SIDE, SIDE)  # each 56 px tile resized to the working resolution
        return (10.0 * call + torch.arange(PARTS, dtype=torch.float32))[None, :, None, None].expand(
            FRAMES, PARTS, GRID, GRID
        )

    settings = SegmentSettings(resolution=SIDE, hierarchical=False, multi_crop=True)
    scores = segmenter_of(settings, maps_of)(frames(), seed=0)
    # tiles in order (top, left) = (0, 0), (0, 8), (8, 0), (8, 8); grid rows sample 3.5 | 11.5 .. 51.5 | 59.5 px
    every = (0, 1, 2, 3)
    rows = {0: (0, 1), **dict.fromkeys(range(1, 7), every), 7: (2, 3)}
    cols = {0: (0, 2), **dict.fromkeys(range(1, 7), every), 7: (1, 3)}
    expected = torch.empty(GRID, GRID)
    for y in range(GRID):
        for x in range(GRID):
            shared = sorted(set(rows[y]) & set(cols[x]))
            expected[y, x] = 10.0 * sum(shared) / len(shared)
    assert scores.shape == (FRAMES, PARTS, GRID, GRID)
    for p in range(PARTS):
        torch.testing.assert_close(scores[:, p], (expected + p).expand(FRAMES, -1, -1))


def test_crops_are_pasted_back_into_their_object_boxes(segmenter_of) -> None:
    """The coarse pass finds class 1 on map cells 2..5 (pixels [16, 48)); the box grows by round(0.04 * 32) = 1 px
    to [15, 49); the crop pass says class 2 everywhere, which lands on output cells round(15/4)..round(49/4)."""

    def maps_of(call: int, images: Tensor) -> Tensor:
        maps = torch.zeros(FRAMES, PARTS, GRID, GRID)
        if call == 0:  # coarse: background 1 outside, class 1 inside cells [2, 6)
            maps[:, 0] = 1.0
            maps[:, 0, 2:6, 2:6], maps[:, 1, 2:6, 2:6] = 0.0, 1.0
        else:  # the crops: class 2 scores 5, the others 0
            assert images.shape == (FRAMES, 3, SIDE, SIDE)
            maps[:, 2] = 5.0
        return maps

    settings = SegmentSettings(resolution=SIDE, hierarchical=True)
    scores = segmenter_of(settings, maps_of)(frames(), seed=0)
    out = 2 * GRID
    assert scores.shape == (FRAMES, PARTS, out, out)
    inside = torch.zeros(out, out, dtype=torch.bool)
    inside[4:12, 4:12] = True  # round(15 * 16 / 64) = 4, round(49 * 16 / 64) = 12
    expected = torch.zeros(FRAMES, PARTS, out, out)
    expected[:, 0] = torch.where(inside, 0.0, 5.0)  # outside: background gets the crops' largest score
    expected[:, 2] = torch.where(inside, 5.0, 0.0)
    torch.testing.assert_close(scores, expected)


@pytest.mark.parametrize(
    ("hierarchical", "multi_crop", "passes"), [(True, False, 2), (False, True, 4), (True, True, 5)]
)
def test_every_pass_draws_its_timestep_in_range_from_the_seeded_generator(
    segmenter_of, hierarchical: bool, multi_crop: bool, passes: int
) -> None:
    """Coarse, tile and crop passes all take their timestep from ``t_range`` (inclusive) with the window's generator.

    The stub's encode draws nothing, so the timesteps are the first draws of a generator seeded with the
    window's seed; a pass given no generator (the global one) or a range that starts at 0 draws others.
    """

    def maps_of(call: int, images: Tensor) -> Tensor:
        maps = torch.zeros(FRAMES, PARTS, GRID, GRID)
        maps[:, 1, 2:6, 2:6] = 1.0
        return maps

    settings = SegmentSettings(resolution=SIDE, hierarchical=hierarchical, multi_crop=multi_crop, t_range=(300, 999))
    for seed in (0, 1, 2):
        segmenter = segmenter_of(settings, maps_of)
        segmenter(frames(), seed=seed)
        generator = torch.Generator().manual_seed(seed)
        expected = [int(torch.randint(300, 1000, (1,), generator=generator)) for _ in range(passes)]
        assert segmenter.runner.timesteps == expected
        first = segmenter.runner.generators[0]
        assert isinstance(first, torch.Generator) and all(g is first for g in segmenter.runner.generators)


@pytest.mark.parametrize("count", [1, 3])
def test_tiles_average_per_frame_for_any_window_length(segmenter_of, count: int) -> None:
    """Windows of 1 and 3 frames: the tile average is the same per frame as in the 2-frame test above."""

    def maps_of(call: int, images: Tensor) -> Tensor:
        return (10.0 * call + torch.arange(PARTS, dtype=torch.float32))[None, :, None, None].expand(
            images.shape[0], PARTS, GRID, GRID
        )

    settings = SegmentSettings(resolution=SIDE, hierarchical=False, multi_crop=True)
    pair = segmenter_of(settings, maps_of)(frames(), seed=0)
    window = frames()[:1].expand(count, -1, -1, -1)
    scores = segmenter_of(settings, maps_of)(window, seed=0)
    assert scores.shape == (count, PARTS, GRID, GRID)
    torch.testing.assert_close(scores, pair[:1].expand(count, -1, -1, -1))


def test_tiles_are_the_four_corner_crops(segmenter_of) -> None:
    """The four 56 px tiles are cut at offsets 0 and 64 - 56 = 8 (top-left, top-right, bottom-left,
    bottom-right), each resized to the working resolution before its pass."""

    def maps_of(call: int, images: Tensor) -> Tensor:
        return torch.zeros(images.shape[0], PARTS, GRID, GRID)

    segmenter = segmenter_of(SegmentSettings(resolution=SIDE, hierarchical=False, multi_crop=True), maps_of)
    segmenter(frames(), seed=0)
    images = to_unit_range(frames())
    corners = [(0, 0), (0, 8), (8, 0), (8, 8)]
    assert len(segmenter.runner.images) == len(corners)
    for seen, (top, left) in zip(segmenter.runner.images, corners, strict=True):
        assert torch.equal(seen, resize(images[..., top : top + 56, left : left + 56], (SIDE, SIDE)))


def test_segmenter_defaults_to_cross_frame_attention_and_keeps_its_options() -> None:
    """Without ``cross_frame`` the window's frames attend to each other (METHOD.md §2.2); the map options given
    reach the runner."""
    torch.set_num_threads(1)
    backbone = load_backbone(str(TINY_BACKBONE))
    model = PartModel(["background", "a", "b"], "tiny", "", SIDE, torch.zeros(77, 32), torch.zeros(2, 32), {}, {})
    options = MapOptions(chunk_size=7)
    default = WindowSegmenter(backbone, model, SegmentSettings(resolution=SIDE, hierarchical=False), options=options)
    assert default.runner.video.state.cross_frame is True and default.runner.options is options
    default.runner.close()
    single = WindowSegmenter(backbone, model, SegmentSettings(resolution=SIDE, hierarchical=False), cross_frame=False)
    assert single.runner.video.state.cross_frame is False and single.runner.options == MapOptions()
    single.runner.close()
