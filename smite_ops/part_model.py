"""The learned part model: the artifact of training, and what segmentation loads (ARCHITECTURE.md §3).

A part model is a folder (local path or fsspec URL) with two files:

``weights.safetensors``
    ``conditioning`` ``(L, D)``: the final text conditioning (learned tokens already spliced in), so that
    inference needs no text encoder; ``tokens`` ``(P - 1, D)``; and ``unet.<parameter name>`` for every UNet
    parameter that training changed (the cross-attention K/V projections by default).
``manifest.json``
    format version, base model (source and content hash), part names in order, working resolution, the
    method's hyper-parameters, package version and training facts (epoch, validation mIoU).

Loading validates the manifest against the weights (a part list of ``P`` unique names with ``background``
first for ``P - 1`` trained tokens, an integer resolution, the listed UNet parameters present) and refuses a
folder whose base model or part list does not match what the caller expects; every problem is one line.
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
MODEL_ID_HASH_DIGITS = 12


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
        """A short id for outputs: 12 hex digits of the base hash (``sha256:`` dropped), then 12 of the weights'."""
        digest = hashlib.sha256()
        for name in sorted(self.unet_weights):
            digest.update(name.encode())
            digest.update(self.unet_weights[name].detach().float().cpu().numpy().tobytes())
        digest.update(self.conditioning.detach().float().cpu().numpy().tobytes())
        base_digits = self.base_hash.rpartition(":")[2][:MODEL_ID_HASH_DIGITS]
        return f"{base_digits}-{digest.hexdigest()[:MODEL_ID_HASH_DIGITS]}"

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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PartModelError(f"{manifest_path}: not valid JSON ({err.__class__.__name__})") from None
    fields = _manifest_fields(manifest, manifest_path)
    try:
        tensors = load_safetensors(fs.cat_file(weights_path))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise PartModelError(f"{weights_path}: unreadable weights ({' '.join(str(err).split())})") from None
    model = PartModel(**fields, **_weights_fitting(tensors, fields["part_names"], manifest, weights_path))
    model.check_fits(expect_base_hash, expect_parts, where=manifest_path)
    return model


def _manifest_fields(manifest: Any, where: str) -> dict[str, Any]:
    """The manifest's part names, base model, resolution and info, each checked for type and form."""
    if not isinstance(manifest, dict):
        raise PartModelError(f"{where}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise PartModelError(f"{where}: unsupported format {manifest.get('format')!r}, expected {FORMAT}")
    parts = manifest.get("parts")
    if not (isinstance(parts, list) and len(parts) >= 2 and all(isinstance(p, str) and p for p in parts)):
        raise PartModelError(f"{where}: 'parts' must list at least two part names, got {parts!r}")
    if parts[0] != "background" or len(set(parts)) != len(parts):
        raise PartModelError(f"{where}: 'parts' must be unique names with 'background' first, got {parts}")
    base = manifest.get("base_model")
    if not (isinstance(base, dict) and all(isinstance(base.get(k), str) for k in ("source", "content_hash"))):
        raise PartModelError(f"{where}: 'base_model' must hold the strings 'source' and 'content_hash'")
    resolution = manifest.get("resolution")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
        raise PartModelError(f"{where}: 'resolution' must be a positive integer (pixels), got {resolution!r}")
    info = manifest.get("info", {})
    if not isinstance(info, dict):
        raise PartModelError(f"{where}: 'info' must be a JSON object")
    return {"part_names": parts, "base_model": base["source"], "base_hash": base["content_hash"],
            "resolution": resolution, "info": info}


def _weights_fitting(
    tensors: dict[str, Tensor], parts: list[str], manifest: dict[str, Any], where: str
) -> dict[str, Any]:
    """The tensors of the weights file, checked against the manifest: ``P - 1`` tokens of the conditioning's width."""
    for key in ("conditioning", "tokens"):
        if key not in tensors:
            raise PartModelError(f"{where}: tensor {key!r} missing")
    conditioning, tokens = tensors["conditioning"], tensors["tokens"]
    if conditioning.ndim != 2 or tokens.ndim != 2 or tokens.shape[1] != conditioning.shape[1]:
        raise PartModelError(
            f"{where}: conditioning {tuple(conditioning.shape)} and tokens {tuple(tokens.shape)} "
            "must be (L, D) and (T, D)"
        )
    if tokens.shape[0] != len(parts) - 1:
        raise PartModelError(
            f"{where}: {tokens.shape[0]} trained part tokens, but the manifest lists {len(parts)} parts {parts} "
            f"(one token per part besides background)"
        )
    unet = {k[len(_UNET_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_UNET_PREFIX)}
    listed = manifest.get("trained_unet_parameters", sorted(unet))
    if listed != sorted(unet):
        raise PartModelError(f"{where}: UNet parameters {sorted(unet)} differ from the manifest's list {listed}")
    return {"conditioning": conditioning, "tokens": tokens, "unet_weights": unet}
