"""A tiny Stable-Diffusion-shaped checkpoint in real diffusers format, for CPU tests and the demo.

The layout mirrors an SD 2.x checkpoint (``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``,
``text_encoder/``, ``tokenizer/``) so it loads back through the same ``from_pretrained`` code paths
as a real one (see :func:`smite_ops.backbone.load_backbone`):

- UNet: CrossAttnDownBlock2D x3 + DownBlock2D, mid block, UpBlock2D + CrossAttnUpBlock2D x3 (as SD),
  channels 32/48/48/48, 2 resnets per down block (3 per up block), head dim 16, linear projections,
  cross-attention dim 32.
- VAE: 4 encoder/decoder blocks (8x down-sampling), 4 latent channels, scaling factor 0.18215.
- DDIM scheduler config with SD's scaled-linear betas 0.00085..0.012 over 1000 steps.
- CLIP text encoder (hidden size 32, 2 layers) with a byte-level tokenizer of 77 tokens whose vocabulary
  is just the 256 byte symbols (no merges), so every prompt word becomes several tokens.

:func:`write_tiny_sd` writes randomly initialised weights (the libraries' default initialisation under a
seed: the same seed writes byte-identical weight files). Random weights give near-uniform attention, so the
checkpoint the demo and the tiny configuration use is pretrained on synthetic frames by
:mod:`pipeline.training.pretrain_tiny`, as Stable Diffusion is pretrained in production.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TINY_CROSS_ATTENTION_DIM = 32
TINY_TEXT_LENGTH = 77
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def tiny_unet_config(width: int = 1) -> dict[str, object]:
    """Config of the tiny SD-shaped ``UNet2DConditionModel`` (~2.0 M parameters, 4 latent channels).

    ``width`` multiplies every block's channels and heads (head dim stays 16): about ``width**2`` times the
    parameters.
    """
    return {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "block_out_channels": [32 * width, 48 * width, 48 * width, 48 * width],
        "layers_per_block": 2,
        "attention_head_dim": [2 * width, 3 * width, 3 * width, 3 * width],  # legacy name: heads; head dim 16
        "cross_attention_dim": TINY_CROSS_ATTENTION_DIM,
        "norm_num_groups": 8,
        "use_linear_projection": True,
    }


def tiny_vae_config() -> dict[str, object]:
    """Config of the tiny ``AutoencoderKL``: 3 channels <-> 4 latent channels, 8x spatial down-sampling."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [16, 32, 32, 32],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 128,
        "scaling_factor": 0.18215,
    }


def sd_ddim_scheduler() -> DDIMScheduler:
    """DDIM scheduler with Stable Diffusion's training schedule (METHOD.md §2.1)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def _byte_level_tokenizer() -> CLIPTokenizer:
    """CLIP tokenizer whose vocabulary is the byte-level alphabet (word-final and inner forms)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols = [_BOS, _EOS, *alphabet, *(s + "</w>" for s in alphabet)]
    return CLIPTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[], model_max_length=TINY_TEXT_LENGTH)


def _text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_CROSS_ATTENTION_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=TINY_TEXT_LENGTH,
        projection_dim=TINY_CROSS_ATTENTION_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


@dataclass
class TinyComponents:
    """The trainable parts of a tiny checkpoint (the scheduler is fixed: :func:`sd_ddim_scheduler`)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer


def build_tiny_components(seed: int = 0, unet_width: int = 1) -> TinyComponents:
    """Fresh tiny modules with the libraries' default initialisation, drawn under ``torch.manual_seed(seed)``.

    ``unet_width`` widens the UNet (:func:`tiny_unet_config`); the VAE and text encoder stay as they are.

    The global RNG state is restored afterwards; the same seed gives identical weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config(unet_width))
        vae = AutoencoderKL(**tiny_vae_config())
        tokenizer = _byte_level_tokenizer()
        text_encoder = _text_encoder(tokenizer)
    return TinyComponents(unet, vae, text_encoder, tokenizer)


def save_tiny_sd(components: TinyComponents, out_dir: str | Path) -> Path:
    """Save tiny components as a diffusers-format checkpoint folder (safetensors) and return its path.

    The folder holds ``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``, ``text_encoder/`` and
    ``tokenizer/``, loadable with :func:`smite_ops.backbone.load_backbone`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    components.unet.save_pretrained(out / "unet")
    components.vae.save_pretrained(out / "vae")
    components.text_encoder.save_pretrained(out / "text_encoder")
    components.tokenizer.save_pretrained(out / "tokenizer")
    sd_ddim_scheduler().save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "tiny",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def write_tiny_sd(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised tiny SD-shaped checkpoint to ``out_dir`` and return that path.

    Latents are ``(4, H/8, W/8)`` for an ``(3, H, W)`` image; the UNet runs in milliseconds on CPU at 64x64 or
    128x128 pixels. Deterministic for a seed. The pretrained checkpoint the tiny job configuration uses is
    made from these weights by :mod:`pipeline.training.pretrain_tiny`.
    """
    return save_tiny_sd(build_tiny_components(seed), out_dir)
