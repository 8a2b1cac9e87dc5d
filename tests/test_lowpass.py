"""The torch DCT against scipy, the low-pass filter and the regulariser E_Reg (METHOD.md §6)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from smite_ops.lowpass import dct_3d, dct_matrix, idct_3d, lowpass, lowpass_energy, lowpass_mask
from smite_ops.was import MapShapeError


def test_dct_matches_scipy_ortho_dctn() -> None:
    x = torch.randn(3, 5, 7, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = scipy.fft.dctn(x.numpy(), type=2, axes=(-3, -2, -1), norm="ortho")
    np.testing.assert_allclose(dct_3d(x).numpy(), expected, rtol=0, atol=1e-12)


def test_dct_is_orthonormal_and_inverts() -> None:
    matrix = dct_matrix(9, torch.float64)
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(9, dtype=torch.float64))
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(idct_3d(dct_3d(x)), x, atol=1e-5, rtol=0)
    assert torch.linalg.vector_norm(dct_3d(x)) == pytest.approx(float(torch.linalg.vector_norm(x)), rel=1e-5)


def test_mask_sizes_match_reference_and_paper() -> None:
    spatial = lowpass_mask(4, 64, 64, 0.4)
    assert spatial.shape == (4, 64, 64)
    assert int(spatial[0].sum()) == 25 * 25 and bool((spatial == spatial[0]).all())
    assert int(lowpass_mask(4, 64, 64, 0.999)[0].sum()) == 63 * 63
    paper = lowpass_mask(16, 64, 64, 0.4, "spatiotemporal")
    assert paper[:6].all(dim=0).sum() == 25 * 25 and not paper[6:].any()
    assert lowpass_mask(4, 64, 64, 0.4, "spatiotemporal")[0].any()  # the temporal DC is always kept
    assert int(lowpass_mask(16, 64, 64, 0.4, "spatiotemporal", temporal_threshold=0.5)[:, 0, 0].sum()) == 8


def rms(x: torch.Tensor) -> float:
    return float(x.square().mean().sqrt())


def test_lowpass_keeps_smooth_maps_and_kills_checkerboards() -> None:
    f, y, x = torch.meshgrid(torch.arange(8.0), torch.arange(64.0), torch.arange(64.0), indexing="ij")
    smooth = torch.cos(torch.pi * (x + 0.5) * 2 / 64) * torch.cos(torch.pi * (y + 0.5) * 3 / 64) + 0.1 * f / 8
    mask = lowpass_mask(8, 64, 64, 0.4, "spatiotemporal")
    filtered = lowpass(smooth, mask)
    assert (filtered - smooth).abs().max() < 0.01 * smooth.abs().max()
    # (-1)^n is not a DCT-II basis vector: a little of it leaks below the cutoff (measured RMS 0.0066, 0.18)
    checker = (-1.0) ** (x + y)
    assert rms(lowpass(checker, mask)) < 0.01 * rms(checker)
    flicker = (-1.0) ** f * torch.ones_like(x)  # temporal alternation: damped by the 3D filter only
    assert rms(lowpass(flicker, mask)) < 0.2 * rms(flicker)
    torch.testing.assert_close(lowpass(flicker, lowpass_mask(8, 64, 64, 0.4)), flicker, atol=1e-5, rtol=0)


def test_energy_is_mean_l1_of_kept_coefficients() -> None:
    generator = torch.Generator().manual_seed(2)
    maps = torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    reference = torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64)
    mask = lowpass_mask(4, 8, 8, 0.5)
    energy = lowpass_energy(maps, reference, mask)
    spectra = [scipy.fft.dctn(m.detach().numpy().transpose(1, 0, 2, 3), axes=(1, 2, 3), norm="ortho")
               for m in (maps, reference)]
    expected = np.abs((spectra[0] - spectra[1]) * mask.numpy()).sum() / maps.numel()
    assert float(energy.detach()) == pytest.approx(expected, rel=1e-12)
    energy.backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0
    assert float(lowpass_energy(reference, reference, mask)) == 0.0
    smooth = torch.ones(8, 8, dtype=torch.float64)
    checker = (-1.0) ** torch.arange(8.0)[:, None] * (-1.0) ** torch.arange(8.0)[None, :]
    shifted = float(lowpass_energy(reference + smooth, reference, mask))
    assert float(lowpass_energy(reference + checker, reference, mask)) < 0.2 * shifted  # high frequencies ~free


def test_bad_shapes_are_reported() -> None:
    with pytest.raises(MapShapeError, match="frames, height, width"):
        dct_3d(torch.zeros(4, 4))
    with pytest.raises(MapShapeError, match="mask"):
        lowpass_energy(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.ones(2, 5, 5, dtype=torch.bool))
    with pytest.raises(MapShapeError, match="threshold"):
        lowpass_mask(2, 4, 4, 0.0)
