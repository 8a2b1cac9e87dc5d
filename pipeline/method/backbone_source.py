"""Which backbone a job uses: the name in ``model.base`` resolved to a loadable source, and the dtype."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.config import ModelConfig, RuntimeConfig
from smite_ops.backbone import Backbone, default_device, default_dtype, load_backbone

TINY_BACKBONE = Path(__file__).resolve().parent.parent / "assets" / "tiny-sd"
"""The embedded tiny SD-shaped backbone (diffusers format), used by ``configs/tiny.yaml`` and the demo."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def backbone_source(base: str) -> str:
    """``tiny`` -> the embedded tiny backbone's folder; anything else (hub id, folder, URL) unchanged."""
    return str(TINY_BACKBONE) if base == "tiny" else base


def job_device(runtime: RuntimeConfig) -> torch.device:
    """The device a job runs on: ``runtime.device``, with ``auto`` = CUDA when available."""
    return default_device() if runtime.device == "auto" else torch.device(runtime.device)


def load_job_backbone(
    model: ModelConfig, runtime: RuntimeConfig, *, with_text_encoder: bool = False, for_training: bool = False
) -> Backbone:
    """Load the backbone a job configuration names.

    Training keeps float32 weights (the trained projections need full-precision Adam updates) and relies on
    autocast on GPUs; inference uses ``model.dtype`` (``auto``: bf16/fp16 on CUDA, fp32 on CPU).
    """
    device = job_device(runtime)
    if for_training:
        dtype = torch.float32
    else:
        dtype = default_dtype(device) if model.dtype == "auto" else _DTYPES[model.dtype]
    return load_backbone(
        backbone_source(model.base), device=device, dtype=dtype, with_text_encoder=with_text_encoder,
        allow_download=model.allow_download,
    )
