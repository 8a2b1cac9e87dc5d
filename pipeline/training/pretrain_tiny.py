"""Pretrain the tiny SD-shaped backbone on synthetic frames: ``python -m pipeline.training.pretrain_tiny --out DIR``.

Randomly initialised attention is nearly uniform, so SMITE's attention maps carry no part structure; Stable
Diffusion's are useful because it was pretrained as a denoiser. This script does the same, at toy scale:

1. **Data**: ``--images`` frames per drawn object kind (car, face, horse) and ``--generic-images`` frames of
   each of the first ``--generic-layouts`` procedural kinds ``generic-<i>`` (:mod:`pipeline.synth.procedural`;
   none by default, and never a held-out layout), rendered by :mod:`pipeline.synth` at ``--size`` pixels from
   the random streams of master seed ``--data-seed`` (default 1000, disjoint from the benchmark's default seed
   0), each with the prompt "<kind> <part> <part> ..." naming its visible parts (the kind word of a procedural
   kind is "object").
2. **VAE** as an autoencoder on random ``--crop`` pixel crops: mean squared reconstruction error plus
   ``--kl-weight`` times the KL divergence (per sample, summed over latent entries). The latent scaling factor is
   then set to one over the standard deviation of the latents of all frames, as SD's.
3. **UNet** as an epsilon-prediction denoiser on the frozen VAE's latents (random crops of ``--latent-crop``),
   conditioned on the frozen tiny CLIP text encoder's encoding of each frame's prompt (the empty prompt with
   probability 0.1, for classifier-free guidance). Half of the timesteps are drawn from ``[1, 200]`` (SMITE reads
   attention at small timesteps), half from ``[1, 999]``.

**Part contrast** (``--contrast-weight W``, off by default): batches become pairs of frames of a kind, and the
UNet loss adds W times a supervised contrastive loss on its cross-attention queries over the rendered part
labels (:mod:`pipeline.training.part_contrast`), so that cells of one part look alike across instances and unlike
other parts.
``--init tiny`` (or a diffusers folder) starts from a checkpoint's VAE, UNet and text encoder instead of fresh
weights; with ``--vae-steps 0`` its VAE and latent scaling factor are kept. The shipped backbone is the default
run (v1) fine-tuned this way (the README gives both commands).

``--unet-width`` multiplies the UNet's channels and heads (:func:`smite_ops.tiny_model.tiny_unet_config`; the
shipped backbone uses 1). The text encoder keeps its seeded random initialisation (or ``--init``'s; distinct
words still get distinct encodings). All randomness derives from ``--seed``: the same arguments and library
versions give the same weights. Losses are printed every ``--log-every`` steps. The defaults take about 15
minutes on one CPU core (``--threads``).

**Resumable**: every ``--checkpoint-every`` steps of a stage (and at its end) the run state (weights, optimiser,
schedule, random stream, step) is saved to ``<out>/pretrain-state.pt``. With ``--budget-minutes`` the run pauses at
the first save past its budget and exits with status 75; the same command continues from the saved step (a run with
other settings is refused), and a run split this way writes the same weights as one uninterrupted run. The finished
checkpoint is written whole (a sibling folder swapped into place, replacing ``--out``; a kill at any point leaves
the run state or the checkpoint); the state file goes with the old folder, and ``<out>/pretrain.json`` records
the settings and the wall time over all runs. ``--out`` must be new or hold only a checkpoint and run state
(nothing else is ever deleted).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.method.backbone_source import backbone_source
from pipeline.synth.generate import stream
from pipeline.synth.procedural import ProceduralKind, generic_kind
from pipeline.synth.scene import background_texture, random_pose, render
from pipeline.synth.shapes import KINDS, ObjectKind
from pipeline.training.part_contrast import paired_picks, part_contrast, part_ids, sample_cells
from pipeline.training.pretrain_state import PretrainPaused, ResumableRun, prepare_out, write_checkpoint
from smite_ops.attention import configure_video_unet
from smite_ops.backbone import load_backbone
from smite_ops.conditioning import encode_prompt
from smite_ops.errors import InputError
from smite_ops.tiny_model import TinyComponents, build_tiny_components, sd_ddim_scheduler

PRETRAIN_ROLE = 2
"""Stream role of pretraining frames (the benchmark uses 0 for references and 1 for videos)."""

EMPTY_PROMPT_PROBABILITY = 0.1
PAUSED_EXIT_STATUS = 75
"""Exit status of a run that paused at its time budget (``EX_TEMPFAIL``: run the same command again)."""


@dataclass(frozen=True)
class PretrainSettings:
    """Sizes and schedules of pretraining (see the module docstring)."""

    out: Path
    seed: int = 0
    data_seed: int = 1000
    images: int = 150
    generic_layouts: int = 0
    generic_images: int = 10
    unet_width: int = 1
    size: int = 256
    vae_steps: int = 400
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    crop: int = 64
    unet_steps: int = 800
    unet_lr: float = 5e-4
    latent_crop: int = 16
    batch: int = 8
    contrast_weight: float = 0.0
    contrast_temperature: float = 0.1
    contrast_cells: int = 96
    init: str = ""
    log_every: int = 100
    threads: int = 1
    checkpoint_every: int = 200
    budget_minutes: float = 0.0


@dataclass(frozen=True)
class Frames:
    """Rendered pretraining data.

    Attributes:
        images: ``(N, 3, S, S)`` float in [-1, 1].
        prompts: one per image.
        labels: ``(N, S, S)`` uint8 fine part labels (0 = background).
        kinds: ``(N,)`` int64 index of each image's kind in the corpus.
    """

    images: Tensor
    prompts: list[str]
    labels: Tensor
    kinds: Tensor


def render_frames(corpus: list[tuple[ObjectKind, int]], size: int, data_seed: int) -> Frames:
    """Render ``count`` frames of each ``(kind, count)``, each prompted with its kind and visible part names."""
    pictures, prompts, masks, kinds = [], [], [], []
    for position, (kind, count) in enumerate(corpus):
        name = kind.name
        word = "object" if isinstance(kind, ProceduralKind) else name
        for index in range(count):
            rng = stream(data_seed, name, PRETRAIN_ROLE, index)
            instance = kind.sample_instance(rng)
            rgb, labels = render(kind, instance, random_pose(kind, rng), background_texture(rng, size)[:size, :size])
            visible = [kind.fine_parts[i] for i in np.unique(labels) if 0 < i < len(kind.fine_parts)]
            pictures.append(torch.from_numpy(rgb).permute(2, 0, 1))
            prompts.append(" ".join([word, *visible]))
            masks.append(torch.from_numpy(labels.astype(np.uint8)))
            kinds.append(position)
    return Frames(torch.stack(pictures).float() / 127.5 - 1.0, prompts, torch.stack(masks), torch.tensor(kinds))


def random_crops(images: Tensor, side: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random ``side x side`` crops (with horizontal flips) of random images ``(N, C, H, W)``."""
    picks = torch.randint(0, images.shape[0], (count,), generator=generator).tolist()
    crops = []
    for pick in picks:
        top, left = torch.randint(0, images.shape[-2] - side + 1, (2,), generator=generator).tolist()
        crop = images[pick, :, top : top + side, left : left + side]
        crops.append(crop.flip(-1) if torch.rand(1, generator=generator) < 0.5 else crop)
    return torch.stack(crops)


