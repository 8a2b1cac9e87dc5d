"""Contracts of :mod:`smite_ops.losses` that the value tests of ``test_losses.py`` leave open (issue 19, mutation).

Exact error messages, dtypes and devices of the results, the defaults of the frequency loss, the phase term's
sign and the reference's complex-mask quirk on a case with a hand-computed answer, and :class:`SmiteLoss`
passing every frequency option through.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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


def stripes_pair(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5 + 0.5 * (-1)^x`` (vertical stripes) and the constant 0.5, each ``(1, size, size)`` float64.

    They differ only at the horizontal Nyquist bin (radius 1 in Nyquist units), with amplitude
    ``0.5 * size^2`` and equal phase 0.
    """
    x = torch.arange(size).expand(size, size)
    return (0.5 + 0.5 * (1 - 2 * (x % 2))).to(DT)[None], torch.full((1, size, size), 0.5, dtype=DT)


def signed_constants(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant maps -1 and +1, ``(1, size, size)`` float64: equal amplitudes, phases 0 and pi at DC only."""
    return torch.full((1, size, size), -1.0, dtype=DT), torch.full((1, size, size), 1.0, dtype=DT)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda labels: class_weights(labels, 3), "class_weights"),
        (lambda labels: one_hot_maps(labels, 3), "one_hot_maps"),
        (lambda labels: cross_attention_ce(torch.zeros(3, 1, 2), labels, torch.ones(3)), "cross_attention_ce"),
        (lambda labels: was_mse(torch.zeros(3, 1, 2), labels), "was_mse"),
    ],
)
def test_label_range_errors_name_the_function(call: Callable[[torch.Tensor], object], name: str) -> None:
    """Labels out of ``[0, P)`` are refused with a message that starts with the public function's name."""
    with pytest.raises(MapShapeError) as error:
        call(torch.tensor([[0, 3]]))
    assert str(error.value) == f"{name}: labels must lie in [0, 2], got [0, 3]"


def test_shape_errors_say_what_they_got() -> None:
    """``sd_loss``, ``frequency_loss`` and ``track_ce`` name both shapes in their errors."""
    with pytest.raises(MapShapeError) as error:
        sd_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    assert str(error.value) == "sd_loss: eps_pred (2, 3) and eps (3, 2) differ"
    with pytest.raises(MapShapeError) as error:  # three dims each, but different sizes
        frequency_loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    assert str(error.value) == "frequency_loss: was_train (2, 4, 4) and one_hot (2, 4, 5) must be equal (P, h, w)"
    with pytest.raises(MapShapeError) as error:  # four dims and equal (h, w), but other frame counts
        track_ce(torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.int64))
    assert str(error.value) == "track_ce: logits (2, 3, 4, 4) must be (F, P, h, w) for labels (3, 4, 4)"


def test_one_hot_maps_have_p_channels_when_top_classes_are_absent() -> None:
    """``P`` comes from ``num_classes``, not from the largest label present."""
    maps = one_hot_maps(torch.tensor([[0, 1], [1, 0]]), 4)
    assert maps.shape == (4, 2, 2)
    assert maps[2:].sum() == 0 and maps[1].tolist() == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_results_keep_a_low_precision_dtype(dtype: torch.dtype) -> None:
    """Class weights come in the requested dtype and the losses in the maps' dtype, also below float32."""
    mask = torch.tensor([[0, 1, 1, 2]])
    weights = class_weights(mask, 3, dtype)
    assert weights.dtype == dtype and weights.tolist() == [1.0, 1.5, 3.0]
    was = torch.full((3, 1, 4), 0.5, dtype=dtype)
    mse = was_mse(was, mask)
    assert mse.dtype == dtype and float(mse) == pytest.approx(0.75)  # 3 * mean of 0.25 everywhere
    assert frequency_loss(was.float(), one_hot_maps(mask, 3, DT)).dtype == torch.float32


def test_masks_and_weights_follow_the_requested_device_not_the_default_one() -> None:
    """With another default device (meta), masks, weights and the frequency loss stay on the inputs' device."""
    cpu = torch.device("cpu")
    board, flat = stripes_pair()
    low, high = low_pass_mask(8, 8, 0.5), high_pass_mask(8, 8, 0.5)
    expected = frequency_loss(board, flat), frequency_loss(board, flat, reference_quirk=True)
    with torch.device("meta"):
        assert torch.equal(low_pass_mask(8, 8, 0.5, cpu), low)
        assert torch.equal(high_pass_mask(8, 8, 0.5, cpu), high)
        assert class_weights(torch.tensor([[0, 1]], device=cpu), 2).tolist() == [1.0, 1.0]
        assert frequency_loss(board, flat).item() == expected[0].item()
        assert frequency_loss(board, flat, reference_quirk=True).item() == expected[1].item()


