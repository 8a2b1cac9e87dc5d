"""Training and tracking losses (smite_ops.losses) on hand-made cases with known values."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from smite_ops.losses import (
    SmiteLoss,
    class_weights,
    cross_attention_ce,
    frequency_loss,
    high_pass_mask,
    low_pass_mask,
    one_hot_maps,
    sd_loss,
    track_ce,
    was_mse,
)
from smite_ops.was import MapShapeError

torch.set_num_threads(1)
DT = torch.float64


def checkerboard_pair(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5 + 0.5 * (+-1 checkerboard)`` and the constant 0.5, each ``(1, size, size)`` float64."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    board = ((x + y) % 2 * 2 - 1).to(DT)
    return (0.5 + 0.5 * board)[None], torch.full((1, size, size), 0.5, dtype=DT)


def test_class_weights_known_numbers() -> None:
    mask = torch.tensor([[0, 0, 1, 2], [1, 1, 0, 0], [0, 0, 1, 2], [1, 1, 0, 0]])  # n = (8, 6, 2, 0)
    torch.testing.assert_close(class_weights(mask, 4), torch.tensor([1.0, 8 / 6, 4.0, 0.0]))


def test_class_weights_for_frames_and_all_background() -> None:
    votes = torch.tensor([[[0, 1]], [[2, 2]]])  # (F, h, w); n = (1, 1, 2)
    torch.testing.assert_close(class_weights(votes, 3), torch.tensor([1.0, 3.0, 1.5]))
    torch.testing.assert_close(class_weights(torch.zeros(3, 3, dtype=torch.int64), 3), torch.tensor([1.0, 0, 0]))


def test_cross_attention_ce_hand_value() -> None:
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]], dtype=DT)  # (P=2, 1, 2)
    mask = torch.tensor([[1, 0]])
    # pixel 0: p(1) = 3/4 with weight 3; pixel 1: p(0) = 1/2 with weight 1
    expected = (3 * math.log(4 / 3) + math.log(2)) / 4
    loss = cross_attention_ce(logits, mask, torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_was_mse_perfect_and_empty_prediction() -> None:
    mask = torch.tensor([[0, 1, 2], [2, 2, 1]])
    perfect = one_hot_maps(mask, 3, DT)
    assert perfect[:, 1, 0].tolist() == [0.0, 0.0, 1.0]
    assert was_mse(perfect, mask).item() == 0.0
    # all zeros: mean of Y^2 over P*h*w entries is 1/P, times P
    assert was_mse(torch.zeros(3, 2, 3, dtype=DT), mask).item() == pytest.approx(1.0)


def test_sd_loss() -> None:
    assert sd_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(5.0)


def test_band_masks_sizes() -> None:
    assert int(low_pass_mask(64, 64, 0.25).sum()) == 197  # lattice points in a disc of radius 8 bins
    high = high_pass_mask(64, 64, 60 / 64)
    assert int(high.sum()) == 64**2 - 60**2  # outer 2-pixel ring
    assert not high[2:62, 2:62].any() and high[:2].all() and high[:, 62:].all()


def test_frequency_loss_of_identical_maps_is_zero() -> None:
    maps = torch.rand(3, 64, 64, dtype=DT)
    assert frequency_loss(maps, maps).item() == 0.0
    assert frequency_loss(maps, maps, reference_quirk=True).item() == 0.0


def test_low_pass_removes_checkerboard_energy() -> None:
    board, flat = checkerboard_pair()
    # the checkerboard differs from its mean only at the Nyquist corner: amplitude 0.5 * 64^2 = 2048,
    # squared and averaged over the 4096 bins: 1024
    assert frequency_loss(board, flat, high_weight=0.0).item() == pytest.approx(0.0, abs=1e-9)
    assert frequency_loss(board, flat, high_weight=0.0, reference_quirk=True).item() == pytest.approx(1024, rel=1e-4)
    assert frequency_loss(board, flat).item() == pytest.approx(10 * 1024, rel=1e-4)


def test_frequency_loss_gradient_is_finite() -> None:
    maps = torch.rand(3, 32, 32, dtype=DT, requires_grad=True)
    target = one_hot_maps(torch.randint(0, 3, (32, 32), generator=torch.Generator().manual_seed(0)), 3, DT)
    frequency_loss(maps, target).backward()
    assert torch.isfinite(maps.grad).all() and maps.grad.abs().sum() > 0


def test_track_ce_known_value() -> None:
    votes = torch.tensor([[[0, 1]], [[2, 2]]])  # weights (1, 3, 1.5)
    logits = torch.zeros(2, 3, 1, 2, dtype=DT)
    logits[0, :, 0, 1] = torch.tensor([0.0, math.log(4.0), math.log(2.0)], dtype=DT)  # CE = log(7/4); others log 3
    expected = (1 * math.log(3) + 3 * math.log(7 / 4) + 1.5 * math.log(3) * 2) / (1 + 3 + 1.5 * 2)
    assert track_ce(logits, votes).item() == pytest.approx(expected, rel=1e-12)


def test_smite_loss_combines_terms_and_gates_frequency() -> None:
    gen = torch.Generator().manual_seed(4)
    mask = torch.randint(0, 3, (16, 16), generator=gen)
    logits = torch.randn(3, 16, 16, generator=gen, dtype=DT)
    was = torch.rand(3, 16, 16, generator=gen, dtype=DT)
    eps_pred, eps = torch.randn(1, 4, 8, 8, dtype=DT), torch.randn(1, 4, 8, 8, dtype=DT)
    loss = SmiteLoss()
    early = loss(logits, was, mask, eps_pred, eps, epoch=5)
    assert early.frequency is None
    torch.testing.assert_close(early.total, early.cross_entropy + early.was_mse + 0.005 * early.sd)
    late = loss(logits, was, mask, eps_pred, eps, epoch=6)
    assert late.frequency is not None and late.frequency.item() > 0
    torch.testing.assert_close(late.total, early.total + 0.001 * late.frequency)
    torch.testing.assert_close(late.was_mse, was_mse(was, mask))
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss.coef_sd = 1.0  # type: ignore[misc]


def test_bad_labels_raise_clear_errors() -> None:
    with pytest.raises(MapShapeError, match=r"labels must lie in \[0, 2\]"):
        class_weights(torch.tensor([[0, 3]]), 3)
    with pytest.raises(MapShapeError, match="int64"):
        class_weights(torch.tensor([[0.0, 1.0]]), 3)
    with pytest.raises(MapShapeError, match="must be \\(P, h, w\\)"):
        was_mse(torch.zeros(3, 4, 4), torch.zeros(5, 5, dtype=torch.int64))
    with pytest.raises(MapShapeError, match="track_ce"):
        track_ce(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.int64))
