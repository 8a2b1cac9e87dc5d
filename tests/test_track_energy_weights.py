"""E_Track's class weights on imbalanced voted labels, against values computed by hand (issue 19).

Five pixels vote ``[0, 1, 1, 1, 2]``: ``N_fg = 4``, so ``w = [1, 4/3, 4]`` and the weights sum to 9 over
the pixels. Every pixel has a different loss, so equal weights give a different number.
"""

from __future__ import annotations

import math

import pytest
import torch

from smite_ops.voting import track_energy
from smite_ops.was import MapShapeError

LABELS = [0, 1, 1, 1, 2]
MAPS = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 3.0]]  # per pixel, P = 3
VOTE_SCALE = 4.0  # votes are 4 * one-hot of the labels
PIXEL_WEIGHTS = [1.0, 4 / 3, 4 / 3, 4 / 3, 4.0]


def as_maps(per_pixel: list[list[float]]) -> torch.Tensor:
    """``(5 pixels, 3 classes)`` -> ``(1, 3, 1, 5)`` float64 maps."""
    return torch.tensor(per_pixel, dtype=torch.float64).T[None, :, None, :]


def votes() -> torch.Tensor:
    return as_maps([[VOTE_SCALE * (c == label) for c in range(3)] for label in LABELS])


def log_softmax(row: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(v) for v in row))
    return [v - norm for v in row]


def weighted_mean(values: list[float]) -> float:
    return sum(w * v for w, v in zip(PIXEL_WEIGHTS, values, strict=True)) / sum(PIXEL_WEIGHTS)


def test_hard_track_energy_weighs_rare_classes_by_hand() -> None:
    ce = [-log_softmax(row)[label] for row, label in zip(MAPS, LABELS, strict=True)]
    expected = weighted_mean(ce)
    assert sum(PIXEL_WEIGHTS) == pytest.approx(9.0)
    assert abs(expected - sum(ce) / len(ce)) > 0.1  # the weights matter for this input
    assert float(track_energy(as_maps(MAPS), votes(), "hard")) == pytest.approx(expected, rel=1e-12)


def test_soft_track_energy_weighs_rare_classes_by_hand() -> None:
    kl = []
    for row, label in zip(MAPS, LABELS, strict=True):
        target = log_softmax([VOTE_SCALE * (c == label) for c in range(3)])
        kl.append(sum(math.exp(q) * (q - p) for q, p in zip(target, log_softmax(row), strict=True)))
    expected = weighted_mean(kl)
    assert abs(expected - sum(kl) / len(kl)) > 0.1
    assert float(track_energy(as_maps(MAPS), votes(), "soft")) == pytest.approx(expected, rel=1e-12)
    assert float(track_energy(as_maps(MAPS), votes())) == pytest.approx(expected, rel=1e-12)  # soft by default
    single = track_energy(as_maps(MAPS).float(), votes(), "soft")  # float64 votes: the energy keeps the maps' dtype
    assert single.dtype == torch.float32 and float(single) == pytest.approx(expected, rel=1e-5)


def test_absent_classes_weigh_nothing_and_background_alone_is_a_plain_mean() -> None:
    """All pixels voted background: w = [1, 0, 0], the energy is the unweighted mean CE."""
    maps = as_maps(MAPS)
    background = as_maps([[VOTE_SCALE, 0.0, 0.0]] * 5)
    expected = sum(-log_softmax(row)[0] for row in MAPS) / 5
    assert float(track_energy(maps, background, "hard")) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("maps", "voted", "message"),
    [
        (torch.zeros(1, 3, 1, 5), torch.zeros(1, 3, 1, 4), r"maps \(1, 3, 1, 5\) and votes \(1, 3, 1, 4\)"),
        (torch.zeros(3, 1, 5), torch.zeros(3, 1, 5), r"maps \(3, 1, 5\) and votes \(3, 1, 5\)"),
    ],
)
def test_track_energy_refuses_maps_and_votes_that_differ(maps: torch.Tensor, voted: torch.Tensor, message: str) -> None:
    with pytest.raises(MapShapeError, match=f"^track_energy: {message}"):
        track_energy(maps, voted, "hard")
