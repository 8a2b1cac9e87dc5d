"""Weighted Accumulated Self-attention (WAS) maps from captured attention queries and keys.

Pure, differentiable PyTorch functions (METHOD.md §2.4, §2.6, §2.7); they work on any device and
floating dtype. Captured tensors follow the attention-capture format:

* cross-attention layer: ``q`` of shape ``(F, heads, N_l, head_dim)`` with ``N_l = h_l * w_l``
  and ``k`` of shape ``(F, heads, L, head_dim)`` (``L`` text tokens, 77 in Stable Diffusion);
* self-attention layer (all at the map resolution ``h x w``): ``q`` and ``k`` of shape
  ``(F, heads, N, head_dim)`` with ``N = h * w``, one intra-frame attention per frame.

The averaged intra-frame self-attention ``Ā`` (``N x N`` per frame) is never materialised: applying
it to class maps is attention with those maps as values, so it runs through
:func:`torch.nn.functional.scaled_dot_product_attention`, optionally in chunks of query rows so that
forward memory grows linearly with ``N`` even when only the plain (math) kernel is available.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

CrossLayer = tuple[Tensor, Tensor, tuple[int, int]]
SelfLayer = tuple[Tensor, Tensor]

RANGE_EPS = 1e-6
"""Smallest min-max range used by the WAS re-mapping (§2.6 step 5; guards METHOD.md §10.2)."""


class MapShapeError(ValueError):
    """An attention tensor, map or mask has a shape, dtype or value range the method cannot use."""


def _check_layers_present(layers: Sequence[object], what: str) -> None:
    if len(layers) == 0:
        raise MapShapeError(f"{what}: at least one captured layer is required")


def _check_qk(q: Tensor, k: Tensor, what: str) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise MapShapeError(
            f"{what}: q and k must be (F, heads, tokens, head_dim), got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise MapShapeError(f"{what}: q {tuple(q.shape)} and k {tuple(k.shape)} disagree on frames, heads or head_dim")


def _layer_logits(
    q: Tensor, k: Tensor, hw: tuple[int, int], num_classes: int, out_size: int, scale: float | None, what: str
) -> Tensor:
    """One cross-attention layer's head-averaged class logits, resized: ``(F, P, out_size, out_size)``."""
    _check_qk(q, k, what)
    h, w = hw
    if q.shape[2] != h * w:
        raise MapShapeError(f"{what}: q has {q.shape[2]} query tokens but (h, w) = ({h}, {w})")
    if k.shape[2] < num_classes:
        raise MapShapeError(f"{what}: k has {k.shape[2]} tokens, fewer than num_classes={num_classes}")
    layer_scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.matmul(q, k[:, :, :num_classes].transpose(-1, -2)) * layer_scale  # (F, H, N, P)
    maps = logits.mean(dim=1).transpose(1, 2).reshape(q.shape[0], num_classes, h, w)
    return F.interpolate(maps, size=(out_size, out_size), mode="bilinear", align_corners=False)


def cross_attention_logits(
    layers: Sequence[CrossLayer], num_classes: int, out_size: int, scale: float | None = None
) -> Tensor:
    """Average raw cross-attention logits of the class tokens over heads and layers (§2.4).

    Args:
        layers: per layer ``(q, k, (h, w))`` with ``q`` ``(F, heads, h*w, head_dim)`` and ``k``
            ``(F, heads, L, head_dim)``; heads and resolutions may differ between layers.
        num_classes: ``P``; token columns ``0..P-1`` are read (column 0 = background/BOS).
        out_size: side of the square output map in pixels (64 in the method).
        scale: logit scale; ``None`` means ``1 / sqrt(head_dim)`` (1/8 for Stable Diffusion).

    Returns:
        ``(F, P, out_size, out_size)`` raw scaled logits (no softmax) in ``q``'s dtype: per layer
        ``q k[:P]^T * scale`` is averaged over heads, resized bilinearly (``align_corners=False``)
        and then averaged over layers with equal weights. Bilinear resizing is linear, so averaging
        heads before resizing equals the reference's resize-then-average. Only the ``P`` needed
        token columns are ever computed.
    """
    _check_layers_present(layers, "cross_attention_logits")
    if num_classes < 1:
        raise MapShapeError(f"cross_attention_logits: num_classes must be >= 1, got {num_classes}")
    maps = [
        _layer_logits(q, k, hw, num_classes, out_size, scale, f"cross_attention_logits layer {index}")
        for index, (q, k, hw) in enumerate(layers)
    ]
    return sum(maps[1:], maps[0]) / len(maps)