def _log(stage: str, step: int, total: int, losses: list[float], started: float) -> None:
    print(f"{stage} step {step}/{total} loss {np.mean(losses):.4f} ({time.perf_counter() - started:.0f} s)", flush=True)


def _fit(
    module: torch.nn.Module, name: str, lr: float, steps: int, run: ResumableRun, batch_loss: Callable[[], Tensor]
) -> None:
    """AdamW with a cosine schedule over ``steps`` calls of ``batch_loss``, resumed and checkpointed by ``run``.

    The module ends in eval mode.
    """
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    started, losses = time.perf_counter(), []
    module.train()
    log_every, checkpoint_every = run.settings.log_every, run.settings.checkpoint_every
    for step in range(run.resume(name, steps, optimizer, schedule) + 1, steps + 1):
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % log_every == 0:
            _log(name, step, steps, losses, started)
            losses = []
        if step % checkpoint_every == 0 or step == steps:
            run.save(name, step, optimizer, schedule)
    module.eval()


def pretrain_vae(parts: TinyComponents, frames: Frames, settings: PretrainSettings, run: ResumableRun) -> None:
    """Train the VAE as an autoencoder (MSE + KL), then set its latent scaling factor to 1 / latent std."""
    vae, generator = parts.vae, run.generator

    def batch_loss() -> Tensor:
        batch = random_crops(frames.images, settings.crop, settings.batch, generator)
        posterior = vae.encode(batch).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        return F.mse_loss(recon, batch) + settings.kl_weight * posterior.kl().mean()

    _fit(vae, "vae", settings.vae_lr, settings.vae_steps, run, batch_loss)
    if settings.vae_steps == 0:
        return  # an untrained VAE keeps its scaling factor (--init's)
    with torch.no_grad():
        std = float(encode_means(parts, frames.images).std())
    vae.register_to_config(scaling_factor=1.0 / std)
    print(f"vae latent std {std:.4f} -> scaling factor {1.0 / std:.4f}", flush=True)


