"""Production-style learning checked by value (issue 19): the CFG-doubled forward (guidance_scale 100, as
shipped) against a hand-built uncond/cond pair, and stage-2 freezing by which parameters move."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.io.references import ReferenceSet, load_reference_set
from pipeline.method.backbone_source import TINY_BACKBONE
from pipeline.synth import generate_benchmark
from smite_ops.backbone import load_backbone
from smite_ops.conditioning import encode_part_prompt, encode_prompt
from smite_ops.learning import LearnSettings, PartLearner, nearest_mask, trainable_unet_parameters
from smite_ops.losses import SmiteLoss
from smite_ops.unet_maps import MapOptions

torch.set_num_threads(1)
RESOLUTION = 64
SCALE = 100.0  # LearnSettings' (and the reference's) guidance_scale


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> ReferenceSet:
    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(root, seed=0, size=RESOLUTION, num_references=2, videos_per_kind=1, num_frames=2, kinds=["car"])
    return load_reference_set(str(root / "car_coarse" / "references"))


def sample(references: ReferenceSet, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(np.array(references.images[index])).permute(2, 0, 1).float() / 127.5 - 1.0
    return image, torch.from_numpy(np.array(references.masks[index])).long()


def learner(references: ReferenceSet, options: MapOptions = MapOptions(), with_uncond: bool = True,
            **settings: object) -> PartLearner:
    backbone = load_backbone(str(TINY_BACKBONE), with_text_encoder=True)
    base, init = encode_part_prompt(backbone.text_encoder, backbone.tokenizer, references.part_names)
    uncond = encode_prompt(backbone.text_encoder, backbone.tokenizer, "") if with_uncond else None
    learn = LearnSettings(resolution=RESOLUTION, **settings)
    return PartLearner(backbone, references.part_names, base, init, uncond, learn, options)


def test_cfg_training_forward_equals_a_hand_built_pair(references: ReferenceSet) -> None:
    """``step`` at scale 100 = the loss of ``eps_u + 100 (eps_c - eps_u)`` and the conditional pass's maps."""
    image, mask = sample(references)
    cfg = learner(references, guidance_scale=SCALE)
    terms = cfg.step(image, mask, 0, torch.Generator().manual_seed(3))
    cfg.runner.close()

    plain = learner(references, guidance_scale=1.0)  # same weights and tokens; runner captures every pass
    runner, generator = plain.runner, torch.Generator().manual_seed(3)
    low, high = plain.settings.t_range
    timestep = int(torch.randint(low, high + 1, (1,), generator=generator))
    noisy, eps = runner.add_noise(runner.encode(image[None], generator), timestep, generator)
    with torch.no_grad():
        eps_uncond = runner.predict(noisy, timestep, plain.uncond, num_frames=1)
        runner.release()
        eps_cond = runner.predict(noisy, timestep, plain.tokens(), num_frames=1)
        logits, maps = runner.training_maps(plain.num_parts)
    runner.close()
    guided = eps_uncond + SCALE * (eps_cond - eps_uncond)
    assert (guided - eps_cond).abs().max() > 1e-2  # the unconditional branch matters at this scale
    target = nearest_mask(mask, logits.shape[-1])
    expected = SmiteLoss()(logits[0], maps[0], target, guided, eps, 0)
    for name in ("cross_entropy", "was_mse", "sd", "frequency", "total"):
        torch.testing.assert_close(getattr(terms, name), getattr(expected, name), rtol=1e-4, atol=1e-5, msg=name)


def moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, value in before.items() if not torch.equal(value, after[name])}


def snapshot(learn: PartLearner) -> dict[str, torch.Tensor]:
    """Tokens and every UNet parameter, detached copies."""
    state = {f"unet.{name}": p.detach().clone() for name, p in learn.backbone.unet.named_parameters()}
    return {"tokens": learn.tokens.tokens.detach().clone(), **state}


@pytest.mark.parametrize("stage2", ["tokens_frozen", "joint"])
def test_each_stage_moves_exactly_its_parameters(references: ReferenceSet, stage2: str) -> None:
    image, mask = sample(references)
    learn = learner(references, guidance_scale=1.0, token_epochs=1, stage2=stage2, unet_lr=1e-3)
    trained = {f"unet.{name}" for name in learn.unet_params}
    generator = torch.Generator().manual_seed(0)
    start = snapshot(learn)
    learn.step(image, mask, 0, generator)  # stage 1
    stage1 = snapshot(learn)
    learn.step(image, mask, 1, generator)  # stage 2
    stage2_state = snapshot(learn)
    learn.runner.close()
    assert moved(start, stage1) == {"tokens"}
    assert moved(stage1, stage2_state) == (trained | {"tokens"} if stage2 == "joint" else trained)


