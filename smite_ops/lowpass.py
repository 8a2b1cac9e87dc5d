"""Orthonormal 3D DCT-II over (frame, y, x) and the low-pass regulariser E_Reg (METHOD.md §6).

The transform is a product of one orthonormal DCT-II matrix per axis, applied with ``einsum``: the axes
are short (a window of at most a few dozen frames, 64 x 64 maps), so the matrices are tiny, the result is
exact up to rounding, differentiable by construction, runs on any device and dtype, and the inverse is the
transposed product. An FFT-based DCT would only pay off for axes of hundreds of samples.

Filter ``H_l`` (:func:`lowpass_mask`): keep the lowest ``max(1, floor(threshold * n))`` frequency indices
of an axis. ``spatial`` (the reference) filters y and x and keeps every temporal frequency;
``spatiotemporal`` (the paper's 3D low-pass) also filters the frame axis.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

from smite_ops.was import MapShapeError

LowpassMode = Literal["spatial", "spatiotemporal"]


@lru_cache(maxsize=64)
def _dct_matrix_cached(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    index = torch.arange(n, dtype=torch.float64)
    matrix = torch.cos(math.pi * (2 * index[None, :] + 1) * index[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(device=device, dtype=dtype)


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Orthonormal DCT-II matrix ``D`` ``(n, n)``: ``X = D @ x`` is ``scipy.fft.dct(x, norm="ortho")``.

    ``D[k, i] = sqrt(2 / n) * c_k * cos(pi * (2 i + 1) * k / (2 n))`` with ``c_0 = 1 / sqrt(2)``, else 1;
    ``D @ D.T`` is the identity. Computed in float64, returned in ``dtype`` (cached per size, dtype, device).
    """
    if n < 1:
        raise MapShapeError(f"dct_matrix: size must be >= 1, got {n}")
    return _dct_matrix_cached(n, dtype, torch.device(device or "cpu"))


def _check_volume(x: Tensor, what: str) -> None:
    if x.dim() < 3:
        raise MapShapeError(f"{what}: expected (..., frames, height, width), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise MapShapeError(f"{what}: expected a floating tensor, got {x.dtype}")


def _transform(x: Tensor, inverse: bool) -> Tensor:
    frames, height, width = x.shape[-3:]
    mats = [dct_matrix(n, x.dtype, x.device) for n in (frames, height, width)]
    if inverse:
        mats = [m.T for m in mats]
    return torch.einsum("...fyx,af,by,cx->...abc", x, *mats)


def dct_3d(x: Tensor) -> Tensor:
    """Orthonormal DCT-II over the last three axes ``(..., F, H, W)``; same shape and dtype, differentiable.

    Equals ``scipy.fft.dctn(x, type=2, axes=(-3, -2, -1), norm="ortho")``.
    """
    _check_volume(x, "dct_3d")
    return _transform(x, inverse=False)


def idct_3d(coefficients: Tensor) -> Tensor:
    """Inverse of :func:`dct_3d` (the orthonormal DCT-III), over the last three axes ``(..., F, H, W)``."""
    _check_volume(coefficients, "idct_3d")
    return _transform(coefficients, inverse=True)


def _kept(n: int, threshold: float) -> int:
    return max(1, math.floor(threshold * n))


def lowpass_mask(
    frames: int,
    height: int,
    width: int,
    threshold: float,
    mode: LowpassMode = "spatial",
    temporal_threshold: float | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Binary DCT filter ``H_l`` of shape ``(frames, height, width)``, bool.

    A coefficient ``(f, v, u)`` is kept when ``v < max(1, floor(threshold * height))`` and
    ``u < max(1, floor(threshold * width))``; in ``spatiotemporal`` mode also when
    ``f < max(1, floor(temporal_threshold * frames))`` (``temporal_threshold`` defaults to ``threshold``).
    The reference (``spatial``, ``threshold=0.4``, 64 x 64) keeps the 25 x 25 lowest spatial frequencies.
    """
    if not 0 < threshold <= 1:
        raise MapShapeError(f"lowpass_mask: threshold must be in (0, 1], got {threshold}")
    if mode not in ("spatial", "spatiotemporal"):
        raise MapShapeError(f"lowpass_mask: mode must be 'spatial' or 'spatiotemporal', got {mode!r}")
    temporal = threshold if temporal_threshold is None else temporal_threshold
    if not 0 < temporal <= 1:
        raise MapShapeError(f"lowpass_mask: temporal_threshold must be in (0, 1], got {temporal}")
    keep_f = frames if mode == "spatial" else _kept(frames, temporal)
    f = torch.arange(frames, device=device)[:, None, None] < keep_f
    v = torch.arange(height, device=device)[None, :, None] < _kept(height, threshold)
    u = torch.arange(width, device=device)[None, None, :] < _kept(width, threshold)
    return f & v & u


def lowpass(x: Tensor, mask: Tensor) -> Tensor:
    """Low-pass filter ``(..., F, H, W)`` volumes: ``idct_3d(mask * dct_3d(x))`` with a ``(F, H, W)`` mask."""
    _check_volume(x, "lowpass")
    if tuple(mask.shape) != tuple(x.shape[-3:]):
        raise MapShapeError(f"lowpass: mask {tuple(mask.shape)} does not match volumes {tuple(x.shape)}")
    return idct_3d(dct_3d(x) * mask.to(x.dtype))


def lowpass_energy(maps: Tensor, reference: Tensor, mask: Tensor, normaliser: int | None = None) -> Tensor:
    """E_Reg: L1 distance of the low-passed DCT spectra of class maps and their reference (§6).

    ``E = sum | H ⊙ DCT3D(S) - H ⊙ DCT3D(S_ref) | / normaliser`` per class over (frame, y, x).

    Args:
        maps: ``(F, P, H, W)`` class maps ``S`` (e.g. the inference-variant WAS), differentiable.
        reference: ``(F, P, H, W)`` reference maps ``S_ref`` (no gradient needed).
        mask: ``(F, H, W)`` bool filter ``H`` from :func:`lowpass_mask`.
        normaliser: divisor; ``None`` = ``maps.numel()``, the reference's mean over all ``P*F*H*W``
            coefficients, zeros included.

    Returns:
        Scalar in ``maps``' dtype.
    """
    if maps.dim() != 4 or maps.shape != reference.shape:
        raise MapShapeError(
            f"lowpass_energy: maps {tuple(maps.shape)} and reference {tuple(reference.shape)} must both be "
            "the same (F, P, H, W)"
        )
    frames, _, height, width = maps.shape
    if tuple(mask.shape) != (frames, height, width):
        raise MapShapeError(f"lowpass_energy: mask {tuple(mask.shape)} must be {(frames, height, width)}")
    difference = dct_3d((maps - reference.to(maps.dtype)).movedim(1, 0))  # (P, F, H, W); the DCT is linear
    kept = difference * mask.to(maps.dtype)
    return kept.abs().sum() / (maps.numel() if normaliser is None else normaliser)