@torch.no_grad()
def encode_means(parts: TinyComponents, images: Tensor, batch: int = 32) -> Tensor:
    """Posterior means ``(N, 4, S/8, S/8)`` of ``(N, 3, S, S)`` images (unscaled)."""
    return torch.cat([parts.vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


def _timesteps(count: int, generator: torch.Generator) -> Tensor:
    """Half from [1, 200], half from [1, 999] (SMITE reads attention at small timesteps)."""
    low = torch.randint(1, 201, (count,), generator=generator)
    wide = torch.randint(1, 1000, (count,), generator=generator)
    return torch.where(torch.arange(count) % 2 == 0, low, wide)


def pretrain_unet(parts: TinyComponents, frames: Frames, settings: PretrainSettings, run: ResumableRun) -> None:
    """Train the UNet as a text-conditioned epsilon-prediction denoiser on frozen VAE latents.

    With ``contrast_weight > 0`` batches are pairs of frames of a kind and the loss adds that weight times the
    part contrast (:mod:`pipeline.training.part_contrast`) of the cross-attention queries of every cross-attention
    layer (captured by :func:`smite_ops.attention.configure_video_unet`) at ``contrast_cells`` cells per frame.
    """
    generator = run.generator
    latents = encode_means(parts, frames.images) * parts.vae.config.scaling_factor
    with torch.no_grad():
        unique = sorted(set(frames.prompts))
        encoded = {text: encode_prompt(parts.text_encoder, parts.tokenizer, text) for text in unique}
        empty = encode_prompt(parts.text_encoder, parts.tokenizer, "")
    conditions = torch.stack([encoded[text] for text in frames.prompts])  # (N, L, D)
    scheduler = sd_ddim_scheduler()
    unet = parts.unet
    contrast = settings.contrast_weight > 0
    cross_layers = [name for name, module in unet.named_modules() if name.endswith("attn2")]
    video = configure_video_unet(unet, capture_layers=cross_layers) if contrast else None
    ids = part_ids(frames.labels, frames.kinds, frames.labels.shape[-1] // latents.shape[-1])

    def batch_loss() -> Tensor:
        if contrast:
            picks = paired_picks(frames.kinds, settings.batch, generator)
        else:
            picks = torch.randint(0, len(latents), (settings.batch,), generator=generator)
        side = settings.latent_crop
        top, left = torch.randint(0, latents.shape[-1] - side + 1, (2,), generator=generator).tolist()
        clean = latents[picks, :, top : top + side, left : left + side]
        drop = torch.rand(len(picks), generator=generator) < EMPTY_PROMPT_PROBABILITY
        context = torch.where(drop[:, None, None], empty, conditions[picks])
        eps = torch.randn(clean.shape, generator=generator)
        timesteps = _timesteps(len(picks), generator)
        noisy = scheduler.add_noise(clean, eps, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps, encoder_hidden_states=context).sample, eps)
        if video is None:
            return loss
        features = video.capture.query_maps((side, side)).flatten(2)  # (B, C, side * side)
        video.capture.clear()
        crop_ids = ids[picks, top : top + side, left : left + side].flatten(1)  # (B, side * side)
        cells, labels = sample_cells(features, crop_ids, min(settings.contrast_cells, side * side), generator)
        return loss + settings.contrast_weight * part_contrast(cells, labels, settings.contrast_temperature)

    try:
        _fit(unet, "unet", settings.unet_lr, settings.unet_steps, run, batch_loss)
    finally:  # a paused run leaves the UNet with its own attention processors too
        if video is not None:
            video.restore()


def pretrain(settings: PretrainSettings) -> dict[str, Any]:
    """Render the data, pretrain the VAE then the UNet (resuming a saved state), and save the checkpoint.

    Returns:
        The ``pretrain.json`` record written with the checkpoint (settings, ``wall_seconds``, ``runs``).

    Raises:
        PretrainPaused: the budget ran out; the state is saved for the next run.
        InputError: ``settings.out`` holds other files than a checkpoint, or the state of a run with other settings.
    """
    prepare_out(settings.out)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    parts = build_tiny_components(settings.seed, settings.unet_width)
    parts.text_encoder.requires_grad_(False)
    if settings.init:
        _initialise(parts, settings.init)
    run = ResumableRun(settings, parts, generator)
    corpus = [(kind, settings.images) for kind in KINDS.values()]
    corpus += [(generic_kind(index), settings.generic_images) for index in range(settings.generic_layouts)]
    frames = render_frames(corpus, settings.size, settings.data_seed)
    print(f"rendered {len(frames.prompts)} frames of {settings.size} px", flush=True)
    pretrain_vae(parts, frames, settings, run)
    parts.vae.requires_grad_(False)
    pretrain_unet(parts, frames, settings, run)
    return write_checkpoint(parts, settings, run)


def _initialise(parts: TinyComponents, source: str) -> None:
    """Start from the VAE, UNet and text encoder weights and the latent scaling factor of checkpoint ``source``
    ('tiny' or a diffusers folder): the UNet keeps the text encodings it was trained with, whatever ``--seed``.

    Raises:
        InputError: ``source`` does not load, or its UNet has another width.
    """
    backbone = load_backbone(backbone_source(source), with_text_encoder=True)
    try:
        parts.unet.load_state_dict(backbone.unet.state_dict())
        parts.vae.load_state_dict(backbone.vae.state_dict())
        parts.text_encoder.load_state_dict(backbone.text_encoder.state_dict())
    except RuntimeError:
        raise InputError(f"--init {source}: its UNet, VAE or text encoder has other shapes than this run's "
                         "(--unet-width must match)") from None
    parts.vae.register_to_config(scaling_factor=backbone.vae.config.scaling_factor)


def _parse(argv: list[str] | None) -> PretrainSettings:
    defaults = PretrainSettings(out=Path("."))
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.training.pretrain_tiny", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    for name, value in vars(defaults).items():
        if name != "out":
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    settings = PretrainSettings(**vars(parser.parse_args(argv)))
    if settings.crop > settings.size or settings.latent_crop > settings.size // 8:
        parser.error(f"--crop {settings.crop} and --latent-crop {settings.latent_crop} must fit in a --size "
                     f"{settings.size} frame and its {settings.size // 8}-cell latent")
    if settings.checkpoint_every < 1:
        parser.error(f"--checkpoint-every must be >= 1, got {settings.checkpoint_every}")
    if settings.images * len(KINDS) + settings.generic_layouts * settings.generic_images < 1:
        parser.error("nothing to pretrain on: --images and --generic-layouts x --generic-images are 0")
    if settings.contrast_weight > 0:
        fewest = min(settings.images or math.inf, settings.generic_images if settings.generic_layouts else math.inf)
        if settings.batch < 2 or settings.batch % 2 or fewest < 2:
            parser.error(f"--contrast-weight needs an even --batch (got {settings.batch}) and 2 or more frames of "
                         f"every kind (got {fewest})")
    return settings


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: exit status 0 when the checkpoint is written, 75 when paused, 2 on bad input."""
    settings = _parse(argv)
    try:
        record = pretrain(settings)
    except PretrainPaused as paused:
        print(f"{settings.out}: {paused}; run the same command again to continue", flush=True)
        sys.exit(PAUSED_EXIT_STATUS)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {settings.out}: {record['wall_seconds']:.0f} s over {record['runs']} run(s) on {settings.threads} "
          "thread(s)", flush=True)


if __name__ == "__main__":
    main()
