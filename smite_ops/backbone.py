"""Load a diffusers-format Stable Diffusion 1.x/2.x checkpoint (UNet, VAE, DDIM scheduler, text encoder).

``source`` may be

- a local folder in diffusers layout (``unet/``, ``vae/``, ``scheduler/``, optional ``text_encoder/`` and
  ``tokenizer/``),
- an fsspec URL (``file://``, ``memory://``, ``s3://``, ``gs://``, ...): the needed files are copied once
  into a local cache folder (``cache_dir``, default ``$SMITE_CACHE/backbones`` or
  ``~/.cache/smite/backbones``), keyed by the URL and the remote file sizes,
- a Hugging Face hub id (``stabilityai/stable-diffusion-2-1-base``), resolved from the local HF cache
  unless ``allow_download=True``.

Every component then goes through the stock ``from_pretrained`` of diffusers / transformers. Only the
non-variant safetensors weights (or ``.bin`` when a folder has no safetensors) are used. Problems with
the checkpoint raise :class:`BackboneError`, a one-line ``ValueError`` naming the missing file or the
failing component.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from fsspec.implementations.local import LocalFileSystem
from huggingface_hub import snapshot_download

from smite_ops.errors import InputError

_MODEL_COMPONENTS = ("unet", "vae", "scheduler")
_TEXT_COMPONENTS = ("text_encoder", "tokenizer")
_CONFIG_NAMES = {
    "unet": "config.json",
    "vae": "config.json",
    "scheduler": "scheduler_config.json",
    "text_encoder": "config.json",
    "tokenizer": "tokenizer_config.json",
}
_WEIGHTED = ("unet", "vae", "text_encoder")
_HASHED = ("unet", "vae")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class BackboneError(InputError):
    """A checkpoint could not be found or loaded; the message names the source and the problem."""


@dataclass
class Backbone:
    """A loaded Stable Diffusion backbone. All modules are in eval mode with ``requires_grad=False``.

    ``content_hash`` is ``"sha256:<hex>"`` over the UNet and VAE weight files (name and bytes), so it
    identifies the weights whatever the source and does not depend on ``with_text_encoder``.
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: DDIMScheduler
    text_encoder: torch.nn.Module | None
    tokenizer: Any | None
    source: str
    root: Path
    content_hash: str
    device: torch.device
    dtype: torch.dtype

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each axis (8 for Stable Diffusion)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def default_device() -> torch.device:
    """The first CUDA device when one is available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA devices that support it, float16 on other CUDA devices, float32 elsewhere."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def weight_file_names(names: list[str]) -> list[str]:
    """The weight files ``from_pretrained`` uses among a component folder's file ``names``.

    Non-variant safetensors files (``model.safetensors`` or shards ``model-00001-of-00002.safetensors``)
    are preferred; ``.bin`` files are used only when there are no safetensors. Variant files such as
    ``model.fp16.safetensors`` are ignored.
    """
    for suffix in _WEIGHT_SUFFIXES:
        chosen = sorted(n for n in names if n.endswith(suffix) and "." not in n.removesuffix(suffix))
        if chosen:
            return chosen
    return []


def _wanted_files(names: list[str]) -> list[str]:
    """The files of a component folder that loading needs: configs, vocabularies and the chosen weights."""
    weights = weight_file_names(names)
    skipped = (*_WEIGHT_SUFFIXES, ".ckpt", ".pt", ".msgpack", ".onnx", ".h5")
    return [n for n in names if n in weights or not n.endswith(skipped)]


def _components(with_text_encoder: bool) -> tuple[str, ...]:
    return _MODEL_COMPONENTS + (_TEXT_COMPONENTS if with_text_encoder else ())


def _check_complete(root: str, files: dict[str, list[str]]) -> None:
    """Raise BackboneError naming the first missing config or weight file.

    ``files`` maps each needed component to the file names in its folder under ``root`` (a local path
    or a URL, only used in the message).
    """
    for component, names in files.items():
        config = _CONFIG_NAMES[component]
        if config not in names:
            raise BackboneError(f"{root}/{component}/{config} not found (incomplete diffusers checkpoint)")
        if component in _WEIGHTED and not weight_file_names(names):
            raise BackboneError(
                f"{root}/{component}: no weight file (*.safetensors or *.bin) found (incomplete diffusers checkpoint)"
            )


def _local_files(root: Path, components: tuple[str, ...]) -> dict[str, list[str]]:
    return {c: [p.name for p in (root / c).iterdir()] if (root / c).is_dir() else [] for c in components}


def _fetch_fsspec(url: str, components: tuple[str, ...], cache_dir: Path) -> Path:
    """Copy the needed files of a checkpoint folder at an fsspec ``url`` into the cache; return the copy."""
    try:
        fs, root = fsspec.core.url_to_fs(url)
        if isinstance(fs, LocalFileSystem):
            return Path(root)
        sizes: dict[str, dict[str, int]] = {}
        for component in components:
            entries = fs.ls(f"{root}/{component}", detail=True) if fs.isdir(f"{root}/{component}") else []
            sizes[component] = {Path(e["name"]).name: int(e.get("size") or 0) for e in entries if e["type"] == "file"}
    except (OSError, ValueError, ImportError) as exc:
        raise BackboneError(f"{url}: cannot list checkpoint folder ({exc})") from exc
    _check_complete(url.rstrip("/"), {c: list(files) for c, files in sizes.items()})
    listing = {f"{c}/{name}": files[name] for c, files in sizes.items() for name in _wanted_files(list(files))}
    key = hashlib.sha256(repr((url, sorted(listing.items()))).encode()).hexdigest()[:20]
    target = cache_dir / key
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        for rel in listing:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}", str(staging / rel))
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if target.is_dir():  # another process finished the same copy first
            return target
        raise BackboneError(f"{url}: copying the checkpoint failed ({exc})") from exc
    return target


def _fetch_hub(repo_id: str, components: tuple[str, ...], allow_download: bool) -> Path:
    """Resolve a hub id to its snapshot folder in the HF cache (downloading only if allowed)."""
    patterns = [f"{c}/*.{ext}" for c in components for ext in ("json", "txt", "safetensors", "model")]
    try:
        folder = snapshot_download(
            repo_id,
            local_files_only=not allow_download,
            allow_patterns=[*patterns, "model_index.json"],
            ignore_patterns=["*.fp16.*", "*.non_ema.*", "*.ema.*"],
        )
    except Exception as exc:  # hub errors come in many classes; all mean "not available"
        hint = "" if allow_download else " (not in the local Hugging Face cache; allow_download=False)"
        raise BackboneError(f"{repo_id}: not a local folder and not loadable from the hub{hint}") from exc
    return Path(str(folder))


def resolve_source(
    source: str,
    *,
    with_text_encoder: bool = False,
    allow_download: bool = False,
    cache_dir: str | Path | None = None,
) -> Path:
    """Return a local diffusers folder for ``source`` (folder, fsspec URL or hub id); see module doc."""
    components = _components(with_text_encoder)
    if "://" in source:
        default_cache = Path(os.environ.get("SMITE_CACHE", Path.home() / ".cache" / "smite")) / "backbones"
        root = _fetch_fsspec(source, components, Path(cache_dir) if cache_dir else default_cache)
    elif Path(source).is_dir():
        root = Path(source)
    elif Path(source).exists():
        raise BackboneError(f"{source}: is a file, expected a diffusers checkpoint folder")
    elif source.count("/") != 1 or source.startswith((".", "~", "/")) or "\\" in source:
        raise BackboneError(f"{source}: no such checkpoint folder")
    else:
        root = _fetch_hub(source, components, allow_download)
    if not root.is_dir():
        raise BackboneError(f"{source}: checkpoint folder {root} not found")
    _check_complete(str(root), _local_files(root, components))
    return root


def content_hash(root: Path) -> str:
    """``"sha256:<hex>"`` over the names and SHA-256 digests of the UNet and VAE weight files."""
    lines = []
    for component in _HASHED:
        names = [p.name for p in (root / component).iterdir()]
        for name in weight_file_names(names):
            with open(root / component / name, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            lines.append(f"{component}/{name}\t{digest}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def _load(root: Path, component: str, loader: Any, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` for one component, turning library errors into BackboneError."""
    try:
        return loader.from_pretrained(str(root), subfolder=component, local_files_only=True, **kwargs)
    except Exception as exc:  # diffusers/transformers raise OSError, ValueError, KeyError, SafetensorError...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"{root / component}: cannot load {component} ({first_line})") from exc


