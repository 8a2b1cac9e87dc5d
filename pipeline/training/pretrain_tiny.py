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

``--unet-width`` multiplies the UNet's channels and heads (:func:`smite_ops.tiny_model.tiny_unet_config`; the
shipped backbone uses 1). The text encoder keeps its seeded random initialisation (distinct words still get
distinct encodings). All randomness derives from ``--seed``: the same arguments and library versions give the
same weights. Losses are printed every ``--log-every`` steps. The defaults take about 15 minutes on one CPU core
(``--threads``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.synth.generate import stream
from pipeline.synth.procedural import ProceduralKind, generic_kind
from pipeline.synth.scene import background_texture, random_pose, render
from pipeline.synth.shapes import KINDS, ObjectKind
from smite_ops.conditioning import encode_prompt
from smite_ops.tiny_model import TinyComponents, build_tiny_components, save_tiny_sd, sd_ddim_scheduler

PRETRAIN_ROLE = 2
"""Stream role of pretraining frames (the benchmark uses 0 for references and 1 for videos)."""

EMPTY_PROMPT_PROBABILITY = 0.1


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
    log_every: int = 100
    threads: int = 1


@dataclass(frozen=True)
class Frames:
    """Rendered pretraining data: ``images (N, 3, S, S)`` float in [-1, 1] and one prompt per image."""

    images: Tensor
    prompts: list[str]


def render_frames(corpus: list[tuple[ObjectKind, int]], size: int, data_seed: int) -> Frames:
    """Render ``count`` frames of each ``(kind, count)``, each prompted with its kind and visible part names."""
    pictures, prompts = [], []
    for kind, count in corpus:
        name = kind.name
        word = "object" if isinstance(kind, ProceduralKind) else name
        for index in range(count):
            rng = stream(data_seed, name, PRETRAIN_ROLE, index)
            instance = kind.sample_instance(rng)
            rgb, labels = render(kind, instance, random_pose(kind, rng), background_texture(rng, size)[:size, :size])
            visible = [kind.fine_parts[i] for i in np.unique(labels) if 0 < i < len(kind.fine_parts)]
            pictures.append(torch.from_numpy(rgb).permute(2, 0, 1))
            prompts.append(" ".join([word, *visible]))
    return Frames(torch.stack(pictures).float() / 127.5 - 1.0, prompts)


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
    module: torch.nn.Module, name: str, lr: float, steps: int, log_every: int, batch_loss: Callable[[], Tensor]
) -> None:
    """AdamW with a cosine schedule over ``steps`` calls of ``batch_loss``; the module ends in eval mode."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    started, losses = time.perf_counter(), []
    module.train()
    for step in range(1, steps + 1):
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % log_every == 0:
            _log(name, step, steps, losses, started)
            losses = []
    module.eval()


def pretrain_vae(parts: TinyComponents, frames: Frames, settings: PretrainSettings, generator: torch.Generator) -> None:
    """Train the VAE as an autoencoder (MSE + KL), then set its latent scaling factor to 1 / latent std."""
    vae = parts.vae

    def batch_loss() -> Tensor:
        batch = random_crops(frames.images, settings.crop, settings.batch, generator)
        posterior = vae.encode(batch).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        return F.mse_loss(recon, batch) + settings.kl_weight * posterior.kl().mean()

    _fit(vae, "vae", settings.vae_lr, settings.vae_steps, settings.log_every, batch_loss)
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


def pretrain_unet(
    parts: TinyComponents, frames: Frames, settings: PretrainSettings, generator: torch.Generator
) -> None:
    """Train the UNet as a text-conditioned epsilon-prediction denoiser on frozen VAE latents."""
    latents = encode_means(parts, frames.images) * parts.vae.config.scaling_factor
    with torch.no_grad():
        unique = sorted(set(frames.prompts))
        encoded = {text: encode_prompt(parts.text_encoder, parts.tokenizer, text) for text in unique}
        empty = encode_prompt(parts.text_encoder, parts.tokenizer, "")
    conditions = torch.stack([encoded[text] for text in frames.prompts])  # (N, L, D)
    scheduler = sd_ddim_scheduler()
    unet = parts.unet

    def batch_loss() -> Tensor:
        picks = torch.randint(0, len(latents), (settings.batch,), generator=generator)
        side = settings.latent_crop
        top, left = torch.randint(0, latents.shape[-1] - side + 1, (2,), generator=generator).tolist()
        clean = latents[picks, :, top : top + side, left : left + side]
        drop = torch.rand(settings.batch, generator=generator) < EMPTY_PROMPT_PROBABILITY
        context = torch.where(drop[:, None, None], empty, conditions[picks])
        eps = torch.randn(clean.shape, generator=generator)
        timesteps = _timesteps(settings.batch, generator)
        noisy = scheduler.add_noise(clean, eps, timesteps)
        return F.mse_loss(unet(noisy, timesteps, encoder_hidden_states=context).sample, eps)

    _fit(unet, "unet", settings.unet_lr, settings.unet_steps, settings.log_every, batch_loss)

def pretrain(settings: PretrainSettings) -> Path:
    """Render the data, pretrain the VAE then the UNet, and save the checkpoint to ``settings.out``."""
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    parts = build_tiny_components(settings.seed, settings.unet_width)
    parts.text_encoder.requires_grad_(False)
    corpus = [(kind, settings.images) for kind in KINDS.values()]
    corpus += [(generic_kind(index), settings.generic_images) for index in range(settings.generic_layouts)]
    frames = render_frames(corpus, settings.size, settings.data_seed)
    print(f"rendered {len(frames.prompts)} frames of {settings.size} px", flush=True)
    pretrain_vae(parts, frames, settings, generator)
    parts.vae.requires_grad_(False)
    pretrain_unet(parts, frames, settings, generator)
    return save_tiny_sd(parts, settings.out)


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
    if settings.images * len(KINDS) + settings.generic_layouts * settings.generic_images < 1:
        parser.error("nothing to pretrain on: --images and --generic-layouts x --generic-images are 0")
    return settings


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    started = time.perf_counter()
    out = pretrain(_parse(argv))
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
