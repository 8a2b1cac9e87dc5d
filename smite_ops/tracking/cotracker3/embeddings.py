"""CoTracker3 input encodings: the sin/cos time table and the Fourier motion features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NUM_FREQUENCIES = 10
MOTION_DIM = 4 + 2 * 4 * NUM_FREQUENCIES
"""84: the 4 raw motion values, then 40 sines and 40 cosines."""


def sincos_time_table(length: int, dim: int) -> torch.Tensor:
    """``(1, length, dim)`` float32 table: ``sin(p w_k)`` in the first half, ``cos(p w_k)`` in the second.

    ``w_k = 10000^(-k / (dim / 2))``, computed in float64.
    """
    half = dim // 2
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / (dim / 2.0))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[None].to(torch.float32)


def resample_time_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample ``(1, L, D)`` to ``(length, D)`` along time (align_corners=False)."""
    if table.shape[1] == length:
        return table[0]
    return F.interpolate(table.transpose(1, 2), size=length, mode="linear")[0].T


def motion_encoding(coords: torch.Tensor, normaliser: tuple[float, float]) -> torch.Tensor:
    """Fourier-encode forward/backward frame-to-frame displacements.

    Args:
        coords: ``(B, T, N, 2)`` track positions ``(x, y)`` in feature units.
        normaliser: ``(w, h)`` divisor of the displacements (model resolution / stride).

    Returns:
        ``(B, T, N, 84)``: ``[fwd_x, fwd_y, bwd_x, bwd_y]``, then ``sin(2^k m_c)`` and
        ``cos(2^k m_c)`` for ``k = 0..9``, each ordered ``4k + c``.
    """
    zero = torch.zeros_like(coords[:, :1])
    forward = torch.cat([coords[:, :-1] - coords[:, 1:], zero], dim=1)
    backward = torch.cat([zero, coords[:, 1:] - coords[:, :-1]], dim=1)
    scale = coords.new_tensor(normaliser)
    motion = torch.cat([forward / scale, backward / scale], dim=-1)
    freqs = 2.0 ** torch.arange(NUM_FREQUENCIES, device=coords.device, dtype=coords.dtype)
    products = (motion[..., None, :] * freqs[:, None]).flatten(-2)
    # cos as a phase-shifted sine: this is how the reference rounds, so conformance needs it.
    return torch.cat([motion, products.sin(), (products + math.pi / 2).sin()], dim=-1)
