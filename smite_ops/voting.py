"""Tracking-based voting on class maps and the tracking energy E_Track (METHOD.md §5), vectorised.

Tracks come from the shared whole-video tracks (``Tracks`` of one window, any number of points seeded in
any frames), not from one tracker run per frame: every point visible in frame ``i`` votes for its own cell
in frame ``i`` with the maps it sees along its track inside the voting window around ``i``.

Voting rule for frame ``i`` and point ``k`` (visible on the grid in frame ``i``):

1. collect the ``P``-vectors ``S[j, :, cell_k(j)]`` of the frames ``j`` of the voting window where the point
   is visible on the grid (equal weights, visibility is a hard gate);
2. each vector's label is its argmax; the majority label ``m`` wins, ties go to the smallest class index;
3. the vote is the mean of the vectors labelled ``m``; it is written to ``S_trk[i, :, cell_k(i)]``.

Cells that no point reaches keep ``S``. Deliberate difference: when several points land on one cell of a
frame, their votes are averaged (the reference's per-frame loop lets the last point written win, an
order-dependent result). Windows shorter than the voting window vote over the whole window (the reference
fails there).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from smite_ops.losses import class_weights
from smite_ops.was import MapShapeError

TrackLoss = Literal["hard", "soft"]
GridRounding = Literal["official", "pixel_centre"]
"""How :func:`project_to_grid` puts a pixel position into a cell (see there)."""


def project_to_grid(
    points: Tensor,
    visible: Tensor,
    frame_size: tuple[int, int],
    grid_size: tuple[int, int],
    rounding: GridRounding = "official",
) -> tuple[Tensor, Tensor]:
    """Project pixel tracks onto the cells of a map grid (the reference's φ, §5).

    ``rounding="official"`` (the default) is the official code's projection: ``x * w / W - 0.5`` rounded
    half-to-even (``x / 8 - 0.5`` at 512 px on a 64 grid). ``"pixel_centre"`` treats pixel ``x`` as spanning
    ``[x - 0.5, x + 0.5)`` and takes cell ``floor((x + 0.5) * w / W)``. Both put the official query points
    ``(u + 0.5) * 8`` into cell ``u``; along a track they differ (README, Deviations from the official code).

    Args:
        points: ``(T, N, 2)`` float pixel ``(x, y)`` in a frame of ``frame_size = (H, W)`` pixels.
        visible: ``(T, N)`` bool.
        frame_size: ``(H, W)`` of the frames the tracker saw.
        grid_size: ``(h, w)`` of the map grid.
        rounding: ``"official"`` or ``"pixel_centre"`` (above).

    Returns:
        ``(cells, valid)``: ``(T, N)`` int64 flat cell indices ``y * w + x`` (0 where invalid) and ``(T, N)``
        bool, visible and inside the grid (non-finite positions are invalid).
    """
    if points.dim() != 3 or points.shape[-1] != 2 or visible.shape != points.shape[:2]:
        raise MapShapeError(
            f"project_to_grid: points must be (T, N, 2) and visible (T, N), got {tuple(points.shape)} and "
            f"{tuple(visible.shape)}"
        )
    height, width = frame_size
    rows, cols = grid_size
    if min(height, width, rows, cols) < 1:
        raise MapShapeError(f"project_to_grid: sizes must be positive, got frame {frame_size} and grid {grid_size}")
    scale = torch.tensor([cols / width, rows / height], dtype=torch.float64, device=points.device)
    if rounding == "official":
        cell = torch.round(points.double() * scale - 0.5)  # torch.round rounds half to even, as np.round
    elif rounding == "pixel_centre":
        cell = torch.floor((points.double() + 0.5) * scale)
    else:
        raise MapShapeError(f"project_to_grid: rounding must be 'official' or 'pixel_centre', got {rounding!r}")
    finite = torch.isfinite(cell).all(dim=-1)
    cell = torch.where(finite[..., None], cell, -1.0)
    x, y = cell[..., 0], cell[..., 1]
    valid = visible.bool() & finite & (x >= 0) & (x < cols) & (y >= 0) & (y < rows)
    flat = torch.where(valid, y * cols + x, 0.0).long()
    return flat, valid


def voting_windows(num_frames: int, window: int, device: torch.device | str | None = None) -> Tensor:
    """``(T, T)`` bool: row ``i`` marks the frames of frame ``i``'s voting window.

    The window has ``min(window, T)`` frames starting at ``i - window // 2``, shifted inside ``[0, T)``
    (reference, ``window = 15``, ``T = 16``: ``[0, 15)`` for ``i <= 7``, else ``[1, 16)``).
    """
    if num_frames < 1 or window < 1:
        raise MapShapeError(f"voting_windows: need num_frames >= 1 and window >= 1, got {num_frames}, {window}")
    length = min(window, num_frames)
    frames = torch.arange(num_frames, device=device)
    start = (frames - window // 2).clamp(0, num_frames - length)
    return (frames[None, :] >= start[:, None]) & (frames[None, :] < start[:, None] + length)


def vote(maps: Tensor, cells: Tensor, valid: Tensor, window: int = 15) -> Tensor:
    """Tracking-voted maps ``S_trk`` (see the module docstring for the rule).

    Args:
        maps: ``(T, P, h, w)`` class maps ``S`` (the current 64 x 64 WAS in the method).
        cells: ``(T, N)`` int64 flat cell indices from :func:`project_to_grid`.
        valid: ``(T, N)`` bool, point visible on the grid.
        window: voting window in frames (reference: 15).

    Returns:
        ``(T, P, h, w)`` maps in ``maps``' dtype, without gradient.
    """
    if maps.dim() != 4 or cells.shape != valid.shape or cells.dim() != 2 or cells.shape[0] != maps.shape[0]:
        raise MapShapeError(
            f"vote: maps must be (T, P, h, w) and cells/valid (T, N) with the same T, got {tuple(maps.shape)}, "
            f"{tuple(cells.shape)} and {tuple(valid.shape)}"
        )
    frames, classes, height, width = maps.shape
    flat = maps.detach().flatten(2)  # (T, P, hw)
    vectors = flat.gather(2, cells[:, None, :].expand(-1, classes, -1)).transpose(1, 2)  # (T, N, P)
    ballots = F.one_hot(vectors.argmax(dim=2), classes).to(maps.dtype) * valid[..., None].to(maps.dtype)
    member = voting_windows(frames, window, maps.device).to(maps.dtype)  # (T_i, T_j)
    counts = torch.einsum("ij,jnc->inc", member, ballots)  # votes per class
    majority = counts.argmax(dim=2, keepdim=True)  # first maximum: ties go to the smallest class index
    sums = torch.einsum("ij,jnc,jnd->incd", member, ballots, vectors)  # per class: sum of its vectors
    index = majority[..., None].expand(-1, -1, 1, classes)
    means = sums.gather(2, index).squeeze(2) / counts.gather(2, majority).clamp_min(1.0)  # (T, N, P)
    weight = valid.to(maps.dtype)[..., None]
    total = torch.zeros(frames, height * width, classes, dtype=maps.dtype, device=maps.device)
    hits = torch.zeros(frames, height * width, 1, dtype=maps.dtype, device=maps.device)
    total.scatter_add_(1, cells[..., None].expand(-1, -1, classes), means * weight)
    hits.scatter_add_(1, cells[..., None], weight)
    voted = torch.where(hits > 0, total / hits.clamp_min(1.0), flat.transpose(1, 2))
    return voted.transpose(1, 2).reshape(maps.shape)


def track_energy(maps: Tensor, voted: Tensor, loss: TrackLoss = "soft") -> Tensor:
    """E_Track: class maps ``S(z)`` against their votes ``S_trk`` (§5), class-weighted by the voted labels.

    Class weights come from the voted labels ``y = argmax_c S_trk`` as in training (``w_0 = 1``,
    ``w_c = N_fg / N_c``); pixel ``p`` weighs ``w_{y(p)}`` and the energy is the weighted mean over pixels.

    - ``"hard"`` (the reference): cross-entropy of ``softmax(S)`` against the labels ``y``. Its gradient does
      not vanish when ``S == S_trk``: it keeps sharpening every pixel towards its voted label.
    - ``"soft"``: ``KL(softmax(S_trk) || softmax(S))`` per pixel, i.e. cross-entropy against the soft votes
      minus their entropy. It is 0 with zero gradient exactly when ``S`` already equals its votes (up to a
      per-pixel constant), so only disagreement with the tracks moves the latents.

    Args:
        maps: ``(F, P, h, w)`` logit-like maps (the inference-variant WAS), differentiable.
        voted: ``(F, P, h, w)`` voted maps from :func:`vote`.
        loss: ``"hard"`` or ``"soft"``.

    Returns:
        Scalar in ``maps``' dtype.
    """
    if maps.dim() != 4 or maps.shape != voted.shape:
        raise MapShapeError(
            f"track_energy: maps {tuple(maps.shape)} and votes {tuple(voted.shape)} must be equal (F, P, h, w)"
        )
    labels = voted.argmax(dim=1)
    weights = class_weights(labels, maps.shape[1], maps.dtype).to(maps.device)
    if loss == "hard":
        return F.cross_entropy(maps, labels, weight=weights)
    if loss != "soft":
        raise MapShapeError(f"track_energy: loss must be 'hard' or 'soft', got {loss!r}")
    target = voted.detach().to(maps.dtype).log_softmax(dim=1)
    divergence = F.kl_div(maps.log_softmax(dim=1), target, reduction="none", log_target=True).sum(dim=1)
    pixel_weights = weights[labels]
    return (pixel_weights * divergence).sum() / pixel_weights.sum()