def _layer_propagate(
    q: Tensor, k: Tensor, values: Tensor, scale: float | None, chunk_size: int | None, what: str
) -> Tensor:
    """One self-attention layer's head-averaged ``softmax(q k^T) V``: ``(F, N, P)`` in ``q``'s dtype."""
    _check_qk(q, k, what)
    frames, num_classes, num_pixels = values.shape
    if q.shape[0] != frames or q.shape[2] != num_pixels or k.shape[2] != num_pixels:
        raise MapShapeError(
            f"{what}: q {tuple(q.shape)} / k {tuple(k.shape)} do not match values (F={frames}, N={num_pixels})"
        )
    heads, head_dim = q.shape[1], q.shape[-1]
    layer_scale = head_dim**-0.5 if scale is None else scale
    v = F.pad(values.transpose(1, 2).to(q.dtype), (0, max(head_dim - num_classes, 0)))  # (F, N, >=P)
    v = v.unsqueeze(1).expand(frames, heads, num_pixels, v.shape[-1])
    rows = num_pixels if chunk_size is None else chunk_size
    chunks = [
        F.scaled_dot_product_attention(q[:, :, start : start + rows], k, v, scale=layer_scale)
        for start in range(0, num_pixels, rows)
    ]
    return torch.cat(chunks, dim=2)[..., :num_classes].mean(dim=1)


