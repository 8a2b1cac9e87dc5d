"""Part contrast for backbone pretraining: cells of one part should look alike across instances, unlike other parts.

:func:`paired_picks` draws batches as pairs of frames of a kind, :func:`part_ids` labels each latent cell with its
part (kind and fine label; background shared by all kinds), :func:`sample_cells` draws the cells a loss reads, and
:func:`part_contrast` is the supervised contrastive loss on their features (:mod:`pipeline.training.pretrain_tiny`
applies it to the UNet's cross-attention queries).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BACKGROUND_WEIGHT = 0.1
"""Sampling weight of a background cell relative to an object cell (1)."""


def part_contrast(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al., 2020) of cell features against their part ids.

    Each cell's positives are the other cells with its id; cells without one are skipped.

    Args:
        features: ``(M, C)`` cell features (normalised here).
        labels: ``(M,)`` int64 part ids.
        temperature: softmax temperature of the cosine similarities.

    Returns:
        Scalar: the mean over anchors of minus the mean log-probability of their positives.
    """
    unit = F.normalize(features, dim=1)
    own = torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    similarity = (unit @ unit.T / temperature).masked_fill(own, -torch.inf)
    log_prob = (similarity - torch.logsumexp(similarity, dim=1, keepdim=True)).masked_fill(own, 0.0)
    positives = (labels[:, None] == labels[None, :]) & ~own
    anchors = positives.any(dim=1)
    return (-(log_prob * positives).sum(dim=1)[anchors] / positives.sum(dim=1)[anchors]).mean()


def paired_picks(kinds: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` frame indices (``count`` even): two different frames of each of ``count // 2`` kinds, positives
    across instances for :func:`part_contrast`.

    The kinds are drawn among those with frames in ``kinds (N,)``, without repeats while they last.
    """
    present = kinds.unique()
    pairs = count // 2
    order = present[torch.randperm(len(present), generator=generator)].repeat(-(-pairs // len(present)))[:pairs]
    picks = []
    for kind in order.tolist():
        frames = (kinds == kind).nonzero().flatten()
        picks.append(frames[torch.randperm(len(frames), generator=generator)[:2]])
    return torch.cat(picks)


def part_ids(labels: Tensor, kinds: Tensor, stride: int) -> Tensor:
    """``(N, S/stride, S/stride)`` int64 part id per latent cell of ``(N, S, S)`` fine part labels (nearest
    down-sampling): 0 for background, else ``1000 * (kind + 1) + label``, ``kinds (N,)`` the frames' kinds."""
    cells = labels[:, ::stride, ::stride].long()
    return torch.where(cells > 0, cells + 1000 * (kinds[:, None, None] + 1), 0)


def sample_cells(features: Tensor, ids: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` cells per frame without replacement, object cells ten times as likely as background ones.

    Args:
        features: ``(B, C, K)`` features of ``K`` cells per frame.
        ids: ``(B, K)`` their part ids (0 = background).
        count: cells per frame (at most ``K``).

    Returns:
        ``(B·count, C)`` features and ``(B·count,)`` part ids of the drawn cells.
    """
    weights = torch.where(ids > 0, 1.0, BACKGROUND_WEIGHT)
    cells = torch.multinomial(weights, count, generator=generator)
    sampled = features.gather(2, cells[:, None].expand(-1, features.shape[1], -1)).transpose(1, 2)
    return sampled.reshape(-1, features.shape[1]), ids.gather(1, cells).reshape(-1)
