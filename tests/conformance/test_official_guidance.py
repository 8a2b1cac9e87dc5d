"""One guided latent update of ours against the official guided loop's (``guided_update.npz``, tools/reference_vectors).

Ours is :meth:`GuidedWindow.optimise` (one iteration, one 4-frame slice) with the production guidance settings
(configs/smite.yaml) switched to the reference's track energy (``track_loss: hard``) and the official weights
``track_weight`` 0.1 and ``reg_weight`` 8, at the official timestep (the UNet and the step size at ``t``), on the
official votes and reference maps.
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
from smite_ops.unet_maps import MapOptions, MapRunner

torch.set_num_threads(1)

OFFICIAL_SCALE = 0.125
"""The official attention logit scale (see ``test_official_vectors.py``)."""

LATENT_R = 1e-6
"""Latents after the update, relative to the latents' scale: they differ only by the update's differences."""
UPDATE_R = 5e-4
"""The update ``after - before`` relative to its own scale. Adam's first step is
``lr * g / (|g| + eps)``; where ``|g|`` is near ``eps`` (1e-5) the fp32 rounding of the gradient through the UNet
shows, and the difference of two float32 latents of magnitude ~4 carries their rounding (2.4e-7 x 4, about
1e-4 of the 0.013 step); measured 8.6e-5."""


@pytest.fixture(scope="module")
def guided(sd21_tiny: tuple[Path, dict[str, str]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(official vector, our latents after one update)``."""
    vector = load_vector("guided_update")
    overrides = ["guidance.track_loss=hard", "guidance.iterations=1", f"guidance.track_weight={vector['track_weight']}",
                 f"guidance.reg_weight={vector['reg_weight']}", f"guidance.dct_threshold={vector['dct_threshold']}"]
    settings = guidance_settings(load_config("smite", overrides).guidance)
    runner = MapRunner(load_backbone(str(sd21_tiny[0])), cross_frame=True,
                       pooled_group_norm=SegmentSettings().pooled_group_norm,
                       options=MapOptions(attention_scale=OFFICIAL_SCALE, chunk_size=None))
    voted, reference = torch.from_numpy(vector["voted"]), torch.from_numpy(vector["reference"])
    guide = GuidedWindow(runner, torch.from_numpy(vector["conditioning"]), voted.shape[1], settings)
    # ``current`` only feeds dct_span="window"; the reference's span is the slice
    after = guide.optimise(torch.from_numpy(vector["latents"]), int(vector["timestep"]), voted.clone(), voted,
                           reference, settings.dct_threshold)
    runner.close()
    return vector, after.numpy()


@pytest.mark.slow
def test_latents_after_one_guided_update(guided: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    vector, after = guided
    print(f"latents after: {assert_close_to_scale(after, vector['latents_after'], LATENT_R):.3g}")


@pytest.mark.slow
def test_the_guided_update_itself(guided: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    """The change of the latents (both energies' gradient through the UNet, Adam's first step, step size
    ``10 beta_t / (1 - beta_t)``), relative to its own scale."""
    vector, after = guided
    official = vector["latents_after"] - vector["latents"]
    assert np.abs(official).max() > 1e-3  # the vector does move the latents
    print(f"update: {assert_close_to_scale(after - vector['latents'], official, UPDATE_R):.3g}")
