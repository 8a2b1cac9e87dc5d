"""Training losses of SMITE (METHOD.md §3.3) and the tracking cross-entropy (§5), as pure functions.

Maps are at the loss resolution (64 x 64 in the method); ``P`` counts classes with background = 0.
The reference multiplies the total by 0.01 before backward; that factor only interacts with Adam's
epsilon and is applied by the learner (``LearnSettings.loss_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor

from smite_ops.settings import SETTINGS_CONFIG, EpochIndex, Fraction, NonNegativeFloat, PositiveFloat
from smite_ops.was import MapShapeError


def _check_labels(labels: Tensor, num_classes: int, what: str) -> None:
    if labels.dtype != torch.int64:
        raise MapShapeError(f"{what}: labels must be int64, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise MapShapeError(
            f"{what}: labels must lie in [0, {num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]"
        )


def _check_maps_match(maps: Tensor, labels: Tensor, what: str) -> None:
    """``maps`` (P, h, w) against ``labels`` (h, w)."""
    if maps.dim() != 3 or maps.shape[1:] != labels.shape:
        raise MapShapeError(f"{what}: maps {tuple(maps.shape)} must be (P, h, w) for labels {tuple(labels.shape)}")
    _check_labels(labels, maps.shape[0], what)


def class_weights(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Cross-entropy class weights from a label map (§3.3 for masks, §5 for voted labels).

    With ``n_c`` the pixel count of class ``c`` and ``N_fg = sum_{c>=1} n_c``: ``w_0 = 1``,
    ``w_c = N_fg / n_c`` for foreground classes present, ``0`` for absent ones.

    Args:
        labels: int64 labels of any shape (``(h, w)`` mask or ``(F, h, w)`` votes), in ``[0, P)``.
        num_classes: ``P``.
        dtype: floating dtype of the result.

    Returns:
        ``(P,)`` weights of ``dtype`` on ``labels``' device.
    """
    _check_labels(labels, num_classes, "class_weights")
    counts = torch.bincount(labels.flatten(), minlength=num_classes).to(dtype)
    foreground = counts[1:]
    weights = torch.where(foreground > 0, foreground.sum() / foreground.clamp_min(1.0), 0.0)
    return torch.cat([torch.ones(1, dtype=dtype, device=labels.device), weights])


