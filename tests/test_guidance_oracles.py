"""Guidance checked against oracles that live outside :class:`GuidedWindow` (issue 19).

The energy is recomputed here from its parts with NumPy/SciPy (weighted cross-entropy against the voted
labels, L1 of the low-passed ``scipy.fft.dctn`` spectra), so a guided update that climbs its own energy, or
an energy that no longer measures the distance to the votes / reference, fails these tests. The flicker test
measures the method's purpose directly: labels along tracks change less often between frames with guidance.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.fft import dctn

from smite_ops.guidance import GuidanceSettings, GuidedWindow
from smite_ops.tracking.base import Tracks
from smite_ops.unet_maps import MapRunner
from smite_ops.voting import project_to_grid, vote

PARTS, FRAMES, SIDE, T = 3, 4, 16, 103  # latents 16 x 16 (128 px frames), maps 16 x 16


def latents(seed: int = 1) -> torch.Tensor:
    return torch.randn(FRAMES, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def slice_maps(runner: MapRunner, conditioning: torch.Tensor, z: torch.Tensor, slice_frames: int) -> np.ndarray:
    """``(T, P, s, s)`` float64 maps with every slice run alone, as the optimisation sees them."""
    out = []
    for a in range(0, z.shape[0], slice_frames):
        part = z[a : a + slice_frames]
        with torch.no_grad():
            runner.predict(part, T, conditioning, num_frames=part.shape[0])
            out.append(runner.inference_maps(PARTS).double().numpy())
        runner.release()
    return np.concatenate(out)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def pixel_weights(votes: np.ndarray) -> np.ndarray:
    """Per pixel weight ``w_{y(p)}`` of the voted labels ``y``: ``w_0 = 1``, ``w_c = N_fg / n_c``."""
    labels = votes.argmax(axis=1)
    counts = np.bincount(labels.ravel(), minlength=PARTS).astype(float)
    weights = np.concatenate([[1.0], np.where(counts[1:] > 0, counts[1:].sum() / np.maximum(counts[1:], 1), 0.0)])
    return weights[labels]


def weighted_ce(maps: np.ndarray, votes: np.ndarray) -> float:
    """Reference (hard) E_Track: class-weighted CE of softmax(maps) against the labels argmax(votes)."""
    picked = np.take_along_axis(log_softmax(maps), votes.argmax(axis=1)[:, None], axis=1)[:, 0]
    w = pixel_weights(votes)
    return float((w * -picked).sum() / w.sum())


def weighted_kl(maps: np.ndarray, votes: np.ndarray) -> float:
    """Soft E_Track: class-weighted KL(softmax(votes) || softmax(maps)) per pixel."""
    log_q = log_softmax(votes)
    kl = (np.exp(log_q) * (log_q - log_softmax(maps))).sum(axis=1)
    w = pixel_weights(votes)
    return float((w * kl).sum() / w.sum())


def lowpass_l1(maps: np.ndarray, reference: np.ndarray, threshold: float) -> float:
    """Reference E_Reg of one slice: sum |H * DCT3D(S - S_ref)| / numel, spatial low-pass over (frame, y, x)."""
    spectrum = dctn((maps - reference).transpose(1, 0, 2, 3), type=2, axes=(1, 2, 3), norm="ortho")
    keep = max(1, math.floor(threshold * maps.shape[-1]))
    return float(np.abs(spectrum[:, :, :keep, :keep]).sum() / maps.size)


def oracle_energy(
    maps: np.ndarray, votes: np.ndarray, reference: np.ndarray, settings: GuidanceSettings, threshold: float
) -> float:
    """Sum over slices of ``track_weight * E_Track + reg_weight * E_Reg``, recomputed from its parts."""
    total = 0.0
    for a in range(0, maps.shape[0], settings.slice_frames):
        b = a + settings.slice_frames
        total += settings.track_weight * weighted_ce(maps[a:b], votes[a:b])
        total += settings.reg_weight * lowpass_l1(maps[a:b], reference[a:b], threshold)
    return total


def still_tracks(frames: int = FRAMES, size: int = 8 * SIDE) -> Tracks:
    """One point at the centre of every 8 px cell, not moving, always visible: votes are majorities over time."""
    ys, xs = torch.meshgrid(torch.arange(size // 8) * 8.0 + 4, torch.arange(size // 8) * 8.0 + 4, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], dim=1).expand(frames, -1, -1).clone()
    visible = torch.ones(points.shape[:2], dtype=torch.bool)
    return Tracks(points, visible, torch.zeros(points.shape[1], dtype=torch.long))


def votes_of(maps: torch.Tensor, tracks: Tracks, window: int) -> torch.Tensor:
    cells, valid = project_to_grid(tracks.points, tracks.visible, (8 * SIDE, 8 * SIDE), (SIDE, SIDE))
    return vote(maps, cells, valid, window)


@pytest.mark.parametrize("threshold", [0.4, 1.0])
def test_regularised_update_moves_the_maps_towards_the_reference(
    runner: MapRunner, conditioning: torch.Tensor, threshold: float
) -> None:
    settings = GuidanceSettings(reg_weight=8.0, iterations=4, slice_frames=2)
    z = latents()
    current = torch.from_numpy(slice_maps(runner, conditioning, z, 2)).float()
    noise = torch.randn(current.shape, generator=torch.Generator().manual_seed(2))
    reference = current + current.std() * noise
    ref = reference.double().numpy()
    before = slice_maps(runner, conditioning, z, 2)
    moved = GuidedWindow(runner, conditioning, PARTS, settings).optimise(z, T, current, current, reference, threshold)
    after = slice_maps(runner, conditioning, moved, 2)
    energy_after, energy_before = (oracle_energy(maps, ref, ref, settings, threshold) for maps in (after, before))
    assert energy_after < 0.97 * energy_before
    if threshold == 1.0:  # all-pass: plainly closer to S_ref in L2 (the orthonormal DCT keeps L2)
        assert np.linalg.norm(after - ref) < 0.99 * np.linalg.norm(before - ref)


@pytest.mark.parametrize("loss", ["hard", "soft"])
def test_tracking_update_moves_the_maps_towards_their_votes(
    runner: MapRunner, conditioning: torch.Tensor, loss: str
) -> None:
    settings = GuidanceSettings(track_weight=1.0, iterations=8, step_scale=100.0, slice_frames=FRAMES, track_loss=loss)
    z = latents()
    current = torch.from_numpy(slice_maps(runner, conditioning, z, FRAMES)).float()
    voted = votes_of(current, still_tracks(), settings.voting_window)
    labels = voted.argmax(1).numpy()
    assert (current.argmax(1).numpy() != labels).mean() > 0.05  # the votes disagree with the maps somewhere
    moved = GuidedWindow(runner, conditioning, PARTS, settings).optimise(z, T, current, voted, current, 0.4)
    before, after = current.double().numpy(), slice_maps(runner, conditioning, moved, FRAMES)
    votes = voted.double().numpy()
    distance = weighted_ce if loss == "hard" else weighted_kl
    assert distance(after, votes) < 0.95 * distance(before, votes), (distance(after, votes), distance(before, votes))


def test_full_energy_falls_by_the_oracle(runner: MapRunner, conditioning: torch.Tensor) -> None:
    settings = GuidanceSettings(track_weight=0.1, reg_weight=8.0, iterations=8, slice_frames=2)
    z = latents(seed=3)
    current = torch.from_numpy(slice_maps(runner, conditioning, z, FRAMES)).float()
    voted = votes_of(current, still_tracks(), settings.voting_window)
    reference = current + 0.5 * current.std() * torch.randn(current.shape, generator=torch.Generator().manual_seed(4))
    args = (voted.double().numpy(), reference.double().numpy(), settings, settings.dct_threshold)
    before = oracle_energy(slice_maps(runner, conditioning, z, 2), *args)
    moved = GuidedWindow(runner, conditioning, PARTS, settings).optimise(
        z, T, current, voted, reference, settings.dct_threshold
    )
    assert oracle_energy(slice_maps(runner, conditioning, moved, 2), *args) < 0.97 * before


def flicker(scores: torch.Tensor) -> float:
    """Fraction of (cell, frame pair) whose label changes between consecutive frames (the tracks stand still)."""
    labels = scores.argmax(1)
    return float((labels[1:] != labels[:-1]).float().mean())


def test_guidance_lowers_flicker_on_a_clip(runner: MapRunner, conditioning: torch.Tensor) -> None:
    """A still clip (tracks stand still) whose frames differ by noise: guided labels flicker less along tracks."""
    base = torch.randn(1, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(6))
    clip = base + 0.5 * torch.randn(FRAMES, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(7))
    off = GuidanceSettings(
        track_weight=0.0, timesteps=(104, 103, 102), iterations=5, slice_frames=FRAMES, track_loss="hard"
    )
    plain = GuidedWindow(runner, conditioning, PARTS, off)
    reference = plain(clip, torch.zeros(FRAMES, PARTS, SIDE, SIDE), still_tracks(), (8 * SIDE, 8 * SIDE),
                      torch.Generator().manual_seed(8))
    guided = GuidedWindow(runner, conditioning, PARTS, replace(off, track_weight=1.0))(
        clip, reference, still_tracks(), (8 * SIDE, 8 * SIDE), torch.Generator().manual_seed(8)
    )
    assert flicker(reference) > 0.05
    assert flicker(guided) < 0.8 * flicker(reference), (flicker(guided), flicker(reference))
