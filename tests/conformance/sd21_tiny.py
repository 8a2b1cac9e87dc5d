"""A tiny random checkpoint with Stable Diffusion 2.1-base's structure, shared by the official code and ours.

Both the vector generator (``tools/reference_vectors``, diffusers 0.19) and the conformance tests (this
project's diffusers) build it with :func:`write_sd21_tiny`: the modules come from the configs below and
every state-dict tensor is then overwritten from one seeded generator in key order, so the weights do not
depend on either library's initialisation. :func:`weight_digest` fingerprints the result; the vectors store
it and the tests check it before comparing anything.

Structure kept from SD 2.1-base (``stabilityai/stable-diffusion-2-1-base``): the same block types
(CrossAttnDownBlock2D x3 + DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D + CrossAttnUpBlock2D x3), two
resnets per down block, the attention head layout ``[5, 10, 20, 20]`` heads, linear projections in the
transformers, the cross-attention / first-block width ratio 3.2 (1024 / 320 there, 64 / 20 here), 10
channels per group-norm group at the first level, the VAE's 4 blocks and 4 latent channels with scaling
0.18215, a CLIP text encoder of width 64, and the scheduler config of SD 2.1-base (scaled-linear betas
0.00085..0.012, 1000 steps, epsilon prediction as in the published 2.1-base config).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

SEED = 2025
CROSS_DIM = 64
TEXT_LENGTH = 77

UNET = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [20, 40, 80, 80],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": CROSS_DIM,
    "norm_num_groups": 2,
    "use_linear_projection": True,
    "upcast_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 32, 32, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}
SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def _fill(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Overwrite every state-dict tensor, in sorted key order, with seeded values of a sane scale."""
    state = module.state_dict()
    with torch.no_grad():
        for key in sorted(state):
            tensor = state[key]
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            if tensor.dim() >= 2:
                value = noise / max(tensor[0].numel(), 1) ** 0.5
            elif "norm" in key and key.endswith("weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
            tensor.copy_(value.to(tensor.dtype))


def weight_digest(module: torch.nn.Module) -> str:
    """sha256 over the sorted state dict (names and float32 bytes)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        if tensor.is_floating_point():
            digest.update(key.encode())
            digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _tokenizer_files(out: Path) -> None:
    """A CLIP tokenizer (vocab.json + merges.txt) over the byte-level alphabet: every prompt tokenizes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    alphabet = sorted(chr(c) for c in cs)
    symbols = [*alphabet, *(s + "</w>" for s in alphabet), "<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}))
    (out / "merges.txt").write_text("#version: 0.2\n")
    config = {"model_max_length": TEXT_LENGTH, "tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>",
              "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}
    (out / "tokenizer_config.json").write_text(json.dumps(config))


def write_sd21_tiny(out_dir: str | Path, bin_weights: bool = False) -> dict[str, str]:
    """Write the checkpoint folder; return ``{component: weight_digest}``.

    ``bin_weights`` also writes ``diffusion_pytorch_model.bin`` (the official 3D UNet loads only that).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out_dir)
    generator = torch.Generator().manual_seed(SEED)
    unet = UNet2DConditionModel(**UNET)
    vae = AutoencoderKL(**VAE)
    _tokenizer_files(out / "tokenizer")
    vocab = len(json.loads((out / "tokenizer" / "vocab.json").read_text()))
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=CROSS_DIM, intermediate_size=4 * CROSS_DIM, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TEXT_LENGTH, projection_dim=CROSS_DIM, hidden_act="gelu",
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0,
    ))
    digests = {}
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        _fill(module, generator)
        module.save_pretrained(out / name)
        digests[name] = weight_digest(module)
    if bin_weights:
        torch.save(unet.state_dict(), out / "unet" / "diffusion_pytorch_model.bin")
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return digests