def propagate(
    self_layers: Sequence[SelfLayer],
    values: Tensor,
    scale: float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Apply the averaged intra-frame self-attention ``Ā`` to per-pixel class values (§2.6 step 3).

    ``W_c(p) = sum_j Ā(p, j) V_c(j)`` with ``Ā`` = mean over heads and layers of the row softmax of
    ``q k^T * scale``, computed separately for every frame.

    Args:
        self_layers: per layer ``(q, k)``, each ``(F, heads, N, head_dim)``; heads may differ
            between layers, ``F`` and ``N`` may not.
        values: ``(F, P, N)`` class maps ``V`` on the same ``N`` pixels (flattened row-major).
        scale: logit scale; ``None`` means ``1 / sqrt(head_dim)``.
        chunk_size: number of query pixels per attention call; ``None`` processes all ``N`` at once
            and relies on the fused kernel not to materialise ``N x N``. With chunks, at most
            ``F * heads * chunk_size * N`` attention weights exist at a time in the forward pass,
            whatever the kernel (under autograd the plain math kernel still keeps every chunk's
            weights for backward; fused kernels keep only per-row statistics).

    Returns:
        ``(F, P, N)`` propagated maps in ``values``' dtype. Attention runs in ``q``'s dtype; values
        are zero-padded to ``head_dim`` columns so that fused (flash / memory-efficient) kernels,
        which need equal query and value widths, are eligible.
    """
    _check_layers_present(self_layers, "propagate")
    if values.dim() != 3:
        raise MapShapeError(f"propagate: values must be (F, P, N), got {tuple(values.shape)}")
    if chunk_size is not None and chunk_size < 1:
        raise MapShapeError(f"propagate: chunk_size must be >= 1 or None, got {chunk_size}")
    maps = [
        _layer_propagate(q, k, values, scale, chunk_size, f"propagate layer {index}")
        for index, (q, k) in enumerate(self_layers)
    ]
    return (sum(maps[1:], maps[0]) / len(maps)).transpose(1, 2).to(values.dtype)


def _check_logits(cross_logits: Tensor, what: str) -> None:
    if cross_logits.dim() != 4:
        raise MapShapeError(f"{what}: cross_logits must be (F, P, h, w), got {tuple(cross_logits.shape)}")


def was_inference(
    cross_logits: Tensor,
    self_layers: Sequence[SelfLayer],
    out_size: int,
    scale: float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """WAS map of the inference variant (§2.6 steps 1-5), logit-like.

    Per frame and class: ``lo_c``/``hi_c`` = min/max of the raw logits; background (class 0) keeps
    only the logits above their spatial mean (others set to 0); the maps are propagated through
    ``Ā`` (:func:`propagate`), resized bilinearly (``align_corners=False``) to ``out_size`` and
    min-max re-mapped onto ``[lo_c, hi_c]``.

    Constant maps (METHOD.md §10.2, a division by zero in the reference): the re-mapping divides by
    ``max(max W_c - min W_c, RANGE_EPS)``. A map whose range is below ``RANGE_EPS`` therefore keeps
    its tiny variations scaled by ``(hi_c - lo_c) / RANGE_EPS`` and an exactly constant map becomes
    the constant ``lo_c``; no NaN or inf is produced and the function stays continuous.

    Args:
        cross_logits: ``(F, P, h, w)`` raw logits from :func:`cross_attention_logits`.
        self_layers: per layer ``(q, k)``, each ``(F, heads, h*w, head_dim)``.
        out_size: side of the square output in pixels (64 for losses, 512 for output).
        scale, chunk_size: as in :func:`propagate`.

    Returns:
        ``(F, P, out_size, out_size)`` in ``cross_logits``' dtype; every class map spans exactly
        ``[lo_c, hi_c]`` unless its propagated range is below ``RANGE_EPS``.
    """
    _check_logits(cross_logits, "was_inference")
    frames, num_classes, h, w = cross_logits.shape
    flat = cross_logits.flatten(2)  # (F, P, N)
    lo = flat.amin(dim=2)[..., None, None]
    hi = flat.amax(dim=2)[..., None, None]
    background = flat[:, 0]
    kept = torch.where(background > background.mean(dim=1, keepdim=True), background, 0.0)
    sparsified = torch.cat([kept.unsqueeze(1), flat[:, 1:]], dim=1)
    propagated = propagate(self_layers, sparsified, scale, chunk_size).reshape(frames, num_classes, h, w)
    resized = F.interpolate(propagated, size=(out_size, out_size), mode="bilinear", align_corners=False)
    w_min = resized.amin(dim=(2, 3), keepdim=True)
    w_range = (resized.amax(dim=(2, 3), keepdim=True) - w_min).clamp_min(RANGE_EPS)
    return lo + (resized - w_min) * (hi - lo) / w_range


def was_training(
    cross_logits: Tensor,
    self_layers: Sequence[SelfLayer],
    scale: float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """WAS map of the training variant (§2.7): softmax over classes, then propagation through ``Ā``.

    Args:
        cross_logits: ``(F, P, h, w)`` raw logits.
        self_layers, scale, chunk_size: as in :func:`propagate` (``N = h*w``).

    Returns:
        ``(F, P, h, w)`` in ``cross_logits``' dtype, values in ``[0, 1]``, summing to 1 over ``P``.
    """
    _check_logits(cross_logits, "was_training")
    probabilities = cross_logits.softmax(dim=1)
    return propagate(self_layers, probabilities.flatten(2), scale, chunk_size).reshape(cross_logits.shape)


def labels_from_was(was: Tensor) -> Tensor:
    """Segmentation labels: ``(F, P, H, W)`` WAS map -> ``(F, H, W)`` int64 argmax over classes."""
    if was.dim() != 4:
        raise MapShapeError(f"labels_from_was: expected (F, P, H, W), got {tuple(was.shape)}")
    return was.argmax(dim=1)
