"""Every shape and size check of :mod:`smite_ops.voting` names what it got (one condition broken at a time)."""

from __future__ import annotations

import pytest
import torch

from smite_ops.voting import project_to_grid, vote, voting_windows
from smite_ops.was import MapShapeError


@pytest.mark.parametrize(
    ("points", "visible"),
    [
        (torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)),  # not (T, N, 2)
        (torch.zeros(2, 3, 3), torch.ones(2, 3, dtype=torch.bool)),  # (x, y, z)
        (torch.zeros(2, 3, 2), torch.ones(2, 4, dtype=torch.bool)),  # visible of other points
    ],
)
def test_project_to_grid_refuses_misshapen_tracks(points: torch.Tensor, visible: torch.Tensor) -> None:
    with pytest.raises(MapShapeError) as error:
        project_to_grid(points, visible, (8, 8), (4, 4))
    assert str(error.value) == (
        f"project_to_grid: points must be (T, N, 2) and visible (T, N), got {tuple(points.shape)} and "
        f"{tuple(visible.shape)}"
    )


@pytest.mark.parametrize(("frame", "grid"), [((0, 8), (4, 4)), ((8, 0), (4, 4)), ((8, 8), (0, 4)), ((8, 8), (4, 0))])
def test_project_to_grid_refuses_empty_sizes(frame: tuple[int, int], grid: tuple[int, int]) -> None:
    with pytest.raises(MapShapeError, match=rf"sizes must be positive, got frame \({frame[0]}, {frame[1]}\)"):
        project_to_grid(torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool), frame, grid)


@pytest.mark.parametrize(("frames", "window"), [(0, 3), (3, 0)])
def test_voting_windows_refuse_empty_sizes(frames: int, window: int) -> None:
    with pytest.raises(MapShapeError, match=f"window >= 1, got {frames}, {window}$"):
        voting_windows(frames, window)


@pytest.mark.parametrize(
    ("maps", "cells", "valid"),
    [
        (torch.zeros(2, 3, 4), torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool)),
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 6, dtype=torch.bool)),
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 1, dtype=torch.long), torch.ones(2, 5, 1, dtype=torch.bool)),
        (torch.zeros(2, 3, 4, 4), torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 5, dtype=torch.bool)),
    ],
)
def test_vote_refuses_misshapen_inputs(maps: torch.Tensor, cells: torch.Tensor, valid: torch.Tensor) -> None:
    shapes = f"{tuple(maps.shape)}, {tuple(cells.shape)} and {tuple(valid.shape)}"
    with pytest.raises(MapShapeError) as error:
        vote(maps, cells, valid)
    assert str(error.value).endswith(f"the same T, got {shapes}")


def test_vote_defaults_to_the_reference_window_of_15_frames() -> None:
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(16, 3, 4, 4, generator=generator, dtype=torch.float64)
    points = torch.rand(16, 40, 2, generator=generator) * 32
    cells, valid = project_to_grid(points, torch.ones(16, 40, dtype=torch.bool), (32, 32), (4, 4))
    assert torch.equal(vote(maps, cells, valid), vote(maps, cells, valid, 15))
    assert not torch.equal(vote(maps, cells, valid, 15), vote(maps, cells, valid, 16))  # 15 and 16 differ here