def cross_attention_ce(logits: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    """L1: weighted pixel-wise cross-entropy of raw class logits against a mask (§3.3).

    Args:
        logits: ``(P, h, w)`` raw cross-attention logits (softmax over ``P`` happens inside).
        mask: ``(h, w)`` int64 labels in ``[0, P)``.
        weights: ``(P,)`` class weights, e.g. :func:`class_weights`.

    Returns:
        Scalar: ``sum_p w_{M(p)} CE(p) / sum_p w_{M(p)}`` (weighted mean over pixels).
    """
    _check_maps_match(logits, mask, "cross_attention_ce")
    return F.cross_entropy(logits.unsqueeze(0), mask.unsqueeze(0), weight=weights.to(logits.dtype))


def one_hot_maps(mask: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(h, w)`` int64 labels -> ``(P, h, w)`` one-hot maps ``Y`` of ``dtype``."""
    _check_labels(mask, num_classes, "one_hot_maps")
    return F.one_hot(mask, num_classes).movedim(-1, 0).to(dtype)


def was_mse(was_train: Tensor, mask: Tensor) -> Tensor:
    """L2: ``P * mean((S_train - Y)^2)`` over all ``P*h*w`` entries (§3.3).

    Args:
        was_train: ``(P, h, w)`` training-variant WAS map, values in ``[0, 1]``.
        mask: ``(h, w)`` int64 labels in ``[0, P)``.
    """
    _check_maps_match(was_train, mask, "was_mse")
    num_classes = was_train.shape[0]
    return num_classes * F.mse_loss(was_train, one_hot_maps(mask, num_classes, was_train.dtype))


def sd_loss(eps_pred: Tensor, eps: Tensor) -> Tensor:
    """L_sd: mean squared error between predicted and true noise (any equal shapes; §3.3)."""
    if eps_pred.shape != eps.shape:
        raise MapShapeError(f"sd_loss: eps_pred {tuple(eps_pred.shape)} and eps {tuple(eps.shape)} differ")
    return F.mse_loss(eps_pred, eps)


def low_pass_mask(height: int, width: int, cutoff: float, device: torch.device | None = None) -> Tensor:
    """Radial low-pass on a centred (``fftshift``-ed) spectrum: ``(height, width)`` bool.

    Keeps frequencies whose radius, in units of the Nyquist frequency (0.5 cycles/pixel), is at
    most ``cutoff``; e.g. ``cutoff=0.25`` on 64 x 64 keeps a disc of radius 8 bins around DC.
    """
    fy = torch.fft.fftshift(torch.fft.fftfreq(height, device=device)) / 0.5
    fx = torch.fft.fftshift(torch.fft.fftfreq(width, device=device)) / 0.5
    return fy[:, None] ** 2 + fx[None, :] ** 2 <= cutoff**2


def high_pass_mask(height: int, width: int, inner_fraction: float, device: torch.device | None = None) -> Tensor:
    """High-pass on a centred spectrum: ``(height, width)`` bool, False on a central box around DC.

    The box has sides ``round(inner_fraction * height)`` x ``round(inner_fraction * width)``
    starting ``side // 2`` before the DC bin (index ``n // 2``). ``inner_fraction = 60/64`` gives the
    reference's central 60 x 60 of 64 x 64, keeping only the outer 2-pixel ring.
    """
    keep = torch.ones(height, width, dtype=torch.bool, device=device)
    box_h, box_w = round(inner_fraction * height), round(inner_fraction * width)
    top, left = height // 2 - box_h // 2, width // 2 - box_w // 2
    keep[top : top + box_h, left : left + box_w] = False
    return keep


def _band_mse(spectrum: Tensor, target: Tensor, band: Tensor, multiply: bool = False) -> Tensor:
    """Amplitude MSE + phase MSE inside ``band``, each a mean over the full grid, summed over classes.

    ``multiply=True`` reproduces the official code: both spectra are multiplied by the band as a complex mask,
    so masked-out coefficients become signed zeros whose phases (0 or +-pi, by the signs of the original real
    and imaginary parts) enter the phase term; otherwise masked-out coefficients add nothing.
    """
    num_cells = band.numel()
    if multiply:
        kept, kept_target = spectrum * band.to(spectrum.dtype), target * band.to(target.dtype)
    else:
        kept, kept_target = spectrum[:, band], target[:, band]  # (P, K): zeros outside the band add nothing
    amplitude = (kept.abs() - kept_target.abs()).square().sum() / num_cells
    phase = (kept.angle() - kept_target.angle()).square().sum() / num_cells
    return amplitude + phase


def frequency_loss(
    was_train: Tensor,
    one_hot: Tensor,
    low_cutoff: float = 0.25,
    high_inner_fraction: float = 60 / 64,
    high_weight: float = 10.0,
    reference_quirk: bool = False,
) -> Tensor:
    """L_freq: amplitude and phase MSEs of low- and high-passed spectra (§3.3, §10.2).

    Each class map of ``was_train`` and ``one_hot`` goes through a centred 2D FFT
    (``torch.fft.fft2``, unnormalised, then ``fftshift``). Per band, the loss adds the MSE of the
    amplitudes and the MSE of the phases (plain angle difference, no wrap-around, as the reference)
    with masked-out coefficients counted as zeros in the mean over the ``h*w`` grid; the terms are
    summed over classes: ``low + high_weight * high``. As in the reference, phases of (numerically)
    zero coefficients are arbitrary and their gradient grows like ``1 / |coefficient|``.

    The low band is a real radial low-pass (:func:`low_pass_mask` with ``low_cutoff``); the
    reference's low-pass is all ones by a bug, reproduced with ``reference_quirk=True``, which also applies
    the bands as the reference does (complex multiplication: masked-out coefficients become signed zeros
    whose phases, 0 or +-pi, enter the phase MSE). The high
    band is :func:`high_pass_mask` with ``high_inner_fraction`` (reference: central 60 x 60 of
    64 x 64 removed), proportional to the map size.

    Args:
        was_train: ``(P, h, w)`` training-variant WAS map.
        one_hot: ``(P, h, w)`` one-hot target maps (:func:`one_hot_maps`).

    Returns:
        Scalar loss in ``was_train``'s real dtype.
    """
    if was_train.dim() != 3 or was_train.shape != one_hot.shape:
        raise MapShapeError(
            f"frequency_loss: was_train {tuple(was_train.shape)} and one_hot {tuple(one_hot.shape)}"
            " must be equal (P, h, w)"
        )
    _, height, width = was_train.shape
    spectrum = torch.fft.fftshift(torch.fft.fft2(was_train), dim=(-2, -1))
    target = torch.fft.fftshift(torch.fft.fft2(one_hot.to(was_train.dtype)), dim=(-2, -1))
    device = was_train.device
    if reference_quirk:
        low_band = torch.ones(height, width, dtype=torch.bool, device=device)
    else:
        low_band = low_pass_mask(height, width, low_cutoff, device)
    high_band = high_pass_mask(height, width, high_inner_fraction, device)
    low = _band_mse(spectrum, target, low_band, reference_quirk)
    return low + high_weight * _band_mse(spectrum, target, high_band, reference_quirk)


def track_ce(logits: Tensor, voted_labels: Tensor) -> Tensor:
    """E_Tracking: weighted cross-entropy of WAS logits against voted labels (§5).

    Args:
        logits: ``(F, P, h, w)`` inference-variant WAS maps used as logits.
        voted_labels: ``(F, h, w)`` int64 voted labels in ``[0, P)``.

    Returns:
        Scalar weighted-mean cross-entropy with :func:`class_weights` of ``voted_labels``.
    """
    if logits.dim() != 4 or logits.shape[0] != voted_labels.shape[0] or logits.shape[2:] != voted_labels.shape[1:]:
        raise MapShapeError(
            f"track_ce: logits {tuple(logits.shape)} must be (F, P, h, w) for labels {tuple(voted_labels.shape)}"
        )
    weights = class_weights(voted_labels, logits.shape[1], logits.dtype)
    return F.cross_entropy(logits, voted_labels, weight=weights)


@dataclass(frozen=True)
class LossTerms:
    """The separate loss terms of one training step (scalars) and their weighted ``total``."""

    cross_entropy: Tensor
    was_mse: Tensor
    sd: Tensor
    frequency: Tensor | None
    total: Tensor


@pydantic.dataclasses.dataclass(frozen=True, config=SETTINGS_CONFIG)
class LossOptions:
    """The training loss's tunables (defaults: the shipped method's, §3.3, §9).

    Attributes:
        coef_sd: weight of the denoising loss ``L_sd``.
        coef_freq: weight of the frequency loss ``L_freq``.
        freq_from_epoch: first epoch (0-based) with the frequency term.
        freq_low_cutoff, freq_high_inner_fraction, freq_high_weight, freq_reference_quirk: the
            ``low_cutoff``, ``high_inner_fraction``, ``high_weight`` and ``reference_quirk`` of
            :func:`frequency_loss` (the quirk: the reference's all-pass low band and complex masking).
    """

    coef_sd: NonNegativeFloat = 0.005
    coef_freq: NonNegativeFloat = 0.001
    freq_from_epoch: EpochIndex = 6
    freq_low_cutoff: PositiveFloat = 0.25
    freq_high_inner_fraction: Fraction = 60 / 64
    freq_high_weight: NonNegativeFloat = 10.0
    freq_reference_quirk: bool = False


@pydantic.dataclasses.dataclass(frozen=True, config=SETTINGS_CONFIG)
class SmiteLoss(LossOptions):
    """Total training loss ``L1 + L2 + coef_sd * L_sd + coef_freq * L_freq * [epoch >= freq_from_epoch]``."""

    def __call__(
        self,
        cross_logits: Tensor,
        was_train: Tensor,
        mask: Tensor,
        eps_pred: Tensor,
        eps: Tensor,
        epoch: int,
    ) -> LossTerms:
        """Loss of one reference sample.

        Args:
            cross_logits: ``(P, h, w)`` raw cross-attention logits.
            was_train: ``(P, h, w)`` training-variant WAS map.
            mask: ``(h, w)`` int64 part labels.
            eps_pred, eps: predicted (CFG-combined) and true noise, equal shapes.
            epoch: current epoch (0-based); the frequency term is active from ``freq_from_epoch``.
        """
        num_classes = cross_logits.shape[0]
        ce = cross_attention_ce(cross_logits, mask, class_weights(mask, num_classes, cross_logits.dtype))
        mse = was_mse(was_train, mask)
        sd = sd_loss(eps_pred, eps)
        total = ce + mse + self.coef_sd * sd
        frequency = None
        if epoch >= self.freq_from_epoch:
            frequency = frequency_loss(
                was_train,
                one_hot_maps(mask, num_classes, was_train.dtype),
                self.freq_low_cutoff,
                self.freq_high_inner_fraction,
                self.freq_high_weight,
                self.freq_reference_quirk,
            )
            total = total + self.coef_freq * frequency
        return LossTerms(cross_entropy=ce, was_mse=mse, sd=sd, frequency=frequency, total=total)
