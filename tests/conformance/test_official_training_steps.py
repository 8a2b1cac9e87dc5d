"""One stage-1 and one stage-2 optimiser step of our learner against the official training loop's.

The vector (``optimiser_steps.npz``, tools/reference_vectors) holds the trainable parameters' change after one
step of the official ``text_embeds+crossattn_kv`` setup on the fixed 512-px sample of ``loss_gradients.npz``.
Ours is :meth:`PartLearner.step_on_latents` with the production learning settings (configs/smite.yaml) on the
same sample, in the reference's loss mode, without CFG and with the frequency coefficient 0 on both sides
(the frequency term's gradient through the UNet is ill-conditioned; see ``test_official_vectors.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conformance.helpers import assert_close_to_scale, load_vector
from pipeline.config import load_config
from pipeline.method.settings import learn_settings
from smite_ops.backbone import Backbone, load_backbone
from smite_ops.learning import PartLearner
from smite_ops.unet_maps import MapOptions

torch.set_num_threads(1)

OFFICIAL_SCALE = 0.125
"""The official attention logit scale (see ``test_official_vectors.py``)."""
LOSS_R = 1e-5
"""The loss value: as the loss-gradients vector's."""
TOKEN_STEP_R = 1e-4
"""Stage-1 token change, relative to its own scale (``lr``). Adam's first step is ``lr * g' / (|g'| + eps)`` with
``g'`` the gradient of the 0.01-scaled loss: about ``lr * sign(g)``, but its sensitivity to the gradient is
``lr / eps`` near zero, so the token gradients' agreement (1.2e-6 of their 1e-3 scale, the gradient test;
1.2e-11 after scaling) allows up to 1.2e-3 of ``lr`` on entries whose gradient is near zero; measured 1.6e-5."""
KV_STEP_R = 1e-3
"""Stage-2 K/V change, relative to its own scale (``lr`` = 1e-6), beyond one float32 ulp of the weight: a change
of 1e-6 on a weight of ~0.05 is stored to its ulp (3.7e-9, 0.4 % of the change), so two equal updates can round
to neighbouring floats. Beyond that, as the tokens': the K/V gradients agree to 1e-5 of their scale (the
gradient test), which allows up to 1e-2 of ``lr``; measured 5.7e-5 beyond one ulp."""


def assert_step_close(ours: np.ndarray, official: np.ndarray, before: np.ndarray, relative: float) -> float:
    """``|ours - official| <= relative * max |official| + ulp(before)`` per entry (the change of float32
    parameters ``before``); returns the largest excess over one ulp, relative to ``max |official|``."""
    scale = float(np.abs(official).max())
    excess = np.abs(ours.astype(np.float64) - official) - np.spacing(np.abs(before.astype(np.float32)))
    assert ours.shape == official.shape
    assert excess.max() <= relative * scale, f"beyond one ulp: {excess.max():.3g} > {relative:g} x scale {scale:.3g}"
    return max(float(excess.max()), 0.0) / scale


def production_learner(backbone: Backbone, vector: dict[str, np.ndarray], stage: str) -> PartLearner:
    """A learner with configs/smite.yaml's settings (CFG off, frequency coefficient 0, reference loss mode)."""
    overrides = ["train.guidance_scale=1.0", "train.coef_freq=0.0", "train.freq_reference_quirk=true"]
    config = load_config("smite", overrides)
    settings = learn_settings(config)
    conditioning = torch.from_numpy(vector["conditioning"])
    tokens = torch.from_numpy(vector[f"{stage}/tokens_before"])
    names = ["background", *(f"part{i}" for i in range(1, tokens.shape[0] + 1))]
    return PartLearner(backbone, names, conditioning, tokens, None, settings,
                       MapOptions(attention_scale=OFFICIAL_SCALE, chunk_size=None))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_one_optimiser_step(sd21_tiny: tuple[Path, dict[str, str]], stage: str) -> None:
    """Stage 1 (epoch 5): the tokens move by the official Adam step (lr ``train.token_lr``), the K/V weights
    stay; stage 2 (epoch 51): the K/V weights move by the official step (lr ``train.unet_lr``), the tokens stay."""
    vector = load_vector("optimiser_steps")
    learner = production_learner(load_backbone(str(sd21_tiny[0])), vector, stage)
    tokens_before = learner.tokens.tokens.detach().clone()
    before = {name: p.detach().clone() for name, p in learner.unet_params.items()}
    terms = learner.step_on_latents(
        torch.from_numpy(vector["noisy"]), torch.from_numpy(vector["noise"]), int(vector["timestep"]),
        torch.from_numpy(vector["mask"]), int(vector[f"{stage}/epoch"]),
    )
    assert_close_to_scale(terms.total.numpy(), vector[f"{stage}/total"], LOSS_R)
    official_tokens = vector[f"{stage}/tokens_after"] - vector[f"{stage}/tokens_before"]
    ours_tokens = (learner.tokens.tokens.detach() - tokens_before).numpy()
    deltas = {name: (p.detach() - before[name]).numpy() for name, p in learner.unet_params.items()}
    assert set(deltas) == {key.removeprefix(f"{stage}/delta/") for key in vector if key.startswith(f"{stage}/delta/")}
    if stage == "stage1":
        print(f"stage 1 tokens: {assert_close_to_scale(ours_tokens, official_tokens, TOKEN_STEP_R):.3g}")
        assert not any(np.any(vector[f"{stage}/delta/{name}"]) or np.any(delta) for name, delta in deltas.items())
    else:
        assert not np.any(official_tokens) and not np.any(ours_tokens)
        errors = [assert_step_close(delta, vector[f"{stage}/delta/{n}"], before[n].numpy(), KV_STEP_R)
                  for n, delta in deltas.items()]
        print(f"stage 2 K/V, beyond one ulp: max {max(errors):.3g}")
