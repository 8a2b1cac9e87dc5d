"""Track voting and the tracking energy (METHOD.md §5) on hand-made tracks, and against a plain-loop oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smite_ops.voting import project_to_grid, track_energy, vote, voting_windows
from smite_ops.was import MapShapeError


def one_hot_map(labels: list[list[int]], classes: int, value: float = 1.0) -> torch.Tensor:
    """``(P, h, w)`` map with ``value`` at each cell's label and 0 elsewhere."""
    grid = torch.tensor(labels)
    return torch.nn.functional.one_hot(grid, classes).movedim(-1, 0).double() * value


def test_projection_matches_reference_grid() -> None:
    u = torch.arange(64.0)
    points = torch.stack([(u + 0.5) * 8, (63 - u + 0.5) * 8], dim=1)[None]  # reference query points at 512 px
    for rounding in ("official", "pixel_centre"):
        cells, valid = project_to_grid(points, torch.ones(1, 64, dtype=torch.bool), (512, 512), (64, 64), rounding)
        assert valid.all()
        assert torch.equal(cells[0], (63 - u.long()) * 64 + u.long())
    odd = torch.tensor([[[-1.0, 5.0], [511.4, 0.0], [511.6, 0.0], [float("nan"), 3.0], [20.0, 20.0]]])
    odd_visible = torch.tensor([[True, True, True, True, False]])
    cells, valid = project_to_grid(odd, odd_visible, (512, 512), (64, 64), "pixel_centre")
    assert valid.tolist() == [[False, True, False, False, False]]
    assert cells[0, 1] == 63
    cells, valid = project_to_grid(odd, odd_visible, (512, 512), (64, 64))  # 511.6 / 8 - 0.5 = 63.45 -> 63
    assert valid.tolist() == [[False, True, True, False, False]]
    assert cells[0, 1] == cells[0, 2] == 63
    one = torch.ones(1, 1, dtype=torch.bool)
    cells, valid = project_to_grid(torch.tensor([[[100.0, 50.0]]]), one, (100, 200), (4, 8), "pixel_centre")
    assert valid.all() and cells.item() == 2 * 8 + 4  # x: 100.5 * 8/200 -> 4; y: 50.5 * 4/100 -> 2


def test_official_projection_rounds_half_to_even_where_pixel_centre_floors() -> None:
    """The official ``round(x / 8 - 0.5)`` (numpy: half to even) against ``floor((x + 0.5) / 8)``, by value."""
    x = torch.tensor([8.0, 16.0, 24.0, 11.9, 12.0, 12.1, 3.5, 4.0])  # x / 8 - 0.5 = 0.5, 1.5, 2.5, ...
    points = torch.stack([x, torch.full_like(x, 4.0)], dim=1)[None]  # row 0
    visible = torch.ones(1, len(x), dtype=torch.bool)
    official, _ = project_to_grid(points, visible, (512, 512), (64, 64))
    assert official[0].tolist() == [0, 2, 2, 1, 1, 1, 0, 0]
    assert official[0].tolist() == np.round(x.numpy() / 8 - 0.5).astype(int).tolist()
    centre, _ = project_to_grid(points, visible, (512, 512), (64, 64), "pixel_centre")
    assert centre[0].tolist() == [1, 2, 3, 1, 1, 1, 0, 0]
    with pytest.raises(MapShapeError, match="rounding"):
        project_to_grid(points, visible, (512, 512), (64, 64), "nearest")  # type: ignore[arg-type]


def test_cells_are_exact_at_boundaries_of_a_ratio_that_floats_do_not_hold() -> None:
    """64 / 720 and 48 / 600 are not binary fractions: pixel 11.25 lies exactly half-way (0.5 -> cell 0, half to
    even) and pixel 12 exactly on a cell edge ((12 + 0.5) * 48 / 600 = 1 -> cell 1); a float32 scale misses both."""
    visible = torch.ones(1, 1, dtype=torch.bool)
    official, _ = project_to_grid(torch.tensor([[[11.25, 0.0]]]), visible, (720, 720), (64, 64))
    centre, _ = project_to_grid(torch.tensor([[[12.0, 0.0]]]), visible, (600, 600), (48, 48), "pixel_centre")
    assert (official.item(), centre.item()) == (0, 1)


