"""Spatio-temporal guidance on the tiny SD-shaped model (METHOD.md §4.4, §7)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from smite_ops.backbone import load_backbone
from smite_ops.guidance import GuidanceError, GuidanceSettings, GuidedSegmenter, GuidedWindow, ddim_step
from smite_ops.part_model import PartModel
from smite_ops.segmentation import SegmentSettings, WindowSegmenter
from smite_ops.tracking.base import Tracks
from smite_ops.unet_maps import MapRunner
from smite_ops.voting import project_to_grid, vote

PARTS, FRAMES, SIDE, T = 3, 4, 16, 103  # latents 16x16 (128 px frames), maps 16x16


def latents() -> torch.Tensor:
    return torch.randn(FRAMES, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def drifting_tracks(frames: int = FRAMES, size: int = 8 * SIDE) -> Tracks:
    """A grid of points drifting right by 3 px per frame, all visible."""
    spacing = 8.0
    ys, xs = torch.meshgrid(torch.arange(size // 8) * spacing + 4, torch.arange(size // 8) * spacing + 4, indexing="ij")
    start = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    points = torch.stack([start + torch.tensor([3.0 * f, 0.0]) for f in range(frames)])
    visible = torch.ones(points.shape[:2], dtype=torch.bool)
    return Tracks(points, visible, torch.zeros(points.shape[1], dtype=torch.long))


def window_maps(runner: MapRunner, conditioning: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        runner.predict(z, T, conditioning, num_frames=z.shape[0])
        maps = runner.inference_maps(PARTS).float()
    runner.release()
    return maps


def slice_energy(guide: GuidedWindow, z: torch.Tensor, voted: torch.Tensor, reference: torch.Tensor) -> float:
    """Total E over the slices of ``z`` (each slice run alone, as inside the optimisation)."""
    step = guide.settings.slice_frames
    total = 0.0
    for a in range(0, z.shape[0], step):
        b = min(a + step, z.shape[0])
        maps = window_maps(guide.runner, guide.conditioning, z[a:b])
        total += float(guide.energy(maps, a, b, voted, reference, maps, guide.settings.dct_threshold))
    return total


@pytest.mark.parametrize(
    "settings",
    [
        GuidanceSettings(track_weight=0.1, reg_weight=8.0, iterations=4, slice_frames=2),
        GuidanceSettings(track_weight=0.1, reg_weight=8.0, iterations=4, slice_frames=2, track_loss="soft",
                         lowpass="spatiotemporal", dct_span="slice"),
    ],
)
def test_guidance_step_lowers_the_energy(
    runner: MapRunner, conditioning: torch.Tensor, settings: GuidanceSettings
) -> None:
    guide = GuidedWindow(runner, conditioning, PARTS, settings)
    z = latents()
    current = window_maps(runner, conditioning, z)
    tracks = drifting_tracks()
    cells, valid = project_to_grid(tracks.points, tracks.visible, (128, 128), (SIDE, SIDE))
    voted = vote(current, cells, valid, settings.voting_window)
    reference = current + 0.5 * current.std() * torch.randn(current.shape, generator=torch.Generator().manual_seed(2))
    before = slice_energy(guide, z, voted, reference)
    optimised = guide.optimise(z, T, current, voted, reference, settings.dct_threshold)
    after = slice_energy(guide, optimised, voted, reference)
    assert after < 0.97 * before


def test_soft_tracking_leaves_latents_that_match_their_votes(runner: MapRunner, conditioning: torch.Tensor) -> None:
    soft = GuidanceSettings(track_weight=1.0, iterations=2, slice_frames=FRAMES, track_loss="soft")
    z = latents()
    current = window_maps(runner, conditioning, z)  # the slice is the whole window: the live maps equal these
    unchanged = GuidedWindow(runner, conditioning, PARTS, soft).optimise(z, T, current, current, current, 0.4)
    torch.testing.assert_close(unchanged, z, atol=1e-5, rtol=0)  # only float rounding reaches Adam
    hard = GuidedWindow(runner, conditioning, PARTS, replace(soft, track_loss="hard"))
    moved = hard.optimise(z, T, current, current, current, 0.4)
    assert (moved - z).abs().max() > 1e-3  # the reference CE keeps sharpening towards the voted labels


def test_guided_window_runs_deterministically(runner: MapRunner, conditioning: torch.Tensor) -> None:
    settings = GuidanceSettings(track_weight=0.1, reg_weight=8.0, timesteps=(104, 103, 102), iterations=2,
                                slice_frames=2, lowpass="spatiotemporal", dct_span="window", track_loss="soft")
    tracks, reference = drifting_tracks(), torch.randn(FRAMES, PARTS, 32, 32)
    guide = GuidedWindow(runner, conditioning, PARTS, settings)
    first = guide(latents(), reference, tracks, (128, 128), torch.Generator().manual_seed(5), out_size=24)
    again = guide(latents(), reference, tracks, (128, 128), torch.Generator().manual_seed(5), out_size=24)
    assert first.shape == (FRAMES, PARTS, 24, 24) and first.dtype == torch.float32 and torch.isfinite(first).all()
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    off = GuidedWindow(runner, conditioning, PARTS, replace(settings, track_weight=0.0, reg_weight=0.0))
    plain = off(latents(), reference, tracks, (128, 128), torch.Generator().manual_seed(5), out_size=24)
    assert (plain - first).abs().max() > 0


def test_gradient_checkpointing_gives_the_same_result(runner: MapRunner, conditioning: torch.Tensor) -> None:
    settings = GuidanceSettings(track_weight=0.1, reg_weight=8.0, timesteps=(104, 103), iterations=2, slice_frames=2)
    z, current = latents(), window_maps(runner, conditioning, latents())
    plain = GuidedWindow(runner, conditioning, PARTS, settings).optimise(z, T, current, current, current, 0.4)
    ckpt = GuidedWindow(runner, conditioning, PARTS, replace(settings, gradient_checkpointing=True))
    torch.testing.assert_close(ckpt.optimise(z, T, current, current, current, 0.4), plain, atol=1e-5, rtol=0)
    assert not runner.backbone.unet.is_gradient_checkpointing


def test_ddim_step_recovers_the_clean_latent_at_t_zero_noise() -> None:
    alpha_bar = torch.linspace(0.99, 0.5, 200)
    x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    z_t = alpha_bar[150].sqrt() * x0 + (1 - alpha_bar[150]).sqrt() * eps
    expected = alpha_bar[100].sqrt() * x0 + (1 - alpha_bar[100]).sqrt() * eps
    torch.testing.assert_close(ddim_step(z_t, eps, alpha_bar, 150, 100), expected)


def test_settings_cost_and_validation() -> None:
    assert GuidanceSettings(track_weight=0.0).frame_forwards(16) == 5 * 16  # off: S_ref pass + 4 denoising passes
    assert GuidanceSettings(reg_weight=8.0).frame_forwards(16) == (5 + 3 * 15 * 3) * 16
    with pytest.raises(ValueError, match="decreasing"):
        GuidanceSettings(timesteps=(101, 104))
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        GuidanceSettings(track_weight=-1.0)


def test_mismatched_tracks_are_rejected(runner: MapRunner, conditioning: torch.Tensor) -> None:
    guide = GuidedWindow(runner, conditioning, PARTS, GuidanceSettings(reg_weight=1.0))
    with pytest.raises(GuidanceError, match="tracks of 3 frames"):
        guide(latents(), torch.zeros(FRAMES, PARTS, 16, 16), drifting_tracks(3), (128, 128), torch.Generator())


def test_guided_segmenter_segments_uint8_frames(tiny_path: Path, conditioning: torch.Tensor) -> None:
    model = PartModel(["background", "a", "b"], "tiny", "", 128, conditioning, torch.zeros(2, 32), {}, {})
    settings = SegmentSettings(resolution=128, hierarchical=False)
    segmenter = WindowSegmenter(load_backbone(str(tiny_path)), model, settings)
    frames = torch.randint(0, 256, (FRAMES, 3, 96, 96), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    reference = segmenter(frames, seed=1)
    guided = GuidedSegmenter(segmenter, GuidanceSettings(reg_weight=8.0, timesteps=(104, 103), iterations=1))
    scores = guided(frames, reference, drifting_tracks(size=96), (96, 96), seed=1)
    assert reference.shape == scores.shape == (FRAMES, PARTS, SIDE, SIDE)
    torch.testing.assert_close(guided(frames, reference, drifting_tracks(size=96), (96, 96), seed=1), scores)
    segmenter.runner.close()
