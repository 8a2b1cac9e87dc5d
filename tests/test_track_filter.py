"""The zero-UNet track-vote filter (smite_ops.track_filter) on hand-made tracks."""

from __future__ import annotations

import pytest
import torch

from smite_ops.track_filter import track_vote_filter
from smite_ops.voting import project_to_grid, vote
from smite_ops.was import MapShapeError


def flickering_scores(frames: int = 5, width: int = 5, flip: int = 2) -> torch.Tensor:
    """``(T, 2, 1, width)`` scores: class 1 everywhere, except class 0 at frame ``flip`` (a one-frame flicker)."""
    scores = torch.zeros(frames, 2, 1, width, dtype=torch.float64)
    scores[:, 1] = 1.0
    scores[flip, 1], scores[flip, 0] = 0.0, 1.0
    return scores


def still_point(frames: int, x: float, visible: list[bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells and validity of one point standing at pixel ``x`` of a ``1 x width`` frame (pixel = cell)."""
    points = torch.tensor([[[x, 0.0]]] * frames)
    seen = torch.tensor([[v] for v in (visible or [True] * frames)])
    return points, seen


def test_radius_zero_is_exactly_the_vote() -> None:
    scores = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    points = torch.rand(6, 5, 2, generator=torch.Generator().manual_seed(1)) * 4
    visible = torch.rand(6, 5, generator=torch.Generator().manual_seed(2)) > 0.3
    cells, valid = project_to_grid(points, visible, (4, 4), (4, 4))
    torch.testing.assert_close(track_vote_filter(scores, cells, valid, window=3, radius=0),
                               vote(scores, cells, valid, 3), atol=0, rtol=0)


def test_a_one_frame_flicker_along_a_track_is_voted_away_and_spread_to_neighbours() -> None:
    scores = flickering_scores()
    points, seen = still_point(5, 2.0)
    cells, valid = project_to_grid(points, seen, (1, 5), (1, 5))
    filtered = track_vote_filter(scores, cells, valid, window=5, radius=1)
    labels = filtered.argmax(dim=1)[:, 0]  # (T, width)
    assert labels[2].tolist() == [0, 1, 1, 1, 0]  # the point's cell and its two neighbours follow the track's vote
    torch.testing.assert_close(filtered[2, :, 0, 1:4], torch.tensor([[0.0] * 3, [1.0] * 3], dtype=torch.float64))
    torch.testing.assert_close(filtered[:, :, :, [0, 4]], scores[:, :, :, [0, 4]], atol=0, rtol=0)  # out of reach
    torch.testing.assert_close(filtered[[0, 1, 3, 4]], scores[[0, 1, 3, 4]], atol=0, rtol=0)  # agreeing frames


def test_an_occluded_point_neither_votes_nor_is_corrected() -> None:
    scores = flickering_scores()
    points, seen = still_point(5, 2.0, [True, True, False, True, True])  # hidden in the flickering frame
    cells, valid = project_to_grid(points, seen, (1, 5), (1, 5))
    torch.testing.assert_close(track_vote_filter(scores, cells, valid, window=5, radius=1), scores, atol=0, rtol=0)
    flipped = flickering_scores(flip=0)  # now the point sees class 0 once and class 1 three times ...
    points, seen = still_point(5, 2.0, [True, False, False, False, True])  # ... but only frames 0 and 4 count
    cells, valid = project_to_grid(points, seen, (1, 5), (1, 5))
    filtered = track_vote_filter(flipped, cells, valid, window=5, radius=0)
    assert filtered.argmax(dim=1)[0, 0, 2] == 0  # a 1-1 tie between the two visible frames: smallest class wins


def test_bad_radius_is_refused() -> None:
    cells, valid = torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.bool)
    with pytest.raises(MapShapeError, match="radius"):
        track_vote_filter(torch.zeros(2, 2, 1, 1), cells, valid, radius=-1)


def test_flips_only_corrects_relabelled_cells_and_keeps_agreeing_ones() -> None:
    scores = flickering_scores()
    scores[1, 1, 0, 2] = 3.0  # a more confident agreeing frame: the vote's mean is (0, 1.5)
    points, seen = still_point(5, 2.0)
    cells, valid = project_to_grid(points, seen, (1, 5), (1, 5))
    everything = track_vote_filter(scores, cells, valid, window=5)
    flips = track_vote_filter(scores, cells, valid, window=5, flips_only=True)
    vote_mean = torch.tensor([0.0, 1.5], dtype=torch.float64)
    torch.testing.assert_close(everything[0, :, 0, 2], vote_mean)  # the plain vote rewrites agreeing cells too
    torch.testing.assert_close(flips[2, :, 0, 2], vote_mean)  # the flickering frame is relabelled
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(flips[keep], scores[keep], atol=0, rtol=0)  # agreeing frames keep their scores
