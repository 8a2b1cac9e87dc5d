"""Learning a part model from reference images (METHOD.md §3.2-3.6).

:class:`PartLearner` holds the trainable state (part tokens and the chosen UNet projections), performs one
optimisation step per (augmented) reference sample and scores validation images. The two stages follow the
reference: stage 1 trains only the tokens; stage 2 trains the cross-attention projections with the tokens
frozen (``stage2="tokens_frozen"``, the reference) or together with them (``"joint"``, the paper). The
reference's no-op update at stage-2 epochs divisible by 10 is not reproduced.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import Tensor, nn

from smite_ops.backbone import Backbone
from smite_ops.conditioning import PartTokens
from smite_ops.losses import LossTerms, SmiteLoss
from smite_ops.metrics import miou
from smite_ops.part_model import PartModel
from smite_ops.segmentation import resize
from smite_ops.settings import SETTINGS_CONFIG, EpochIndex, PositiveFloat, PositiveInt, TimestepRange
from smite_ops.unet_maps import MapOptions, MapRunner

Trainable = Literal["crossattn_kv", "crossattn", "crossattn_kv+selfattn_qk", "text_embeds"]

_CROSS_KV = (".attn2.to_k.weight", ".attn2.to_v.weight")
_TRAINED_SUFFIXES: dict[str, tuple[str, ...]] = {
    "crossattn_kv": _CROSS_KV,
    "crossattn_kv+selfattn_qk": (*_CROSS_KV, ".attn1.to_q.weight", ".attn1.to_k.weight"),
}


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class LearnOptions:
    """The tunables of learning (defaults: the reference's shipped values, METHOD.md §3, §9).

    Attributes:
        token_epochs: stage 1, the epochs that train only the part tokens.
        stage2: ``tokens_frozen`` (the reference: stage 2 trains the UNet weights alone) or ``joint`` (the paper).
        trainable: the UNet weights stage 2 trains besides the tokens (:func:`trainable_unet_parameters`).
        token_lr, unet_lr: Adam learning rates of the tokens and of the UNet weights.
        t_range: inclusive range of the training timestep, drawn per sample.
        guidance_scale: classifier-free guidance scale of the training forward (1: no unconditional branch).
        validation_t_range: inclusive range of the validation timestep.
        loss_scale: factor on the loss before backward, as the reference's ``backward_and_optimize(scale=0.01)``.
            With Adam it only divides epsilon by itself (1e-8 / 0.01 = 1e-6 on the unscaled gradient): entries
            whose gradient is below ~1e-6 move less than ``lr`` in a step.
    """

    token_epochs: EpochIndex = 51
    stage2: Literal["tokens_frozen", "joint"] = "tokens_frozen"
    trainable: Trainable = "crossattn_kv"
    token_lr: PositiveFloat = 0.1
    unet_lr: PositiveFloat = 1e-6
    t_range: TimestepRange = (5, 100)
    guidance_scale: Annotated[float, Field(ge=1)] = 100.0
    validation_t_range: TimestepRange = (95, 105)
    loss_scale: PositiveFloat = 0.01


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class LearnSettings(LearnOptions):
    """:class:`LearnOptions`, the working resolution in pixels and the loss."""

    resolution: PositiveInt = 512
    loss: SmiteLoss = Field(default_factory=SmiteLoss)


def trainable_unet_parameters(unet: nn.Module, trainable: Trainable) -> dict[str, nn.Parameter]:
    """The UNet parameters a mode trains.

    ``crossattn_kv``: the cross-attention (``attn2``) K/V weights (the reference); ``crossattn``: every
    ``attn2`` parameter; ``crossattn_kv+selfattn_qk``: the ``attn2`` K/V weights and the self-attention
    (``attn1``) Q/K weights, so that the WAS loss also shapes the self-attention affinity ``Ā`` (the
    reference's ``allattn``-style modes, narrowed to what the maps read); ``text_embeds``: none.
    """
    if trainable == "text_embeds":
        return {}
    suffixes = _TRAINED_SUFFIXES.get(trainable)
    chosen = {
        name: param
        for name, param in unet.named_parameters()
        if (name.endswith(suffixes) if suffixes else ".attn2." in name)
    }
    if not chosen:
        raise ValueError(f"the UNet has no parameters for trainable={trainable!r}")
    return chosen


def nearest_mask(mask: Tensor, size: int) -> Tensor:
    """Nearest-neighbour resize of an ``(H, W)`` label map to ``(size, size)`` int64 (METHOD.md §1.4)."""
    resized = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")
    return resized[0, 0].long()


class PartLearner:
    """Trainable part tokens and UNet projections, with one-sample optimisation steps.

    Args:
        backbone: the backbone (its UNet is modified in place: processors installed, chosen weights trained).
        part_names: ``P`` names, ``background`` first.
        base_embedding: ``(L, D)`` encoded prompt; ``init_tokens``: ``(P - 1, D)`` token initialisation.
        uncond_embedding: ``(L, D)`` encoding of the empty prompt, needed when ``guidance_scale > 1``.
        settings: learning hyper-parameters.
    """

    def __init__(
        self,
        backbone: Backbone,
        part_names: list[str],
        base_embedding: Tensor,
        init_tokens: Tensor,
        uncond_embedding: Tensor | None,
        settings: LearnSettings = LearnSettings(),
        options: MapOptions = MapOptions(),
    ) -> None:
        self.backbone = backbone
        self.part_names = list(part_names)
        self.settings = settings
        self.cfg = settings.guidance_scale > 1
        if self.cfg and uncond_embedding is None:
            raise ValueError("guidance_scale > 1 needs the empty-prompt embedding")
        self.uncond = None if uncond_embedding is None else uncond_embedding.to(backbone.device)
        self.tokens = PartTokens(base_embedding, init_tokens).to(backbone.device)
        self.unet_params = trainable_unet_parameters(backbone.unet, settings.trainable)
        for param in self.unet_params.values():
            param.requires_grad_(True)
        self.runner = MapRunner(backbone, cross_frame=False, conditional_half=self.cfg, options=options)
        self.token_optimizer = torch.optim.Adam(self.tokens.parameters(), lr=settings.token_lr)
        self.unet_optimizer = (
            torch.optim.Adam(self.unet_params.values(), lr=settings.unet_lr) if self.unet_params else None
        )

    @property
    def num_parts(self) -> int:
        return len(self.part_names)

    def stage_of(self, epoch: int) -> tuple[bool, bool]:
        """Whether ``(tokens, unet projections)`` are updated at ``epoch``."""
        if epoch < self.settings.token_epochs or self.unet_optimizer is None:
            return True, False
        return self.settings.stage2 == "joint", True

    def _noisy_latent(self, image: Tensor, timestep: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """VAE latent of one ``(3, R, R)`` image noised to ``timestep``: ``(noisy, eps)``, each ``(1, C, h, w)``."""
        latent = self.runner.encode(image[None].to(self.backbone.device), generator)
        return self.runner.add_noise(latent, timestep, generator)

    def _predict(self, noisy: Tensor, timestep: int) -> Tensor:
        """One UNet pass on ``(1, C, h, w)`` noisy latents (CFG-combined when ``guidance_scale > 1``); leaves the
        maps captured."""
        conditioning = self.tokens()
        if not self.cfg:
            return self.runner.predict(noisy, timestep, conditioning, num_frames=1)
        pair = torch.stack([self.uncond.to(conditioning.dtype), conditioning])
        eps_uncond, eps_cond = self.runner.predict(noisy.repeat(2, 1, 1, 1), timestep, pair, 1).chunk(2)
        return eps_uncond + self.settings.guidance_scale * (eps_cond - eps_uncond)

    def step(self, image: Tensor, mask: Tensor, epoch: int, generator: torch.Generator) -> LossTerms:
        """One optimisation step on one sample.

        Args:
            image: ``(3, R, R)`` float in ``[-1, 1]`` at the working resolution.
            mask: ``(H, W)`` int64 labels (resized with nearest to the map size).
            epoch: 0-based epoch (selects the stage and the frequency term).
            generator: CPU generator for timestep, VAE sampling and noise.
        """
        low, high = self.settings.t_range
        timestep = int(torch.randint(low, high + 1, (1,), generator=generator))
        with torch.no_grad():
            noisy, eps = self._noisy_latent(image, timestep, generator)
        return self.step_on_latents(noisy, eps, timestep, mask, epoch)

    def step_on_latents(self, noisy: Tensor, eps: Tensor, timestep: int, mask: Tensor, epoch: int) -> LossTerms:
        """One optimisation step on one sample given as noisy latents: the loss, its backward and the update of
        the stage's parameters (:meth:`step` after drawing the timestep and the noise).

        Args:
            noisy, eps: ``(1, C, h, w)`` noisy latents at ``timestep`` and the noise that was added.
            timestep: the UNet timestep.
            mask: ``(H, W)`` int64 labels (resized with nearest to the map size).
            epoch: 0-based epoch (selects the stage and the frequency term).
        """
        train_tokens, train_unet = self.stage_of(epoch)
        noisy, eps = noisy.to(self.backbone.device), eps.to(self.backbone.device)
        on_gpu = self.backbone.device.type == "cuda"
        with torch.autocast(self.backbone.device.type, dtype=torch.bfloat16, enabled=on_gpu):
            eps_pred = self._predict(noisy, timestep)
            logits, maps = self.runner.training_maps(self.num_parts)
            target = nearest_mask(mask, self.runner.map_size).to(self.backbone.device)
            terms = self.settings.loss(logits[0].float(), maps[0].float(), target, eps_pred.float(), eps.float(), epoch)
        self.token_optimizer.zero_grad(set_to_none=True)
        if self.unet_optimizer is not None:
            self.unet_optimizer.zero_grad(set_to_none=True)
        (terms.total * self.settings.loss_scale).backward()
        if train_tokens:
            self.token_optimizer.step()
        if train_unet and self.unet_optimizer is not None:
            self.unet_optimizer.step()
        self.runner.release()
        return LossTerms(**{k: None if v is None else v.detach() for k, v in vars(terms).items()})

    @torch.no_grad()
    def predict_labels(self, image: Tensor, timestep: int, generator: torch.Generator) -> Tensor:
        """Labels ``(s, s)`` at the map size for one ``(3, R, R)`` image, inference-variant WAS (§2.6)."""
        self._predict(self._noisy_latent(image, timestep, generator)[0], timestep)
        labels = self.runner.inference_maps(self.num_parts)[0].argmax(0).cpu()
        self.runner.release()
        return labels

    def validate(self, images: list[Tensor], masks: list[Tensor], generator: torch.Generator) -> float:
        """Validation mIoU in percent (reference convention, background included) at the map size (§3.6)."""
        low, high = self.settings.validation_t_range
        predictions, targets = [], []
        for image, mask in zip(images, masks, strict=True):
            timestep = int(torch.randint(low, high + 1, (1,), generator=generator))
            side = self.settings.resolution
            labels = self.predict_labels(resize(image[None], (side, side))[0], timestep, generator)
            predictions.append(labels)
            targets.append(nearest_mask(mask, labels.shape[-1]))
        return miou(torch.stack(predictions).numpy(), torch.stack(targets).numpy(), self.num_parts).reference

    def part_model(self, info: dict[str, Any]) -> PartModel:
        """The current state as a :class:`PartModel` artifact."""
        return PartModel(
            part_names=self.part_names,
            base_model=self.backbone.source,
            base_hash=self.backbone.content_hash,
            resolution=self.settings.resolution,
            conditioning=self.tokens().detach().float().cpu(),
            tokens=self.tokens.tokens.detach().float().cpu(),
            unet_weights={name: p.detach().float().cpu().clone() for name, p in self.unet_params.items()},
            info=info,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: tokens, trained UNet parameters and both optimisers."""
        return {
            "tokens": self.tokens.state_dict(),
            "unet": {name: p.detach().cpu().clone() for name, p in self.unet_params.items()},
            "token_optimizer": self.token_optimizer.state_dict(),
            "unet_optimizer": self.unet_optimizer.state_dict() if self.unet_optimizer else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.tokens.load_state_dict(state["tokens"])
        with torch.no_grad():
            for name, value in state["unet"].items():
                self.unet_params[name].copy_(value)
        self.token_optimizer.load_state_dict(state["token_optimizer"])
        if self.unet_optimizer is not None and state["unet_optimizer"] is not None:
            self.unet_optimizer.load_state_dict(state["unet_optimizer"])