def test_voting_windows_follow_the_reference_and_shrink_for_short_windows() -> None:
    windows = voting_windows(16, 15)
    for i in range(16):
        expected = list(range(0, 15)) if i <= 7 else list(range(1, 16))
        assert torch.nonzero(windows[i]).flatten().tolist() == expected
    assert voting_windows(5, 15).all()
    assert torch.nonzero(voting_windows(10, 3)[4]).flatten().tolist() == [3, 4, 5]
    assert voting_windows(1, 15).tolist() == [[True]]  # a one-frame clip votes with itself
    assert torch.equal(voting_windows(4, 1), torch.eye(4, dtype=torch.bool))  # window 1: each frame alone


def test_vote_on_hand_made_tracks() -> None:
    """Three frames of a 1x3 grid, P=3; a whole-window vote (window 3)."""
    maps = torch.stack([
        one_hot_map([[1, 0, 0]], 3, 2.0),
        one_hot_map([[0, 2, 0]], 3, 4.0),
        one_hot_map([[0, 0, 1]], 3, 6.0),
    ])
    # point A walks cells 0 -> 1 -> 2: labels 1, 2, 1 -> majority 1 (frames 0 and 2): mean of (0,2,0), (0,6,0)
    # point B sits on cell 1, invisible in frame 1: votes (2,0,0) (frame 0) and (6,0,0) (frame 2), both label 0
    points = torch.tensor([
        [[0.0, 0.0], [1.0, 0.0]],
        [[1.0, 0.0], [1.0, 0.0]],
        [[2.0, 0.0], [1.0, 0.0]],
    ]) + 0.5  # cell centres (cells are pixels here)
    visible = torch.tensor([[True, True], [True, False], [True, True]])
    cells, valid = project_to_grid(points, visible, (1, 3), (1, 3))
    voted = vote(maps, cells, valid, window=3)
    majority_a = torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(voted[0, :, 0, 0], majority_a)  # A in frame 0
    torch.testing.assert_close(voted[1, :, 0, 1], majority_a)  # A in frame 1 (B invisible there)
    torch.testing.assert_close(voted[2, :, 0, 2], majority_a)  # A in frame 2
    # B in frames 0 and 2 at cell 1: mean of its two label-0 vectors; frame 1 (B invisible) is not voted by B
    majority_b = torch.tensor([4.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(voted[0, :, 0, 1], majority_b)
    torch.testing.assert_close(voted[2, :, 0, 1], majority_b)
    # cells no point reaches keep the input
    torch.testing.assert_close(voted[0, :, 0, 2], maps[0, :, 0, 2])
    torch.testing.assert_close(voted[1, :, 0, 0], maps[1, :, 0, 0])


def test_ties_go_to_the_smallest_class_and_points_sharing_a_cell_average() -> None:
    maps = torch.stack([one_hot_map([[2]], 3, 1.0), one_hot_map([[1]], 3, 3.0)])  # labels 2 then 1: a tie
    points = torch.zeros(2, 2, 2)
    visible = torch.tensor([[True, True], [True, False]])  # point 2 only sees frame 0 (label 2)
    cells, valid = project_to_grid(points, visible, (1, 1), (1, 1))
    voted = vote(maps, cells, valid, window=15)
    # frame 0: point 1 ties 2 vs 1 -> class 1 -> (0,3,0); point 2 -> (0,0,1); the cell gets their mean
    torch.testing.assert_close(voted[0, :, 0, 0], torch.tensor([0.0, 1.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(voted[1, :, 0, 0], torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64))


def loop_vote(maps: torch.Tensor, cells: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
    """The rule of METHOD.md §5 with plain loops (cells shared by several points: mean of their votes)."""
    frames, classes = maps.shape[:2]
    flat = maps.flatten(2)
    total = torch.zeros_like(flat)
    hits = torch.zeros(frames, flat.shape[2], dtype=maps.dtype)
    member = voting_windows(frames, window)
    for i in range(frames):
        for k in range(cells.shape[1]):
            if not valid[i, k]:
                continue
            vectors = [flat[j, :, cells[j, k]] for j in range(frames) if member[i, j] and valid[j, k]]
            labels = [int(v.argmax()) for v in vectors]
            counts = [labels.count(c) for c in range(classes)]
            majority = counts.index(max(counts))
            chosen = [v for v, label in zip(vectors, labels, strict=True) if label == majority]
            total[i, :, cells[i, k]] += torch.stack(chosen).mean(dim=0)
            hits[i, cells[i, k]] += 1
    out = torch.where(hits[:, None] > 0, total / hits[:, None].clamp_min(1), flat)
    return out.reshape(maps.shape)


@pytest.mark.parametrize(("frames", "window"), [(6, 15), (9, 5), (8, 4), (1, 15), (5, 1)])
def test_vote_matches_a_loop_oracle(frames: int, window: int) -> None:
    generator = torch.Generator().manual_seed(frames)
    maps = torch.randn(frames, 4, 5, 5, generator=generator, dtype=torch.float64)
    points = torch.rand(frames, 30, 2, generator=generator) * 44 - 2  # some fall outside a 40x40 frame
    visible = torch.rand(frames, 30, generator=generator) > 0.3
    cells, valid = project_to_grid(points, visible, (40, 40), (5, 5))
    torch.testing.assert_close(vote(maps, cells, valid, window), loop_vote(maps, cells, valid, window))


def test_a_vote_without_tracks_keeps_the_maps() -> None:
    maps = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    no_tracks = torch.zeros(3, 0, dtype=torch.long)
    assert torch.equal(vote(maps, no_tracks, no_tracks.bool()), maps)


def test_soft_track_energy_vanishes_with_its_gradient_at_the_votes() -> None:
    generator = torch.Generator().manual_seed(3)
    votes = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    maps = votes.clone().requires_grad_(True)
    energy = track_energy(maps, votes, "soft")
    energy.backward()
    assert abs(float(energy.detach())) < 1e-12
    assert maps.grad is not None and maps.grad.abs().max() < 1e-12
    other = (votes + torch.randn(votes.shape, generator=generator, dtype=torch.float64)).requires_grad_(True)
    moved = track_energy(other, votes, "soft")
    moved.backward()
    assert float(moved.detach()) > 0 and other.grad is not None and other.grad.abs().max() > 1e-4


def test_hard_track_energy_is_the_reference_weighted_cross_entropy() -> None:
    votes = torch.zeros(1, 3, 1, 4, dtype=torch.float64)
    votes[0, :, 0, :] = torch.tensor([[5.0, 5, 5, 0], [0, 0, 0, 5], [0, 0, 0, 0]])  # labels 0, 0, 0, 1
    maps = votes.clone().requires_grad_(True)
    energy = track_energy(maps, votes, "hard")
    # weights: w0 = 1, w1 = N_fg / N_1 = 1, w2 = 0 (absent); all four pixels have the same CE
    per_pixel = -torch.log_softmax(torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64), dim=0)[0]
    assert float(energy.detach()) == pytest.approx(float(per_pixel))
    energy.backward()
    assert maps.grad is not None and maps.grad.abs().max() > 1e-4  # not zero-grad at its own votes


def test_vote_rejects_mismatched_shapes() -> None:
    with pytest.raises(MapShapeError, match="same T"):
        vote(torch.zeros(3, 2, 4, 4), torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(MapShapeError, match="soft"):
        track_energy(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), "fuzzy")  # type: ignore[arg-type]
