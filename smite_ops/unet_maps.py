"""One UNet pass with attention capture, turned into WAS class maps (METHOD.md §2.4-2.7, §3.2, §4.3).

:class:`MapRunner` owns the backbone's UNet configured for video (cross-frame self-attention and Q/K
capture at the layers of :func:`smite_ops.attention.auto_capture_layers`) and offers the steps every phase
shares: encode frames to latents, noise them to a timestep, run the UNet on a window, and read the captured
attention as cross-attention logits and WAS maps at the self-attention resolution (64x64 for SD at 512 px).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from smite_ops.attention import configure_video_unet
from smite_ops.backbone import Backbone
from smite_ops.was import cross_attention_logits, was_inference, was_training


@dataclass(frozen=True)
class MapOptions:
    """How captured attention becomes maps.

    Attributes:
        chunk_size: query pixels per self-attention propagation call (bounds memory; None = one call).
        attention_scale: logit scale; None = ``1/sqrt(head_dim)`` (1/8 for SD, as the reference).
        vae_batch: frames per VAE encoder call.
        readout: the class maps :meth:`MapRunner.inference_maps` reads for validation, segmentation and guidance:
            ``was``, the WAS maps (§2.6, the method), or ``cross_attention``, the raw cross-attention logits
            without the self-attention propagation (the tiny preset, whose self-attention smears parts).
    """

    chunk_size: int | None = 1024
    attention_scale: float | None = None
    vae_batch: int = 8
    readout: Literal["was", "cross_attention"] = "was"


class MapRunner:
    """The backbone's UNet set up for SMITE, with helpers for latents and maps.

    Args:
        backbone: a loaded backbone; its UNet gets video attention processors installed.
        cross_frame: self-attention spans all frames of a window (METHOD.md §2.2).
        pooled_group_norm: resnet group norms pool statistics over the frames of a window (§2.2).
        conditional_half: capture only the second half of a CFG-doubled batch.
        options: map computation options.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        cross_frame: bool = True,
        pooled_group_norm: bool = False,
        conditional_half: bool = False,
        options: MapOptions = MapOptions(),
    ) -> None:
        self.backbone = backbone
        self.options = options
        self.frame_forwards = 0
        """UNet frame-forward equivalents run so far: frames through :meth:`predict`, plus what callers that
        backpropagate add with :meth:`count_backward` (a backward counts two forwards)."""
        self.video = configure_video_unet(
            backbone.unet, cross_frame=cross_frame, pooled_group_norm=pooled_group_norm,
            conditional_half=conditional_half,
        )
        if not self.video.capture.of_kind("self") or not self.video.capture.of_kind("cross"):
            raise ValueError("the UNet has no self- or cross-attention layers to read maps from")

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """VAE-encode images ``(T, 3, H, W)`` in ``[-1, 1]`` to scaled latents ``(T, C, H/8, W/8)``.

        The posterior is sampled, as in the reference (METHOD.md §1.3).
        """
        vae = self.backbone.vae
        latents = []
        for start in range(0, images.shape[0], self.options.vae_batch):
            batch = images[start : start + self.options.vae_batch].to(self.device, self.dtype)
            posterior = vae.encode(batch).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator, device="cpu").to(self.device, self.dtype)
            latents.append(posterior.mean + posterior.std * noise)
        return torch.cat(latents) * vae.config.scaling_factor

    def add_noise(
        self, latents: Tensor, timestep: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps``; returns ``(z_t, eps)``."""
        eps = torch.randn(latents.shape, generator=generator, device="cpu").to(latents.device, latents.dtype)
        steps = torch.full((latents.shape[0],), timestep, dtype=torch.long, device=latents.device)
        return self.backbone.scheduler.add_noise(latents, eps, steps), eps

    def predict(self, latents: Tensor, timestep: int, conditioning: Tensor, num_frames: int) -> Tensor:
        """Run the UNet on ``latents`` ``(B*F, C, h, w)`` (clips of ``num_frames`` consecutive frames).

        Args:
            conditioning: ``(L, D)`` for all samples, or ``(B*F, L, D)`` per sample.

        Returns:
            The noise prediction ``(B*F, C, h, w)``; the captured attention of this call replaces the last.
        """
        self.video.capture.clear()
        self.frame_forwards += latents.shape[0]
        if conditioning.dim() == 2:
            conditioning = conditioning.expand(latents.shape[0], *conditioning.shape)
        self.video.num_frames = num_frames
        return self.backbone.unet(
            latents, timestep, encoder_hidden_states=conditioning.to(self.device, self.dtype)
        ).sample

    def count_backward(self, frames: int, recomputed: bool = False) -> None:
        """Count a backward pass through the last :meth:`predict` of ``frames`` frames: two frame-forwards each,
        three when gradient checkpointing recomputes the forward."""
        self.frame_forwards += (3 if recomputed else 2) * frames

    @property
    def map_size(self) -> int:
        """Side of the maps: the self-attention feature map of the last call (64 for SD at 512 px)."""
        layer = self.video.capture.of_kind("self")[0]
        if layer.size is None:
            raise RuntimeError("no UNet call captured yet")
        height, width = layer.size
        if height != width:
            raise ValueError(f"maps need square frames, got a {height}x{width} attention map")
        return height

    def cross_logits(self, num_parts: int) -> Tensor:
        """Raw cross-attention logits of the class tokens ``(F, P, s, s)`` at the map size (§2.4)."""
        capture = self.video.capture
        return cross_attention_logits(capture.cross_layers(), num_parts, self.map_size, self.options.attention_scale)

    def inference_maps(self, num_parts: int, out_size: int | None = None) -> Tensor:
        """Class maps ``(F, P, out, out)`` of the last call, ``out`` defaulting to the map size: the inference-variant
        WAS (§2.6), or the cross-attention logits resized bilinearly when ``options.readout`` says so."""
        size = out_size or self.map_size
        if self.options.readout == "cross_attention":
            return F.interpolate(self.cross_logits(num_parts), size=(size, size), mode="bilinear", align_corners=False)
        return was_inference(
            self.cross_logits(num_parts), self.video.capture.self_layers(), size,
            self.options.attention_scale, self.options.chunk_size,
        )

    def training_maps(self, num_parts: int) -> tuple[Tensor, Tensor]:
        """``(cross logits, training-variant WAS)``, both ``(F, P, s, s)``, of the last call (§2.7)."""
        logits = self.cross_logits(num_parts)
        options = self.options
        maps = was_training(logits, self.video.capture.self_layers(), options.attention_scale, options.chunk_size)
        return logits, maps

    def release(self) -> None:
        """Drop captured tensors (and their graphs)."""
        self.video.capture.clear()

    def close(self) -> None:
        """Give the UNet back its stock processors and norms (the runner is unusable afterwards)."""
        self.release()
        self.video.restore()
