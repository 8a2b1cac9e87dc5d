"""Zero-UNet temporal filter of class scores along point tracks (the cheap temporal-consistency stage).

The guided loop (``smite_ops.guidance``) spends ~140 UNet frame-forwards per window frame to pull the class
maps toward their track votes. This filter applies the same votes (:func:`smite_ops.voting.vote`: majority
label along each visible track inside the voting window, mean of that label's vectors) directly to
already-computed scores, at no UNet cost:

1. ``voted = vote(S)``: every cell that a visible point reaches in frame ``i`` gets its track's vote, the
   other cells keep ``S``; the correction ``voted - S`` is non-zero only on those cells;
2. the correction is spread to the cells around them (``radius`` cells): each cell takes the mean correction
   of the reached cells in its ``(2 radius + 1)^2`` neighbourhood in the same frame, so sparse tracks (one
   point per few cells) still filter every cell near a point; cells with no reached neighbour keep ``S``.

Visibility is a hard gate throughout: an occluded point neither votes nor is corrected. With ``radius=0`` the
filter is exactly :func:`~smite_ops.voting.vote`; ``flips_only`` leaves the cells whose label the vote confirms
untouched and corrects only those it relabels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from smite_ops.voting import vote
from smite_ops.was import MapShapeError


def track_vote_filter(
    scores: Tensor, cells: Tensor, valid: Tensor, window: int = 15, radius: int = 0, flips_only: bool = False
) -> Tensor:
    """Filter class scores along tracks (see the module docstring).

    Args:
        scores: ``(T, P, h, w)`` class scores (logit-like) of ``T`` consecutive frames.
        cells: ``(T, N)`` int64 flat cell indices from :func:`smite_ops.voting.project_to_grid` on ``(h, w)``.
        valid: ``(T, N)`` bool, point visible on the grid.
        window: voting window in frames.
        radius: spread of each reached cell's correction, in cells (0: only the reached cells change).
        flips_only: correct only the reached cells whose voted label differs from their label in ``scores``
            (cells that already agree keep their scores, and with them the soft boundaries between parts).

    Returns:
        ``(T, P, h, w)`` filtered scores in ``scores``' dtype, without gradient.
    """
    if radius < 0:
        raise MapShapeError(f"track_vote_filter: radius must be >= 0 cells, got {radius}")
    voted = vote(scores, cells, valid, window)
    if flips_only:
        agree = voted.argmax(dim=1, keepdim=True) == scores.argmax(dim=1, keepdim=True)
        voted = torch.where(agree, scores.detach(), voted)
    if radius == 0:
        return voted
    frames, _, height, width = scores.shape
    reached = torch.zeros(frames, height * width, dtype=scores.dtype, device=scores.device)
    reached.scatter_add_(1, cells, valid.to(scores.dtype)).clamp_(max=1.0)  # 1 where a visible point lands
    reached = reached.view(frames, 1, height, width)
    side = 2 * radius + 1
    kernel_sum = torch.ones(1, 1, side, side, dtype=scores.dtype, device=scores.device)
    correction = (voted - scores.detach()) * reached
    total = F.conv2d(correction.flatten(0, 1)[:, None], kernel_sum, padding=radius).view_as(scores)
    count = F.conv2d(reached, kernel_sum, padding=radius)
    return scores.detach() + total / count.clamp_min(1.0)
