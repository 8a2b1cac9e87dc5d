"""E_Reg's contract beyond the reference numbers: its normaliser, its dtype, and the shapes it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.fft import dctn

from smite_ops.lowpass import dct_3d, dct_matrix, idct_3d, lowpass_energy, lowpass_mask
from smite_ops.was import MapShapeError


def maps_pair() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(3, 2, 4, 5, generator=generator), torch.randn(3, 2, 4, 5, generator=generator)


def test_energy_divides_by_the_given_normaliser() -> None:
    maps, reference = maps_pair()
    mask = lowpass_mask(3, 4, 5, 0.5)  # keeps 2 x 2 spatial frequencies of every frame
    spectrum = dctn((maps - reference).double().numpy().transpose(1, 0, 2, 3), axes=(1, 2, 3), norm="ortho")
    kept = np.abs(spectrum[:, :, :2, :2]).sum()
    assert float(lowpass_energy(maps, reference, mask, normaliser=7)) == pytest.approx(kept / 7, rel=1e-5)
    assert float(lowpass_energy(maps, reference, mask)) == pytest.approx(kept / maps.numel(), rel=1e-5)


def test_energy_has_the_maps_dtype_whatever_the_reference() -> None:
    maps, reference = maps_pair()
    energy = lowpass_energy(maps, reference.double(), lowpass_mask(3, 4, 5, 1.0))
    assert energy.dtype == torch.float32


@pytest.mark.parametrize(("maps", "reference"), [((3, 2, 4, 5), (3, 2, 4, 4)), ((2, 4, 5), (2, 4, 5))])
def test_energy_refuses_maps_and_references_that_differ(maps: tuple, reference: tuple) -> None:
    with pytest.raises(MapShapeError) as error:
        lowpass_energy(torch.zeros(maps), torch.zeros(reference), torch.ones(3, 4, 5, dtype=torch.bool))
    expected = f"lowpass_energy: maps {maps} and reference {reference} must both be the same (F, P, H, W)"
    assert str(error.value) == expected


def test_a_one_sample_axis_is_the_identity_and_empty_axes_are_refused() -> None:
    assert torch.equal(dct_matrix(1, torch.float64), torch.ones(1, 1, dtype=torch.float64))
    with pytest.raises(MapShapeError, match=r"^dct_matrix: size must be >= 1, got 0$"):
        dct_matrix(0)


@pytest.mark.parametrize("transform", [dct_3d, idct_3d])
def test_transforms_name_themselves_when_refusing_input(transform) -> None:
    name = transform.__name__
    with pytest.raises(MapShapeError, match=rf"^{name}: expected a floating tensor, got torch.int64$"):
        transform(torch.zeros(2, 3, 3, dtype=torch.int64))
    with pytest.raises(MapShapeError) as error:
        transform(torch.zeros(3, 3))
    assert str(error.value) == f"{name}: expected (..., frames, height, width), got shape (3, 3)"
