"""What a guided window runs, and with which settings (issue 19: mutants of ``GuidedWindow.__call__`` that the
oracle tests let through).

The real tiny runner does the work; a recording wrapper around it, and spies around the voting and low-pass
functions (each still calls the real one), note the timestep of every UNet pass, the thresholds of every low-pass
and the settings handed to the track projection and voting. A window of 3 frames keeps the frame axis apart from
the 4 latent channels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import smite_ops.guidance as guidance
from smite_ops.backbone import load_backbone
from smite_ops.guidance import GuidanceError, GuidanceSettings, GuidedSegmenter, GuidedWindow, ddim_step
from smite_ops.lowpass import lowpass_energy, lowpass_mask
from smite_ops.part_model import PartModel
from smite_ops.segmentation import SegmentSettings, WindowSegmenter
from smite_ops.tracking.base import Tracks
from smite_ops.unet_maps import MapRunner

PARTS, FRAMES, LATENT = 3, 3, 8  # 64 px frames: 8 x 8 latents and maps
STEPS = (104, 102, 101)  # not consecutive, so that every step's timestep is told apart


class RecordingRunner:
    """The real :class:`MapRunner`, recording ``("noise", t)`` and ``("unet", t, frames, with_grad)`` per call."""

    def __init__(self, runner: MapRunner) -> None:
        self.runner = runner
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def add_noise(self, latents: torch.Tensor, timestep: int, generator: torch.Generator) -> Any:
        self.calls.append(("noise", timestep))
        return self.runner.add_noise(latents, timestep, generator)

    def predict(self, latents: torch.Tensor, timestep: int, conditioning: torch.Tensor, num_frames: int) -> Any:
        self.calls.append(("unet", timestep, num_frames, latents.requires_grad))
        return self.runner.predict(latents, timestep, conditioning, num_frames=num_frames)


def window_inputs(frames: int = FRAMES) -> tuple[torch.Tensor, torch.Tensor, Tracks]:
    """Latents, an unguided reference and tracks (one still point per map cell) of a window of ``frames``."""
    latents = torch.randn(frames, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(1))
    reference = torch.randn(frames, PARTS, LATENT, LATENT, generator=torch.Generator().manual_seed(2))
    centres = torch.arange(LATENT) * 8.0 + 4
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], dim=1).expand(frames, -1, -1).clone()
    visible = torch.ones(points.shape[:2], dtype=torch.bool)
    return latents, reference, Tracks(points, visible, torch.zeros(points.shape[1], dtype=torch.long))


def guide(runner: Any, conditioning: torch.Tensor, settings: GuidanceSettings, **call: Any) -> torch.Tensor:
    latents, reference, tracks = window_inputs()
    window = GuidedWindow(runner, conditioning, PARTS, settings)
    return window(latents, reference, tracks, (8 * LATENT, 8 * LATENT), torch.Generator().manual_seed(3), **call)


@pytest.mark.parametrize("enabled", [False, True])
def test_the_window_runs_every_timestep_in_order(runner: MapRunner, conditioning: torch.Tensor, enabled: bool) -> None:
    """Noise to the first timestep; per step a whole-window pass at ``t`` and the updates at ``t_next``; the final
    pass at the last timestep. Guidance off still denoises through every timestep."""
    recording = RecordingRunner(runner)
    settings = GuidanceSettings(track_weight=float(enabled), timesteps=STEPS, iterations=1, slice_frames=2)
    guide(recording, conditioning, settings)
    updates = [("unet", 102, 2, True), ("unet", 102, 1, True)] if enabled else []
    last_updates = [("unet", 101, 2, True), ("unet", 101, 1, True)] if enabled else []
    assert recording.calls == [
        ("noise", 104), ("unet", 104, FRAMES, False), *updates, ("unet", 102, FRAMES, False), *last_updates,
        ("unet", 101, FRAMES, False),
    ]


def test_the_first_step_low_passes_with_its_own_threshold(
    runner: MapRunner, conditioning: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    thresholds: list[float] = []
    real = guidance.lowpass_mask

    def spy(frames: int, height: int, width: int, threshold: float, *args: Any) -> torch.Tensor:
        thresholds.append(threshold)
        return real(frames, height, width, threshold, *args)

    monkeypatch.setattr(guidance, "lowpass_mask", spy)
    settings = GuidanceSettings(track_weight=0.0, reg_weight=1.0, timesteps=STEPS, iterations=1, slice_frames=FRAMES,
                                first_step_threshold=0.9, dct_threshold=0.3)
    guide(runner, conditioning, settings)
    assert thresholds == [0.9, 0.3]


@pytest.mark.parametrize(("projection", "voting_window"), [("official", 2), ("pixel_centre", 3)])
def test_tracks_are_projected_and_voted_as_configured(
    runner: MapRunner, conditioning: torch.Tensor, monkeypatch: pytest.MonkeyPatch, projection: str,
    voting_window: int,
) -> None:
    seen: dict[str, list[Any]] = {"projection": [], "window": []}
    project, vote = guidance.project_to_grid, guidance.vote

    def project_spy(points: torch.Tensor, visible: torch.Tensor, frame: Any, grid: Any, rounding: str) -> Any:
        seen["projection"].append((tuple(grid), rounding))
        return project(points, visible, frame, grid, rounding)

    def vote_spy(maps: torch.Tensor, cells: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
        seen["window"].append(window)
        return vote(maps, cells, valid, window)

    monkeypatch.setattr(guidance, "project_to_grid", project_spy)
    monkeypatch.setattr(guidance, "vote", vote_spy)
    settings = GuidanceSettings(timesteps=STEPS, iterations=1, slice_frames=FRAMES, track_projection=projection,
                                voting_window=voting_window)
    guide(runner, conditioning, settings)
    assert seen == {"projection": [((LATENT, LATENT), projection)], "window": [voting_window, voting_window]}


def test_fixed_votes_at_any_size_steer_the_update(runner: MapRunner, conditioning: torch.Tensor) -> None:
    """Votes given at twice the map size are resized and used at every step: the result follows them."""
    settings = GuidanceSettings(track_weight=1.0, timesteps=(104, 103), iterations=4, step_scale=100.0,
                                slice_frames=FRAMES)
    target = torch.zeros(FRAMES, PARTS, 2 * LATENT, 2 * LATENT)
    target[:, 2] = 10.0  # every cell votes for class 2
    per_step = guide(runner, conditioning, settings)
    fixed = guide(runner, conditioning, settings, votes=target)
    share = [float((scores.argmax(1) == 2).float().mean()) for scores in (per_step, fixed)]
    assert share[1] > share[0] + 0.1, share


@pytest.mark.parametrize("what", ["reference", "votes"])
def test_maps_of_the_wrong_shape_are_refused(runner: MapRunner, conditioning: torch.Tensor, what: str) -> None:
    latents, reference, tracks = window_inputs()
    maps = {"reference": reference, "votes": reference.clone()}
    maps[what] = maps[what][..., 0]  # (T, P, s): a map without its last axis
    window = GuidedWindow(runner, conditioning, PARTS, GuidanceSettings(timesteps=(104, 103), iterations=1))
    with pytest.raises(GuidanceError, match="a window of 3 frames and 3 classes"):
        window(latents, maps["reference"], tracks, (64, 64), torch.Generator(), votes=maps["votes"])


def test_the_first_update_moves_each_latent_by_the_step_size(runner: MapRunner, conditioning: torch.Tensor) -> None:
    """Adam's first step moves every entry with a gradient by ``lr = step_scale * beta_t / (1 - beta_t)`` (epsilon
    1e-12 makes ``g / (|g| + eps)`` one)."""
    settings = GuidanceSettings(track_weight=1.0, iterations=1, slice_frames=2, eps=1e-12, step_scale=7.0)
    window = GuidedWindow(runner, conditioning, PARTS, settings)
    latents, reference, _ = window_inputs()
    z = 0.1 * latents
    votes = torch.randn(FRAMES, PARTS, LATENT, LATENT, generator=torch.Generator().manual_seed(5))
    moved = (window.optimise(z, 103, reference, votes, reference, 0.4) - z).abs()
    beta = float(runner.backbone.scheduler.betas[103])
    torch.testing.assert_close(moved.amax(dim=(1, 2, 3)), torch.full((FRAMES,), 7.0 * beta / (1 - beta)),
                               rtol=1e-4, atol=0)


def test_adam_uses_the_configured_moment_decays(runner: MapRunner, conditioning: torch.Tensor) -> None:
    latents, reference, _ = window_inputs()
    votes = torch.randn(FRAMES, PARTS, LATENT, LATENT, generator=torch.Generator().manual_seed(5))
    results = []
    for betas in ((0.9, 0.999), (0.5, 0.6)):
        settings = GuidanceSettings(track_weight=1.0, iterations=3, slice_frames=FRAMES, betas=betas)
        window = GuidedWindow(runner, conditioning, PARTS, settings)
        results.append(window.optimise(latents, 103, reference, votes, reference, 0.4))
    assert not torch.allclose(results[0], results[1], rtol=0, atol=1e-6)


def test_the_guided_segmenter_hands_on_its_output_size_and_votes(tiny_path: Path, conditioning: torch.Tensor) -> None:
    model = PartModel(["background", "a", "b"], "tiny", "", 64, conditioning, torch.zeros(2, 32), {}, {})
    segment = SegmentSettings(resolution=64, hierarchical=False, output_size=12)
    segmenter = WindowSegmenter(load_backbone(str(tiny_path)), model, segment)
    frames = torch.randint(0, 256, (FRAMES, 3, 48, 48), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    _, reference, tracks = window_inputs()
    settings = GuidanceSettings(track_weight=1.0, timesteps=(104, 103), iterations=2, step_scale=100.0)
    guided = GuidedSegmenter(segmenter, settings)
    votes = torch.zeros(FRAMES, PARTS, LATENT, LATENT)
    votes[:, 2] = 10.0
    per_step, fixed = (guided(frames, reference, tracks, (64, 64), seed=1, votes=v) for v in (None, votes))
    assert per_step.shape == fixed.shape == (FRAMES, PARTS, 12, 12)
    assert float((fixed.argmax(1) == 2).float().mean()) > float((per_step.argmax(1) == 2).float().mean()) + 0.1


def test_ddim_step_keeps_the_latents_dtype() -> None:
    alpha_bar = torch.linspace(0.99, 0.5, 200)
    latents = torch.randn(2, 4, 3, 3).to(torch.bfloat16)
    assert ddim_step(latents, torch.randn(2, 4, 3, 3), alpha_bar, 150, 100).dtype == torch.bfloat16


def test_gradient_checkpointing_costs_one_more_forward_per_update() -> None:
    plain = GuidanceSettings(reg_weight=8.0).frame_forwards(16)
    assert GuidanceSettings(reg_weight=8.0, gradient_checkpointing=True).frame_forwards(16) == (5 + 4 * 15 * 3) * 16
    assert plain == (5 + 3 * 15 * 3) * 16


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_runner_counts_the_updates_the_settings_predict(
    runner: MapRunner, conditioning: torch.Tensor, checkpointing: bool
) -> None:
    """Slices (0, 2) and (2, 3): each update counts its own frames' backward, 2 or 3 frame-forwards per frame.
    ``frame_forwards`` also counts the unguided reference pass, which the segmenter runs, not the window."""
    settings = GuidanceSettings(
        track_weight=1.0, timesteps=STEPS, iterations=2, slice_frames=2, gradient_checkpointing=checkpointing
    )
    runner.frame_forwards = 0
    guide(runner, conditioning, settings)
    assert runner.frame_forwards == settings.frame_forwards(FRAMES) - FRAMES


@pytest.mark.parametrize(("track_weight", "reg_weight"), [(1.0, 0.0), (0.0, 1.0)])
def test_a_term_at_weight_zero_is_not_computed(
    runner: MapRunner, conditioning: torch.Tensor, monkeypatch: pytest.MonkeyPatch, track_weight: float,
    reg_weight: float,
) -> None:
    calls = {"track": 0, "reg": 0}

    def counted(term: str, energy: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def call(*args: Any, **kwargs: Any) -> torch.Tensor:
            calls[term] += 1
            return energy(*args, **kwargs)
        return call

    monkeypatch.setattr(guidance, "track_energy", counted("track", guidance.track_energy))
    monkeypatch.setattr(guidance, "lowpass_energy", counted("reg", guidance.lowpass_energy))
    settings = GuidanceSettings(
        track_weight=track_weight, reg_weight=reg_weight, timesteps=STEPS, iterations=1, slice_frames=2
    )
    guide(runner, conditioning, settings)
    updates = 2 * 2  # 2 optimised steps x 2 slices
    assert calls == {"track": updates * (track_weight > 0), "reg": updates * (reg_weight > 0)}


@pytest.mark.parametrize("span", ["slice", "window"])
def test_the_regulariser_low_passes_the_slice_or_the_whole_window(
    runner: MapRunner, conditioning: torch.Tensor, span: str
) -> None:
    """E_Reg of slice [1, 3) of a 4-frame window, rebuilt from its parts: the slice's maps alone (``slice``) or
    spliced into the other frames' latest maps against the whole reference (``window``), a spatio-temporal mask
    with its own temporal threshold, normalised by the slice's map entries whatever the span."""
    settings = GuidanceSettings(
        track_weight=0.0, reg_weight=2.0, lowpass="spatiotemporal", temporal_threshold=0.25, dct_span=span
    )
    window = GuidedWindow(runner, conditioning, PARTS, settings)
    draw = torch.Generator().manual_seed(5)
    maps = torch.rand(2, PARTS, LATENT, LATENT, generator=draw)
    latest, reference, voted = (torch.rand(4, PARTS, LATENT, LATENT, generator=draw) for _ in range(3))
    energy = window.energy(maps, 1, 3, voted, reference, latest, threshold=0.5)
    if span == "window":
        volume, target = torch.cat([latest[:1], maps, latest[3:]]), reference
    else:
        volume, target = maps, reference[1:3]
    mask = lowpass_mask(len(volume), LATENT, LATENT, 0.5, "spatiotemporal", 0.25)
    expected = 2.0 * lowpass_energy(volume, target, mask, normaliser=maps.numel())
    assert energy.item() == pytest.approx(expected.item(), rel=1e-6)
    if span == "window":  # 4 frames: the temporal threshold keeps 1 of them, the spatial one would keep 2
        loose = lowpass_mask(len(volume), LATENT, LATENT, 0.5, "spatiotemporal", 0.5)
        assert 2.0 * lowpass_energy(volume, target, loose, normaliser=maps.numel()).item() != pytest.approx(
            expected.item()
        )