def test_validation_draws_its_timesteps_from_the_range_with_the_given_generator(references: ReferenceSet) -> None:
    """Every validation image gets a timestep of ``validation_t_range`` (both ends inclusive) drawn from the caller's
    generator, which also seeds the image's noise: equal generators give equal draws whatever the global RNG."""
    model = learner(references, validation_t_range=(95, 96))
    seen: list[tuple[int, torch.Generator]] = []
    predict = model.predict_labels

    def spy(image: torch.Tensor, timestep: int, generator: torch.Generator) -> torch.Tensor:
        seen.append((timestep, generator))
        return predict(image, timestep, generator)

    model.predict_labels = spy  # type: ignore[method-assign]
    image, mask = sample(references)
    draws = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        generator = torch.Generator().manual_seed(7)
        seen.clear()
        model.validate([image] * 24, [mask] * 24, generator)
        assert all(used is generator for _, used in seen)
        draws.append([t for t, _ in seen])
    model.runner.close()
    assert draws[0] == draws[1] and set(draws[0]) == {95, 96}


def test_validation_refuses_images_and_masks_of_different_counts(references: ReferenceSet) -> None:
    model = learner(references)
    image, mask = sample(references)
    with pytest.raises(ValueError, match="zip"):
        model.validate([image, image], [mask], torch.Generator())
    model.runner.close()


def test_the_part_model_carries_the_learned_state(references: ReferenceSet) -> None:
    model = learner(references, guidance_scale=1.0, token_epochs=0)
    image, mask = sample(references)
    model.step(image, mask, 0, torch.Generator().manual_seed(3))  # stage 2 from epoch 0: tokens and K/V moved
    artifact = model.part_model({"epoch": 0, "validation_miou": 12.5})
    model.runner.close()
    assert artifact.part_names == references.part_names
    assert (artifact.base_model, artifact.base_hash) == (model.backbone.source, model.backbone.content_hash)
    assert artifact.resolution == RESOLUTION and artifact.info == {"epoch": 0, "validation_miou": 12.5}
    assert torch.equal(artifact.conditioning, model.tokens().detach().float())
    assert torch.equal(artifact.tokens, model.tokens.tokens.detach().float())
    assert artifact.unet_weights.keys() == model.unet_params.keys() and artifact.unet_weights
    assert all(torch.equal(artifact.unet_weights[name], p.detach()) for name, p in model.unet_params.items())


def test_a_tokens_only_learner_saves_and_resumes(references: ReferenceSet) -> None:
    """``trainable="text_embeds"`` has no UNet optimiser: its state holds None there and loads back."""
    first = learner(references, guidance_scale=1.0, trainable="text_embeds")
    image, mask = sample(references)
    first.step(image, mask, 0, torch.Generator().manual_seed(3))
    state = first.state_dict()
    first.runner.close()
    assert state["unet"] == {} and state["unet_optimizer"] is None and state["token_optimizer"]["state"]
    second = learner(references, guidance_scale=1.0, trainable="text_embeds")
    second.load_state_dict(state)
    second.runner.close()
    assert torch.equal(second.tokens.tokens, first.tokens.tokens)


def test_the_learner_is_built_as_configured(references: ReferenceSet) -> None:
    """Any scale above 1 runs the CFG pair (and needs the empty prompt); learning rates and map options reach the
    optimisers and the runner."""
    options = MapOptions(chunk_size=64, attention_scale=0.2, vae_batch=2)
    model = learner(references, options, guidance_scale=1.5, token_lr=0.3, unet_lr=2e-4)
    model.runner.close()
    assert model.cfg and model.runner.options == options
    assert model.token_optimizer.param_groups[0]["lr"] == 0.3 and model.unet_optimizer.param_groups[0]["lr"] == 2e-4
    with pytest.raises(ValueError, match="^guidance_scale > 1 needs the empty-prompt embedding$"):
        learner(references, with_uncond=False, guidance_scale=1.5)


def test_the_loss_scale_only_moves_adams_epsilon(references: ReferenceSet) -> None:
    """Adam's first step is ``lr * s g / (|s g| + eps)`` for the loss scaled by ``s = loss_scale``: entries whose
    scaled gradient is near eps (1e-8) move less than ``lr``. The unscaled gradient ``g`` comes from a run at s = 1."""
    image, mask = sample(references)
    runs = {}
    for scale in (1.0, 1e-5):
        model = learner(references, guidance_scale=1.0, loss_scale=scale)
        before = model.tokens.tokens.detach().clone()
        model.step(image, mask, 0, torch.Generator().manual_seed(3))  # epoch 0: stage 1 trains the tokens
        runs[scale] = before, model.tokens.tokens.detach().clone(), model.tokens.tokens.grad.clone()
        model.runner.close()
    before, _, gradient = runs[1.0]
    scaled = 1e-5 * gradient
    expected = before - model.settings.token_lr * scaled / (scaled.abs() + 1e-8)
    torch.testing.assert_close(runs[1e-5][1], expected, rtol=1e-5, atol=1e-6)
    assert (scaled.abs() < 1e-7).any()  # some entries are in the damped regime, so the scale matters


def test_a_unet_without_the_chosen_weights_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^the UNet has no parameters for trainable='crossattn'$"):
        trainable_unet_parameters(torch.nn.Linear(2, 2), "crossattn")
