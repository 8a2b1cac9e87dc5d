"""Loading CoTracker3 offline weights (``.pth`` or ``.safetensors``, local path or fsspec URL)."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import fsspec
import safetensors.torch
import torch

from smite_ops.errors import InputError
from smite_ops.tracking.cotracker3.model import CoTracker3Offline

_SHOWN = 3
"""How many offending keys an error message lists."""


class CheckpointError(InputError):
    """A checkpoint file that is missing, unreadable, or not a CoTracker3 offline state dict."""


def _read_bytes(path_or_url: str) -> bytes:
    try:
        with fsspec.open(path_or_url, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path_or_url}: checkpoint file not found") from None
    except (OSError, ValueError, ImportError) as exc:
        raise CheckpointError(f"{path_or_url}: cannot open checkpoint ({exc})") from None


def _deserialise(path_or_url: str, data: bytes) -> object:
    is_safetensors = urlsplit(path_or_url).path.endswith(".safetensors")
    kind = "safetensors" if is_safetensors else "PyTorch (weights_only)"
    try:
        if is_safetensors:
            return safetensors.torch.load(data)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # any parser failure becomes one line naming the file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path_or_url}: not a readable {kind} checkpoint ({reason})") from None


def read_state_dict(path_or_url: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a checkpoint file.

    Accepts a bare state dict or one wrapped as ``{"model": state_dict, ...}``; a leading
    ``module.`` is stripped from keys.

    Args:
        path_or_url: local path or fsspec URL; ``*.safetensors`` is read with safetensors, anything
            else with ``torch.load(weights_only=True)``.

    Returns:
        Key -> CPU tensor.

    Raises:
        CheckpointError: missing or unreadable file, or content that is not a dict of tensors.
    """
    content = _deserialise(path_or_url, _read_bytes(path_or_url))
    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        content = content["model"]
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"{path_or_url}: checkpoint does not hold a state dict of tensors")
    return {str(key).removeprefix("module."): value for key, value in content.items()}


def _mismatch(path_or_url: str, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key} {tuple(found[key].shape)} != {tuple(value.shape)}"
        for key, value in expected.items()
        if key in found and found[key].shape != value.shape
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:_SHOWN])}{', ...' if len(items) > _SHOWN else ''}"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes))
        if items
    ]
    return f"{path_or_url}: not a CoTracker3 offline checkpoint; " + "; ".join(problems) if problems else ""


def load_cotracker3(path_or_url: str, device: torch.device | str | None = None) -> CoTracker3Offline:
    """Load the offline CoTracker3 model from a checkpoint (e.g. the official ``scaled_offline.pth``).

    Args:
        path_or_url: local path or fsspec URL of a ``.pth`` / ``.safetensors`` file.
        device: where to put the model (default: CPU).

    Returns:
        The model in eval mode, weights loaded strictly (all 188 entries incl. ``time_emb``).

    Raises:
        CheckpointError: (a ``ValueError``) one line naming the file and the problem, e.g. the
            first missing / unexpected keys.
    """
    state_dict = read_state_dict(path_or_url)
    model = CoTracker3Offline()
    problem = _mismatch(path_or_url, model.state_dict(), state_dict)
    if problem:
        raise CheckpointError(problem)
    model.load_state_dict(state_dict, strict=True)
    return model.eval().to(device)
