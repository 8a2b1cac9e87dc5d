"""Spatio-temporal latent guidance of one window (METHOD.md §4.4, §7).

The window's clean latents are noised to the first guided timestep; then for each timestep ``t_i`` a
no-grad UNet pass over the whole window gives the current maps ``S_cur`` and the noise prediction, DDIM
(eta = 0) steps the latents to ``t_{i+1}``, and the latents are optimised against

    ``E = track_weight * E_Track(S(z), vote(S_cur)) + reg_weight * E_Reg(S(z), S_ref)``

with ``iterations`` Adam updates per slice of ``slice_frames`` frames (the UNet sees only the slice; the
gradient flows back through the UNet into the latents). The votes ``S_trk`` are computed once per denoising
step from the whole-window maps and held fixed during its iterations. The final scores are the WAS of the
last pass. ``S_ref`` is the caller's: the window's unguided scores, or a stitched whole-video reference
(ARCHITECTURE.md §4 phase A), or the reference's hand-over of the previous window's result.

Deliberate differences from the reference, all documented at their setting:

- the optimisation runs the UNet at ``t_{i+1}``, the noise level the stepped latents are at (the reference
  uses ``t_i``); the step size uses the same ``t``;
- DDIM steps go from each listed timestep to the next (the reference always steps by one, which is the same
  for its consecutive 104..101);
- latents are optimised in float32 whatever the UNet dtype (bf16 cannot hold a 0.014 update of a latent of
  magnitude 1);
- ``dct_span="window"`` takes the DCT over the whole window: the other slices enter with their latest maps,
  held fixed (the reference transforms each 4-frame slice alone).
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from smite_ops.lowpass import LowpassMode, lowpass_energy, lowpass_mask
from smite_ops.segmentation import WindowSegmenter, resize, resize_scores, to_unit_range
from smite_ops.settings import (
    SETTINGS_CONFIG,
    DecreasingTimesteps,
    Fraction,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
)
from smite_ops.tracking.base import Tracks
from smite_ops.unet_maps import MapRunner
from smite_ops.voting import GridRounding, TrackLoss, project_to_grid, track_energy, vote


class GuidanceError(ValueError):
    """Guidance inputs that do not fit together (frames, tracks, reference maps, settings)."""


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class GuidanceSettings:
    """Spatio-temporal guidance (METHOD.md §7, §9): the defaults are the product's (tracking term on, soft loss).

    The reference ships both weights at 0 (guidance off) and ``track_loss="hard"``; ``benchmarks/ablation.py``
    measures the difference. Validated on construction (``ValidationError``, a ``ValueError``).

    Attributes:
        track_weight: lambda_T of E_Track (reference 0; its documentation suggests 0.1).
        reg_weight: lambda_R of E_Reg (reference 0; suggested 8).
        timesteps: guided denoising timesteps, decreasing; the first is the noise level (reference 104..101).
        iterations: latent updates per denoising step and slice.
        step_scale: the update is ``step_scale * beta_t / (1 - beta_t)`` times the Adam direction.
        betas, eps: Adam moment decays and epsilon (moments reset at every denoising step).
        slice_frames: frames per optimisation slice (the UNet sees one slice at a time; bounds memory).
        voting_window: frames of the tracking voting window.
        dct_threshold: fraction ``tau`` of DCT indices the low-pass keeps per axis.
        first_step_threshold: ``tau`` at the first denoising step (almost all-pass in the reference).
        temporal_threshold: ``tau`` of the frame axis in ``spatiotemporal`` mode (None: ``dct_threshold``).
        lowpass: ``spatial`` (reference) or ``spatiotemporal`` (the paper's 3D low-pass).
        dct_span: DCT over each ``slice`` (reference) or over the whole ``window``.
        track_loss: ``hard`` (reference CE against voted labels) or ``soft`` (KL against the voted vectors,
            zero-gradient where the maps already equal their votes); see :func:`smite_ops.voting.track_energy`.
        track_projection: how track pixels map to grid cells, ``official`` (``x / 8 - 0.5`` rounded half to
            even) or ``pixel_centre``; see :func:`smite_ops.voting.project_to_grid`.
        gradient_checkpointing: recompute UNet activations in backward (less memory, about one more forward).
    """

    track_weight: NonNegativeFloat = 0.1
    reg_weight: NonNegativeFloat = 0.0
    timesteps: DecreasingTimesteps = (104, 103, 102, 101)
    iterations: PositiveInt = 15
    step_scale: PositiveFloat = 10.0
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    eps: PositiveFloat = 1e-5
    slice_frames: PositiveInt = 4
    voting_window: PositiveInt = 15
    dct_threshold: Fraction = 0.4
    first_step_threshold: Fraction = 0.999
    temporal_threshold: Fraction | None = None
    lowpass: LowpassMode = "spatial"
    dct_span: Literal["slice", "window"] = "slice"
    track_loss: TrackLoss = "soft"
    track_projection: GridRounding = "official"
    gradient_checkpointing: bool = False

    @property
    def enabled(self) -> bool:
        """Whether any energy term is on (otherwise the latents are only denoised)."""
        return self.track_weight > 0 or self.reg_weight > 0

    def frame_forwards(self, num_frames: int) -> int:
        """UNet frame-forward equivalents of one guided window of ``num_frames`` frames.

        Counts the unguided reference pass (``S_ref``), one pass per timestep, and per optimised step
        ``iterations`` forward + backward passes of every frame, a backward counting as two forwards
        (three with gradient checkpointing, which repeats the forward).
        """
        passes = 1 + len(self.timesteps)
        if self.enabled:
            per_update = 4 if self.gradient_checkpointing else 3
            passes += per_update * self.iterations * (len(self.timesteps) - 1)
        return passes * num_frames


def ddim_step(latents: Tensor, eps: Tensor, alpha_bar: Tensor, t: int, t_next: int) -> Tensor:
    """Deterministic DDIM (eta = 0) from timestep ``t`` to ``t_next`` given the noise prediction ``eps``.

    ``x0 = (z - sqrt(1 - a_t) eps) / sqrt(a_t)``, ``z' = sqrt(a_next) x0 + sqrt(1 - a_next) eps`` with
    ``a = alpha_bar`` (the scheduler's ``alphas_cumprod``); computed in float32, returned in ``latents``' dtype.
    """
    a_t, a_next = alpha_bar[t].float(), alpha_bar[t_next].float()
    z, e = latents.float(), eps.float()
    x0 = (z - (1 - a_t).sqrt() * e) / a_t.sqrt()
    return (a_next.sqrt() * x0 + (1 - a_next).sqrt() * e).to(latents.dtype)


class GuidedWindow:
    """Runs guidance on windows with a :class:`MapRunner` and a part model's conditioning.

    Args:
        runner: the map runner (UNet with video attention and capture installed).
        conditioning: ``(L, D)`` text conditioning with the learned part tokens.
        num_parts: ``P``, classes including background.
        settings: guidance settings.
    """

    def __init__(self, runner: MapRunner, conditioning: Tensor, num_parts: int, settings: GuidanceSettings) -> None:
        self.runner = runner
        self.conditioning = conditioning
        self.num_parts = num_parts
        self.settings = settings
        scheduler = runner.backbone.scheduler
        self._alpha_bar = scheduler.alphas_cumprod.float()
        self._betas = scheduler.betas.float()

    def __call__(
        self,
        latents: Tensor,
        reference: Tensor,
        tracks: Tracks,
        track_frame_size: tuple[int, int],
        generator: torch.Generator,
        out_size: int | None = None,
        votes: Tensor | None = None,
    ) -> Tensor:
        """Guide one window and return its final class scores.

        Args:
            latents: ``(T, C, h, w)`` clean VAE latents of the window (scaled).
            reference: ``(T, P, s, s)`` unguided WAS ``S_ref`` (any square size; resized to the map size).
            tracks: the window's tracks (``slice_tracks``), ``T`` frames, pixels in ``track_frame_size``.
            track_frame_size: ``(H, W)`` of the frames given to the tracker.
            generator: seeds the noise added at the first timestep.
            out_size: side of the returned scores; None = the map size.
            votes: ``(T, P, s, s)`` fixed tracking votes ``S_trk`` for every step (e.g. the track-filtered
                phase-A scores, ``smite_ops.temporal``); None = vote on each step's current maps (the reference).

        Returns:
            ``(T, P, out, out)`` float32 inference-variant WAS of the last pass.
        """
        frames = latents.shape[0]
        fixed = (reference,) if votes is None else (reference, votes)
        if tracks.num_frames != frames or any(m.dim() != 4 or m.shape[:2] != (frames, self.num_parts) for m in fixed):
            raise GuidanceError(
                f"a window of {frames} frames and {self.num_parts} classes got tracks of {tracks.num_frames} frames "
                f"and reference maps {tuple(reference.shape)}"
            )
        steps = self.settings.timesteps
        z, _ = self.runner.add_noise(latents, steps[0], generator)
        z = z.float()
        cells, valid = None, None
        for index, (t, t_next) in enumerate(itertools.pairwise(steps)):
            eps, current = self._pass(z, t)
            z = ddim_step(z, eps, self._alpha_bar.to(z.device), t, t_next)
            if not self.settings.enabled:
                continue
            size = current.shape[-1]
            if cells is None:
                cells, valid = project_to_grid(
                    tracks.points, tracks.visible, track_frame_size, (size, size), self.settings.track_projection
                )
                cells, valid = cells.to(z.device), valid.to(z.device)
            if votes is None:
                voted = vote(current, cells, valid, self.settings.voting_window)
            else:
                voted = resize_scores(votes.float(), size).to(z.device)
            ref = resize_scores(reference.float(), size).to(z.device)
            threshold = self.settings.first_step_threshold if index == 0 else self.settings.dct_threshold
            z = self.optimise(z, t_next, current, voted, ref, threshold)
        _, scores = self._pass(z, steps[-1], out_size)
        return scores

    @torch.no_grad()
    def _pass(self, z: Tensor, t: int, out_size: int | None = None) -> tuple[Tensor, Tensor]:
        """Whole-window UNet pass: noise prediction and float32 WAS ``(T, P, out, out)`` (default: map size)."""
        eps = self.runner.predict(z.to(self.runner.dtype), t, self.conditioning, num_frames=z.shape[0])
        maps = self.runner.inference_maps(self.num_parts, out_size).float()
        self.runner.release()
        return eps, maps

    def optimise(
        self, z: Tensor, t: int, current: Tensor, voted: Tensor, reference: Tensor, threshold: float
    ) -> Tensor:
        """Optimise the latents of one denoising step (METHOD.md §7).

        Args:
            z: ``(T, C, h, w)`` float32 latents at noise level ``t``.
            t: timestep the UNet runs at; the step size is ``step_scale * beta_t / (1 - beta_t)``.
            current: ``(T, P, s, s)`` maps of the whole-window pass (the other slices' maps for
                ``dct_span="window"`` until they are recomputed).
            voted: ``(T, P, s, s)`` tracking votes ``S_trk``; reference: ``(T, P, s, s)`` ``S_ref``.
            threshold: low-pass fraction of this step.

        Returns:
            ``(T, C, h, w)`` float32 latents after ``iterations`` Adam updates of every slice (moments fresh).
        """
        settings = self.settings
        frames = z.shape[0]
        step = settings.slice_frames
        bounds = [(start, min(start + step, frames)) for start in range(0, frames, step)]
        leaves = [z[a:b].detach().clone().requires_grad_(True) for a, b in bounds]
        lr = settings.step_scale * float(self._betas[t] / (1 - self._betas[t]))
        optimisers = [torch.optim.Adam([leaf], lr=lr, betas=settings.betas, eps=settings.eps) for leaf in leaves]
        latest = current.clone()
        unet = self.runner.backbone.unet
        if settings.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        try:
            for _ in range(settings.iterations):
                for (a, b), leaf, optimiser in zip(bounds, leaves, optimisers, strict=True):
                    optimiser.zero_grad(set_to_none=True)
                    self.runner.predict(leaf.to(self.runner.dtype), t, self.conditioning, num_frames=b - a)
                    maps = self.runner.inference_maps(self.num_parts).float()
                    energy = self.energy(maps, a, b, voted, reference, latest, threshold)
                    energy.backward()
                    self.runner.count_backward(b - a, settings.gradient_checkpointing)
                    self.runner.release()
                    optimiser.step()
                    latest[a:b] = maps.detach()
        finally:
            if settings.gradient_checkpointing:
                unet.disable_gradient_checkpointing()
        return torch.cat([leaf.detach() for leaf in leaves])

    def energy(
        self, maps: Tensor, a: int, b: int, voted: Tensor, reference: Tensor, latest: Tensor, threshold: float
    ) -> Tensor:
        """``E = track_weight * E_Track + reg_weight * E_Reg`` of the slice ``[a, b)`` (a term is skipped at weight 0).

        Args:
            maps: ``(b - a, P, s, s)`` live maps of the slice (with gradient).
            a, b: the slice's frames in the window.
            voted, reference: ``(T, P, s, s)`` votes and ``S_ref`` of the whole window.
            latest: ``(T, P, s, s)`` latest maps of every frame (used with ``dct_span="window"``).
            threshold: low-pass fraction.

        Returns:
            Scalar float32. E_Reg is normalised by the slice's ``P * (b - a) * s * s`` map entries whatever the
            DCT span, so that ``reg_weight`` means the same for both spans.
        """
        settings = self.settings
        energy = maps.new_zeros(())
        if settings.track_weight > 0:
            energy = energy + settings.track_weight * track_energy(maps, voted[a:b], settings.track_loss)
        if settings.reg_weight > 0:
            if settings.dct_span == "window":
                volume, target = torch.cat([latest[:a], maps, latest[b:]]), reference
            else:
                volume, target = maps, reference[a:b]
            size = maps.shape[-1]
            mask = lowpass_mask(
                volume.shape[0], size, size, threshold, settings.lowpass, settings.temporal_threshold, maps.device
            )
            energy = energy + settings.reg_weight * lowpass_energy(volume, target, mask, normaliser=maps.numel())
        return energy


class GuidedSegmenter:
    """Guided segmentation of windows of frames, sharing a :class:`WindowSegmenter`'s runner and model.

    Guidance runs on whole frames at the segmenter's working resolution (no crops or tiles); ``S_ref`` may
    come from any of the segmenter's modes, since its scores cover the whole frame.

    Args:
        segmenter: the unguided segmenter (its settings give the working resolution and output size).
        settings: guidance settings.
    """

    def __init__(self, segmenter: WindowSegmenter, settings: GuidanceSettings) -> None:
        self.segmenter = segmenter
        self.guide = GuidedWindow(segmenter.runner, segmenter.conditioning, segmenter.num_parts, settings)

    def __call__(
        self,
        frames: Tensor,
        reference: Tensor,
        tracks: Tracks,
        track_frame_size: tuple[int, int],
        seed: int,
        votes: Tensor | None = None,
    ) -> Tensor:
        """Segment one window with guidance.

        Args:
            frames: ``(T, 3, H, W)`` uint8 RGB frames at any size.
            reference: ``(T, P, s, s)`` unguided scores ``S_ref`` of these frames (e.g. the segmenter's output
                with the overlap frames handed over from the previous window).
            tracks: the window's tracks; pixels in ``track_frame_size = (H, W)``.
            seed: seeds VAE sampling and noise.
            votes: fixed tracking votes ``(T, P, s, s)`` (see :meth:`GuidedWindow.__call__`); None = per step.

        Returns:
            ``(T, P, S, S)`` float32 class scores, ``S`` = the segmenter's output size (default: the map size).
        """
        generator = torch.Generator().manual_seed(seed)
        side = self.segmenter.settings.resolution
        latents = self.segmenter.runner.encode(resize(to_unit_range(frames), (side, side)), generator)
        out_size = self.segmenter.settings.output_size
        return self.guide(latents, reference, tracks, track_frame_size, generator, out_size, votes)
