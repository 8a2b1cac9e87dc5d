"""A 16-frame window's label maps, unguided and guided, ours against the official code (``window_labels.npz``).

Unguided: one pass of our map runner at t = 104 on the official noisy latents (ours draws the same noise from
the same seed), against the official ``_get_refrence`` pass. 128-px frames (16 x 16 maps), the official guided
window length (its voting needs 15 frames). Guided: :class:`GuidedWindow` with the production
guidance settings switched to the reference's track energy and the official weights, over the timesteps 104, 103
with 15 iterations, against the official loop. Our optimisation runs the UNet at ``t_{i+1}`` where the official
runs it at ``t_i`` (README, deviations; there is no switch): ours must equal the official loop given ``t_{i+1}``
(to the float32 noise of a guided window), and stay well apart from the official loop as it ships.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conformance.helpers import assert_close_to_scale, load_vector
from pipeline.config import load_config
from pipeline.method.settings import guidance_settings
from smite_ops.backbone import load_backbone
from smite_ops.guidance import GuidedWindow
from smite_ops.segmentation import SegmentSettings
from smite_ops.tracking.base import Tracks
from smite_ops.unet_maps import MapOptions, MapRunner

torch.set_num_threads(1)

OFFICIAL_SCALE = 0.125
"""The official attention logit scale (see ``test_official_vectors.py``)."""
WAS_R = 5e-5
"""Window scores (inference WAS at the map size): as the WAS of ``test_official_vectors.py``."""
GUIDED_R = 4e-2
"""Guided scores against the official loop given ``t_{i+1}``. The guided window amplifies float32 differences:
15 Adam steps that are about ``lr * sign(g)`` at first, fed back through the UNet. Our own guided window moves
by 2.6e-2 of the scale when its input latents move by 1e-6 (relative), as much as it differs from the official
loop (2.2e-2 measured); the official loop as shipped is 0.25 away."""
LABELS_EQUAL = 0.999
"""Fraction of equal unguided labels (the scores agree to 1e-5; an argmax tie may flip)."""
GUIDED_LABELS_EQUAL = 0.99
"""Fraction of equal guided labels (map size): 99.76 % measured, as between two of our runs 1e-6 apart."""
DEVIATION = 4 * GUIDED_R
"""The official loop as shipped is further away than this (0.25 measured, labels equal on 93.7 %)."""


@pytest.fixture(scope="module")
def window(sd21_tiny: tuple[Path, dict[str, str]]) -> dict[str, object]:
    vector = load_vector("window_labels")
    runner = MapRunner(load_backbone(str(sd21_tiny[0])), cross_frame=True,
                       pooled_group_norm=SegmentSettings().pooled_group_norm,
                       options=MapOptions(attention_scale=OFFICIAL_SCALE, chunk_size=None))
    yield {"vector": vector, "runner": runner}
    runner.close()


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(17)


def test_our_noise_is_the_vectors(window: dict[str, object]) -> None:
    vector = window["vector"]
    latents = torch.from_numpy(vector["latents"])
    _, noise = window["runner"].add_noise(latents, int(vector["timesteps"][0]), seeded())
    assert torch.equal(noise, torch.from_numpy(vector["noise"]))


@pytest.mark.slow
def test_unguided_window_labels(window: dict[str, object]) -> None:
    vector, runner = window["vector"], window["runner"]
    parts = vector["unguided_scores"].shape[1]
    step = int(vector["timesteps"][0])
    noisy, _ = runner.add_noise(torch.from_numpy(vector["latents"]), step, seeded())
    with torch.no_grad():
        runner.predict(noisy, step, torch.from_numpy(vector["conditioning"]), noisy.shape[0])
        scores = runner.inference_maps(parts)
        labels = runner.inference_maps(parts, vector["unguided_labels"].shape[-1]).argmax(1)
    runner.release()
    error = assert_close_to_scale(scores.numpy(), vector["unguided_scores"], WAS_R)
    equal = np.mean(labels.numpy() == vector["unguided_labels"])
    print(f"unguided scores: {error:.3g} of scale; labels equal on {equal:.5f}")
    assert equal >= LABELS_EQUAL


@pytest.mark.slow
def test_guided_window_labels(window: dict[str, object]) -> None:
    vector, runner = window["vector"], window["runner"]
    steps = ",".join(str(int(t)) for t in vector["timesteps"])
    overrides = ["guidance.track_loss=hard", f"guidance.timesteps=[{steps}]",
                 f"guidance.track_weight={vector['track_weight']}", f"guidance.reg_weight={vector['reg_weight']}",
                 f"guidance.dct_threshold={vector['dct_threshold']}"]
    settings = guidance_settings(load_config("smite", overrides).guidance)
    reference = torch.from_numpy(vector["unguided_scores"])
    guide = GuidedWindow(runner, torch.from_numpy(vector["conditioning"]), reference.shape[1], settings)
    tracks = Tracks(torch.from_numpy(vector["points"]), torch.from_numpy(vector["visible"]),
                    torch.zeros(vector["points"].shape[1], dtype=torch.int64))
    side = 8 * vector["latents"].shape[-1]
    scores = guide(torch.from_numpy(vector["latents"]), reference, tracks, (side, side), seeded()).numpy()
    at_next_t = vector["at_next_t/guided_scores"]
    error = assert_close_to_scale(scores, at_next_t, GUIDED_R)
    equal = np.mean(scores.argmax(1) == at_next_t.argmax(1))
    print(f"guided scores vs the official loop at t_(i+1): {error:.3g} of scale; labels equal on {equal:.4f}")
    assert equal >= GUIDED_LABELS_EQUAL
    # the official loop as it ships (optimisation at t_i) is further away: the documented deviation
    official = vector["official/guided_scores"]
    distance = np.abs(scores - official).max() / np.abs(official).max()
    equal = np.mean(scores.argmax(1) == official.argmax(1))
    print(f"guided scores vs the official loop: {distance:.3g} of scale; labels equal on {equal:.4f}")
    assert distance > DEVIATION