def _load_text(root: Path, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    # Imported here: transformers is slow to import and only training needs the text encoder.
    from transformers import CLIPTextModel, CLIPTokenizer

    return _load(root, "text_encoder", CLIPTextModel, torch_dtype=dtype), _load(root, "tokenizer", CLIPTokenizer)


def load_backbone(
    source: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    with_text_encoder: bool = False,
    allow_download: bool = False,
    cache_dir: str | Path | None = None,
) -> Backbone:
    """Load UNet, VAE, DDIM scheduler (and optionally CLIP text encoder + tokenizer) from ``source``.

    ``device`` defaults to :func:`default_device`, ``dtype`` to :func:`default_dtype` of that device
    (bf16/fp16 on CUDA, fp32 on CPU). The scheduler is a ``DDIMScheduler`` built from the checkpoint's
    scheduler config, whatever scheduler class the checkpoint names. The text encoder is only needed to
    initialise learned tokens at training time. Raises :class:`BackboneError` on any missing file or
    load failure.
    """
    root = resolve_source(
        source, with_text_encoder=with_text_encoder, allow_download=allow_download, cache_dir=cache_dir
    )
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    unet = _load(root, "unet", UNet2DConditionModel, torch_dtype=dtype)
    vae = _load(root, "vae", AutoencoderKL, torch_dtype=dtype)
    scheduler = _load(root, "scheduler", DDIMScheduler)
    if unet.config.in_channels != vae.config.latent_channels:
        raise BackboneError(
            f"{source}: UNet expects {unet.config.in_channels} input channels but the VAE has "
            f"{vae.config.latent_channels} latent channels"
        )
    text_encoder, tokenizer = _load_text(root, dtype) if with_text_encoder else (None, None)
    if text_encoder is not None and text_encoder.config.hidden_size != unet.config.cross_attention_dim:
        raise BackboneError(
            f"{source}: text encoder width {text_encoder.config.hidden_size} does not match the UNet's "
            f"cross_attention_dim {unet.config.cross_attention_dim}"
        )
    modules = [unet, vae] + ([text_encoder] if text_encoder is not None else [])
    for module in modules:
        module.to(device).eval().requires_grad_(False)
    return Backbone(
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        source=source,
        root=root,
        content_hash=content_hash(root),
        device=device,
        dtype=dtype,
    )