def test_default_low_cutoff_is_a_quarter_of_nyquist() -> None:
    """The stripes differ at radius 1: outside the default low band (0.25), inside a band of radius 1.

    Amplitude ``0.5 * 8^2 = 32`` at one bin, squared and averaged over the 64 bins: 16.
    """
    stripes, flat = stripes_pair()
    assert frequency_loss(stripes, flat, high_weight=0.0).item() == pytest.approx(0.0, abs=1e-12)
    assert frequency_loss(stripes, flat, low_cutoff=1.0, high_weight=0.0).item() == pytest.approx(16.0, rel=1e-12)


def test_phase_term_adds_and_quirk_counts_masked_phases() -> None:
    """Maps -1 and +1: only the DC phase differs (pi), so each band that holds DC adds ``pi^2 / 64``.

    The real low band (radius 1 bin on 8 x 8) holds DC, the high band (inner box 4 x 4) does not:
    ``pi^2 / 64``. Under the reference quirk the low band is everything, and the high band multiplies DC by 0,
    leaving a signed zero -0.0 (phase pi) against +0.0 (phase 0): ``(1 + 10) * pi^2 / 64``.
    """
    minus, plus = signed_constants()
    unit = math.pi**2 / 64
    assert frequency_loss(minus, plus, high_inner_fraction=0.5).item() == pytest.approx(unit, rel=1e-12)
    quirk = frequency_loss(minus, plus, high_inner_fraction=0.5, reference_quirk=True)
    assert quirk.item() == pytest.approx(11 * unit, rel=1e-12)


def smite_inputs(seed: int = 4) -> tuple[torch.Tensor, ...]:
    """Logits, WAS map, mask (weights 1, 7/3, 7/4: not exact in float32) and noise pair for :class:`SmiteLoss`."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[0, 0, 0, 1, 1], [1, 2, 2, 2, 2]])
    logits = torch.randn(3, 2, 5, generator=gen, dtype=DT)
    was = torch.rand(3, 2, 5, generator=gen, dtype=DT)
    return logits, was, mask, torch.randn(4, generator=gen, dtype=DT), torch.randn(4, generator=gen, dtype=DT)


def test_smite_loss_cross_entropy_weights_in_the_logits_dtype() -> None:
    """The CE term against a float64 hand computation to 1e-12 (float32 weights would be off by ~1e-8)."""
    logits, was, mask, eps_pred, eps = smite_inputs()
    pixel_weight = {0: 1.0, 1: 7 / 3, 2: 7 / 4}
    total = norm = 0.0
    for column, label in zip(logits.flatten(1).T.tolist(), mask.flatten().tolist(), strict=True):
        log_sum = math.log(sum(math.exp(v) for v in column))
        total += pixel_weight[label] * (log_sum - column[label])
        norm += pixel_weight[label]
    terms = SmiteLoss()(logits, was, mask, eps_pred, eps, epoch=0)
    assert terms.cross_entropy.item() == pytest.approx(total / norm, rel=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"low_cutoff": 1.0, "high_inner_fraction": 0.5, "high_weight": 3.0, "reference_quirk": False},
        {"low_cutoff": 0.5, "high_inner_fraction": 0.25, "high_weight": 2.0, "reference_quirk": True},
    ],
)
def test_smite_loss_passes_every_frequency_option(options: dict[str, object]) -> None:
    """The frequency term equals :func:`frequency_loss` called with the same options by keyword."""
    logits, was, mask, eps_pred, eps = smite_inputs()
    loss = SmiteLoss(**{f"freq_{name}": value for name, value in options.items()})
    terms = loss(logits, was, mask, eps_pred, eps, epoch=6)
    expected = frequency_loss(was, one_hot_maps(mask, 3, DT), **options)
    assert terms.frequency is not None
    assert terms.frequency.item() == pytest.approx(expected.item(), rel=1e-12)
    if options:  # each option changes the value here, so dropping or swapping one shows
        assert abs(expected.item() - frequency_loss(was, one_hot_maps(mask, 3, DT)).item()) > 1e-3
