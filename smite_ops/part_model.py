"""The learned part model: the artifact of training, and what segmentation loads (ARCHITECTURE.md §3).

A part model is a folder (local path or fsspec URL) with two files:

``weights.safetensors``
    ``conditioning`` ``(L, D)``: the final text conditioning (learned tokens already spliced in), so that
    inference needs no text encoder; ``tokens`` ``(P - 1, D)``; and ``unet.<parameter name>`` for every UNet
    parameter that training changed (the cross-attention K/V projections by default).
``manifest.json``
    format version, base model (source and content hash), part names in order, working resolution, the
    method's hyper-parameters, package version and training facts (epoch, validation mIoU).

Loading refuses a folder whose base model or part list does not match what the caller expects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import fsspec
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from smite_ops.errors import InputError

FORMAT = "smite-part-model/1"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
_UNET_PREFIX = "unet."


class PartModelError(InputError):
    """A part model folder is missing, malformed, or does not fit the backbone or parts it is used with."""


def package_version() -> str:
    """The installed ``smite`` version, or ``unknown`` when running from an uninstalled tree."""
    try:
        return metadata.version("smite")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class PartModel:
    """Everything segmentation needs besides the backbone.

    Attributes:
        part_names: ``P`` class names, ``background`` first.
        base_model: the backbone's source (hub id or path) it was trained on.
        base_hash: content hash of that backbone's weights.
        resolution: working resolution in pixels.
        conditioning: ``(L, D)`` float32 text conditioning with the learned tokens in place.
        tokens: ``(P - 1, D)`` float32 learned token vectors.
        unet_weights: trained UNet parameters by their ``named_parameters`` name.
        info: hyper-parameters and training facts, stored in the manifest as they are.
    """

    part_names: list[str]
    base_model: str
    base_hash: str
    resolution: int
    conditioning: Tensor
    tokens: Tensor
    unet_weights: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """A short id for outputs: a prefix of the base hash and of a hash of the learned weights."""
        digest = hashlib.sha256()
        for name in sorted(self.unet_weights):
            digest.update(name.encode())
            digest.update(self.unet_weights[name].detach().float().cpu().numpy().tobytes())
        digest.update(self.conditioning.detach().float().cpu().numpy().tobytes())
        return f"{self.base_hash[:8]}-{digest.hexdigest()[:8]}"

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "base_model": {"source": self.base_model, "content_hash": self.base_hash},
            "parts": self.part_names,
            "resolution": self.resolution,
            "smite_version": package_version(),
            "trained_unet_parameters": sorted(self.unet_weights),
            "info": self.info,
        }

    def check_fits(
        self, base_hash: str | None = None, parts: list[str] | None = None, where: str = "part model"
    ) -> None:
        """Refuse a backbone (by content hash) or a part list other than the ones this model was trained for."""
        if base_hash is not None and base_hash != self.base_hash:
            raise PartModelError(
                f"{where}: trained on base model {self.base_model} ({self.base_hash[:12]}), "
                f"but the loaded backbone is {base_hash[:12]}"
            )
        if parts is not None and list(parts) != self.part_names:
            raise PartModelError(f"{where}: parts {self.part_names} differ from the expected {list(parts)}")

    def apply_to_unet(self, unet: nn.Module) -> None:
        """Copy the trained parameters into ``unet`` (names and shapes must match)."""
        params = dict(unet.named_parameters())
        for name, value in self.unet_weights.items():
            if name not in params or params[name].shape != value.shape:
                raise PartModelError(f"part model parameter {name} {tuple(value.shape)} does not fit this UNet")
            with torch.no_grad():
                params[name].copy_(value.to(params[name].dtype))


def save_part_model(model: PartModel, path: str) -> None:
    """Write ``model`` to the folder ``path``; the manifest is written last, so it marks a complete model."""
    fs, base = fsspec.core.url_to_fs(str(path))
    base = base.rstrip("/")
    fs.makedirs(base, exist_ok=True)
    tensors = {"conditioning": model.conditioning, "tokens": model.tokens}
    tensors |= {_UNET_PREFIX + name: value for name, value in model.unet_weights.items()}
    blob = save_safetensors({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()})
    fs.pipe_file(f"{base}/{WEIGHTS_FILE}", blob)
    fs.pipe_file(f"{base}/{MANIFEST_FILE}", (json.dumps(model.manifest(), indent=2) + "\n").encode())


def load_part_model(
    path: str, *, expect_base_hash: str | None = None, expect_parts: list[str] | None = None
) -> PartModel:
    """Read a part model folder and check it against the backbone and parts it will be used with.

    Raises:
        PartModelError: a missing or malformed file, a different base model, or a different part list.
    """
    fs, base = fsspec.core.url_to_fs(str(path))
    base = base.rstrip("/")
    manifest_path, weights_path = f"{base}/{MANIFEST_FILE}", f"{base}/{WEIGHTS_FILE}"
    for required in (manifest_path, weights_path):
        if not fs.exists(required):
            raise PartModelError(f"{required}: not found (is {path} a part model folder written by `smite train`?)")
    try:
        manifest = json.loads(fs.cat_file(manifest_path))
        if manifest.get("format") != FORMAT:
            raise PartModelError(f"{manifest_path}: unsupported format {manifest.get('format')!r}, expected {FORMAT}")
        tensors = load_safetensors(fs.cat_file(weights_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PartModelError(f"{manifest_path}: not valid JSON ({err.__class__.__name__})") from None
    except Exception as err:  # safetensors raises its own error types for corrupt files
        if isinstance(err, PartModelError):
            raise
        raise PartModelError(f"{weights_path}: unreadable weights ({err})") from None
    for key in ("conditioning", "tokens"):
        if key not in tensors:
            raise PartModelError(f"{weights_path}: tensor {key!r} missing")
    model = PartModel(
        part_names=list(manifest["parts"]),
        base_model=manifest["base_model"]["source"],
        base_hash=manifest["base_model"]["content_hash"],
        resolution=int(manifest["resolution"]),
        conditioning=tensors["conditioning"],
        tokens=tensors["tokens"],
        unet_weights={k[len(_UNET_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_UNET_PREFIX)},
        info=manifest.get("info", {}),
    )
    model.check_fits(expect_base_hash, expect_parts, where=manifest_path)
    return model
