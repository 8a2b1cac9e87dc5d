"""Pretrain the tiny SD-shaped backbone on synthetic frames: ``python -m pipeline.training.pretrain_tiny --out DIR``.

Randomly initialised attention is nearly uniform, so SMITE's attention maps carry no part structure; Stable
Diffusion's are useful because it was pretrained as a denoiser. This script does the same, at toy scale:

1. **Data**: ``--images`` frames per drawn object kind (car, face, horse) and ``--generic-images`` frames of
   each of the first ``--generic-layouts`` procedural kinds ``generic-<i>`` (:mod:`pipeline.synth.procedural`;
   none by default, and never a held-out layout), rendered by :mod:`pipeline.synth` at ``--size`` pixels from
   the random streams of master seed ``--data-seed`` (default 1000, disjoint from the benchmark's default seed
   0), each with the prompt "<kind> <part> <part> ..." naming its visible parts (the kind word of a procedural
   kind is "object").
2. **VAE** as an autoencoder on random ``--crop`` pixel crops: mean squared reconstruction error plus
   ``--kl-weight`` times the KL divergence (per sample, summed over latent entries). The latent scaling factor is
   then set to one over the standard deviation of the latents of all frames, as SD's.
3. **UNet** as an epsilon-prediction denoiser on the frozen VAE's latents (random crops of ``--latent-crop``),
   conditioned on the frozen tiny CLIP text encoder's encoding of each frame's prompt (the empty prompt with
   probability 0.1, for classifier-free guidance). Half of the timesteps are drawn from ``[1, 200]`` (SMITE reads
   attention at small timesteps), half from ``[1, 999]``.

**Part contrast** (``--contrast-weight W``, off by default): batches become pairs of frames of a kind, and the
UNet loss adds W times a supervised contrastive loss on its cross-attention queries over the rendered part
labels (:func:`part_contrast`), so that cells of one part look alike across instances and unlike other parts.
``--init tiny`` (or a diffusers folder) starts from a checkpoint's VAE, UNet and text encoder instead of fresh
weights; with ``--vae-steps 0`` its VAE and latent scaling factor are kept. The shipped backbone is the default
run (v1) fine-tuned this way (the README gives both commands).

``--unet-width`` multiplies the UNet's channels and heads (:func:`smite_ops.tiny_model.tiny_unet_config`; the
shipped backbone uses 1). The text encoder keeps its seeded random initialisation (or ``--init``'s; distinct
words still get distinct encodings). All randomness derives from ``--seed``: the same arguments and library
versions give the same weights. Losses are printed every ``--log-every`` steps. The defaults take about 15
minutes on one CPU core (``--threads``).

**Resumable**: every ``--checkpoint-every`` steps of a stage (and at its end) the run state (weights, optimiser,
schedule, random stream, step) is saved to ``<out>/pretrain-state.pt``. With ``--budget-minutes`` the run pauses at
the first save past its budget and exits with status 75; the same command continues from the saved step (a run with
other settings is refused), and a run split this way writes the same weights as one uninterrupted run. The finished
checkpoint is written whole (a sibling folder swapped into place, replacing ``--out``; a kill at any point leaves
the run state or the checkpoint); the state file goes with the old folder, and ``<out>/pretrain.json`` records
the settings and the wall time over all runs. ``--out`` must be new or hold only a checkpoint and run state
(nothing else is ever deleted).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.method.backbone_source import backbone_source
from pipeline.synth.generate import stream
from pipeline.synth.procedural import ProceduralKind, generic_kind
from pipeline.synth.scene import background_texture, random_pose, render
from pipeline.synth.shapes import KINDS, ObjectKind
from smite_ops.backbone import load_backbone
from smite_ops.conditioning import encode_prompt
from smite_ops.errors import InputError
from smite_ops.tiny_model import TinyComponents, build_tiny_components, save_tiny_sd, sd_ddim_scheduler

PRETRAIN_ROLE = 2
"""Stream role of pretraining frames (the benchmark uses 0 for references and 1 for videos)."""

EMPTY_PROMPT_PROBABILITY = 0.1
STATE_FILE = "pretrain-state.pt"
STATE_PARTIAL = "pretrain-state.partial"
"""The state being written, renamed to :data:`STATE_FILE` once whole (a kill mid-write leaves it behind)."""
PAUSED_EXIT_STATUS = 75
"""Exit status of a run that paused at its time budget (``EX_TEMPFAIL``: run the same command again)."""
STAGES = ("vae", "unet")
CHECKPOINT_ENTRIES = frozenset(
    {"model_index.json", "unet", "vae", "scheduler", "text_encoder", "tokenizer", "pretrain.json", STATE_FILE,
     STATE_PARTIAL}
)
"""What a pretraining ``--out`` may hold: a finished checkpoint and the run state."""
RUN_ONLY = ("out", "log_every", "threads", "checkpoint_every", "budget_minutes")
"""Settings that do not change the weights: a run may resume another's state with other values of these."""


@dataclass(frozen=True)
class PretrainSettings:
    """Sizes and schedules of pretraining (see the module docstring)."""

    out: Path
    seed: int = 0
    data_seed: int = 1000
    images: int = 150
    generic_layouts: int = 0
    generic_images: int = 10
    unet_width: int = 1
    size: int = 256
    vae_steps: int = 400
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    crop: int = 64
    unet_steps: int = 800
    unet_lr: float = 5e-4
    latent_crop: int = 16
    batch: int = 8
    contrast_weight: float = 0.0
    contrast_temperature: float = 0.1
    contrast_cells: int = 96
    init: str = ""
    log_every: int = 100
    threads: int = 1
    checkpoint_every: int = 200
    budget_minutes: float = 0.0


@dataclass(frozen=True)
class Frames:
    """Rendered pretraining data.

    Attributes:
        images: ``(N, 3, S, S)`` float in [-1, 1].
        prompts: one per image.
        labels: ``(N, S, S)`` uint8 fine part labels (0 = background).
        kinds: ``(N,)`` int64 index of each image's kind in the corpus.
    """

    images: Tensor
    prompts: list[str]
    labels: Tensor
    kinds: Tensor


def render_frames(corpus: list[tuple[ObjectKind, int]], size: int, data_seed: int) -> Frames:
    """Render ``count`` frames of each ``(kind, count)``, each prompted with its kind and visible part names."""
    pictures, prompts, masks, kinds = [], [], [], []
    for position, (kind, count) in enumerate(corpus):
        name = kind.name
        word = "object" if isinstance(kind, ProceduralKind) else name
        for index in range(count):
            rng = stream(data_seed, name, PRETRAIN_ROLE, index)
            instance = kind.sample_instance(rng)
            rgb, labels = render(kind, instance, random_pose(kind, rng), background_texture(rng, size)[:size, :size])
            visible = [kind.fine_parts[i] for i in np.unique(labels) if 0 < i < len(kind.fine_parts)]
            pictures.append(torch.from_numpy(rgb).permute(2, 0, 1))
            prompts.append(" ".join([word, *visible]))
            masks.append(torch.from_numpy(labels.astype(np.uint8)))
            kinds.append(position)
    return Frames(torch.stack(pictures).float() / 127.5 - 1.0, prompts, torch.stack(masks), torch.tensor(kinds))


def random_crops(images: Tensor, side: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random ``side x side`` crops (with horizontal flips) of random images ``(N, C, H, W)``."""
    picks = torch.randint(0, images.shape[0], (count,), generator=generator).tolist()
    crops = []
    for pick in picks:
        top, left = torch.randint(0, images.shape[-2] - side + 1, (2,), generator=generator).tolist()
        crop = images[pick, :, top : top + side, left : left + side]
        crops.append(crop.flip(-1) if torch.rand(1, generator=generator) < 0.5 else crop)
    return torch.stack(crops)


def _log(stage: str, step: int, total: int, losses: list[float], started: float) -> None:
    print(f"{stage} step {step}/{total} loss {np.mean(losses):.4f} ({time.perf_counter() - started:.0f} s)", flush=True)


class PretrainPaused(Exception):
    """The run's time budget ran out; its state is saved and the same command continues it."""


class ResumableRun:
    """The saved state of one pretraining run in ``<out>/pretrain-state.pt``.

    Construction restores a saved state into ``parts`` and ``generator`` (refusing one saved with other
    settings); :meth:`resume` then restores a stage's optimiser and schedule and :meth:`save` checkpoints it.
    """

    def __init__(self, settings: PretrainSettings, parts: TinyComponents, generator: torch.Generator) -> None:
        self.settings, self.parts, self.generator = settings, parts, generator
        self.path = settings.out / STATE_FILE
        self.began = time.perf_counter()
        self.saved: dict | None = None
        if self.path.is_file():
            try:
                self.saved = torch.load(self.path, weights_only=True)
            except (OSError, RuntimeError, pickle.UnpicklingError) as err:
                raise InputError(f"{self.path}: unreadable run state ({type(err).__name__}); delete it") from None
            if differ := [f"{key} {value} (asked {getattr(settings, key)})"
                          for key, value in self.saved["settings"].items() if getattr(settings, key) != value]:
                raise InputError(f"{self.path}: saved by a run with other settings: {', '.join(differ)}; "
                                 "use another --out or delete it")
            parts.vae.load_state_dict(self.saved["vae"])
            parts.unet.load_state_dict(self.saved["unet"])
            generator.set_state(self.saved["generator"])
            print(f"resuming {self.saved['stage']} step {self.saved['step']} from {self.path}", flush=True)

    @property
    def seconds(self) -> float:
        """Wall time of this run and the runs it continues (s, at ``settings.threads`` threads)."""
        return (self.saved["seconds"] if self.saved else 0.0) + time.perf_counter() - self.began

    @property
    def runs(self) -> int:
        """How many runs this one is, counting the runs it continues."""
        return (self.saved["runs"] if self.saved else 0) + 1

    def resume(self, stage: str, steps: int, optimizer: torch.optim.Optimizer, schedule: Any) -> int:
        """The last step of ``stage`` already done (0 for a fresh stage), with its optimiser and schedule restored."""
        if self.saved is None or STAGES.index(self.saved["stage"]) < STAGES.index(stage):
            return 0
        if self.saved["stage"] != stage:
            return steps
        optimizer.load_state_dict(self.saved["optimizer"])
        schedule.load_state_dict(self.saved["schedule"])
        return self.saved["step"]

    def save(self, stage: str, step: int, optimizer: torch.optim.Optimizer, schedule: Any) -> None:
        """Write the state after ``step`` of ``stage`` (atomically).

        Raises:
            PretrainPaused: the budget (``--budget-minutes``) ran out and this was not the run's last step.
        """
        state = {
            "settings": {key: value for key, value in vars(self.settings).items() if key not in RUN_ONLY},
            "stage": stage, "step": step, "vae": self.parts.vae.state_dict(), "unet": self.parts.unet.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "generator": self.generator.get_state(), "seconds": self.seconds, "runs": self.runs,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(STATE_PARTIAL)
        torch.save(state, partial)
        os.replace(partial, self.path)
        budget = self.settings.budget_minutes * 60.0 or math.inf
        last = stage == STAGES[-1] and step == self.settings.unet_steps
        if time.perf_counter() - self.began >= budget and not last:
            raise PretrainPaused(f"paused at {stage} step {step} after {self.seconds:.0f} s over {self.runs} run(s)")


def _fit(
    module: torch.nn.Module, name: str, lr: float, steps: int, run: ResumableRun, batch_loss: Callable[[], Tensor]
) -> None:
    """AdamW with a cosine schedule over ``steps`` calls of ``batch_loss``, resumed and checkpointed by ``run``.

    The module ends in eval mode.
    """
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    started, losses = time.perf_counter(), []
    module.train()
    log_every, checkpoint_every = run.settings.log_every, run.settings.checkpoint_every
    for step in range(run.resume(name, steps, optimizer, schedule) + 1, steps + 1):
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % log_every == 0:
            _log(name, step, steps, losses, started)
            losses = []
        if step % checkpoint_every == 0 or step == steps:
            run.save(name, step, optimizer, schedule)
    module.eval()


def pretrain_vae(parts: TinyComponents, frames: Frames, settings: PretrainSettings, run: ResumableRun) -> None:
    """Train the VAE as an autoencoder (MSE + KL), then set its latent scaling factor to 1 / latent std."""
    vae, generator = parts.vae, run.generator

    def batch_loss() -> Tensor:
        batch = random_crops(frames.images, settings.crop, settings.batch, generator)
        posterior = vae.encode(batch).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        return F.mse_loss(recon, batch) + settings.kl_weight * posterior.kl().mean()

    _fit(vae, "vae", settings.vae_lr, settings.vae_steps, run, batch_loss)
    if settings.vae_steps == 0:
        return  # an untrained VAE keeps its scaling factor (--init's)
    with torch.no_grad():
        std = float(encode_means(parts, frames.images).std())
    vae.register_to_config(scaling_factor=1.0 / std)
    print(f"vae latent std {std:.4f} -> scaling factor {1.0 / std:.4f}", flush=True)


@torch.no_grad()
def encode_means(parts: TinyComponents, images: Tensor, batch: int = 32) -> Tensor:
    """Posterior means ``(N, 4, S/8, S/8)`` of ``(N, 3, S, S)`` images (unscaled)."""
    return torch.cat([parts.vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


def _timesteps(count: int, generator: torch.Generator) -> Tensor:
    """Half from [1, 200], half from [1, 999] (SMITE reads attention at small timesteps)."""
    low = torch.randint(1, 201, (count,), generator=generator)
    wide = torch.randint(1, 1000, (count,), generator=generator)
    return torch.where(torch.arange(count) % 2 == 0, low, wide)


class QueryCapture:
    """Forward hooks on the query projection of every cross-attention layer of a UNet (torch's public hook API).

    ``queries`` holds the ``(B, N, C)`` queries of the forwards since the last :meth:`maps` call.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        self.queries: list[Tensor] = []
        self.handles = [module.to_q.register_forward_hook(self._keep)
                        for name, module in unet.named_modules() if name.endswith("attn2")]

    def _keep(self, module: torch.nn.Module, inputs: Any, output: Tensor) -> None:
        self.queries.append(output)

    def maps(self, side: int) -> Tensor:
        """``(B, C, side, side)``: every captured layer's queries resized bilinearly and concatenated; clears them."""
        maps = []
        for queries in self.queries:
            cells = round(queries.shape[1] ** 0.5)
            grid = queries.transpose(1, 2).reshape(queries.shape[0], -1, cells, cells)
            maps.append(F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False))
        self.queries = []
        return torch.cat(maps, dim=1)

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


def part_contrast(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al., 2020) of cell features against their part ids.

    Each cell's positives are the other cells with its id; cells without one are skipped.

    Args:
        features: ``(M, C)`` cell features (normalised here).
        labels: ``(M,)`` int64 part ids.
        temperature: softmax temperature of the cosine similarities.

    Returns:
        Scalar: the mean over anchors of minus the mean log-probability of their positives.
    """
    unit = F.normalize(features, dim=1)
    own = torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    similarity = (unit @ unit.T / temperature).masked_fill(own, -torch.inf)
    log_prob = (similarity - torch.logsumexp(similarity, dim=1, keepdim=True)).masked_fill(own, 0.0)
    positives = (labels[:, None] == labels[None, :]) & ~own
    anchors = positives.any(dim=1)
    return (-(log_prob * positives).sum(dim=1)[anchors] / positives.sum(dim=1)[anchors]).mean()


def paired_picks(kinds: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` frame indices: ``count // 2`` random kinds, two different frames of each (positives across
    instances for :func:`part_contrast`)."""
    order = torch.randperm(int(kinds.max()) + 1, generator=generator)[: count // 2]
    picks = []
    for kind in order.tolist():
        frames = (kinds == kind).nonzero().flatten()
        picks.append(frames[torch.randperm(len(frames), generator=generator)[:2]])
    return torch.cat(picks)


def pretrain_unet(parts: TinyComponents, frames: Frames, settings: PretrainSettings, run: ResumableRun) -> None:
    """Train the UNet as a text-conditioned epsilon-prediction denoiser on frozen VAE latents.

    With ``contrast_weight > 0`` batches are pairs of frames of a kind and the loss adds that weight times
    :func:`part_contrast` of the cross-attention queries at ``contrast_cells`` cells per frame (object cells ten
    times as likely as background ones), parts identified by kind and fine label, background shared.
    """
    generator = run.generator
    latents = encode_means(parts, frames.images) * parts.vae.config.scaling_factor
    with torch.no_grad():
        unique = sorted(set(frames.prompts))
        encoded = {text: encode_prompt(parts.text_encoder, parts.tokenizer, text) for text in unique}
        empty = encode_prompt(parts.text_encoder, parts.tokenizer, "")
    conditions = torch.stack([encoded[text] for text in frames.prompts])  # (N, L, D)
    scheduler = sd_ddim_scheduler()
    unet = parts.unet
    contrast = settings.contrast_weight > 0
    capture = QueryCapture(unet) if contrast else None
    stride = frames.labels.shape[-1] // latents.shape[-1]
    cell_labels = frames.labels[:, ::stride, ::stride].long()  # nearest down-sampling to the latent cells
    part_ids = torch.where(cell_labels > 0, cell_labels + 1000 * (frames.kinds[:, None, None] + 1), 0)

    def batch_loss() -> Tensor:
        if contrast:
            picks = paired_picks(frames.kinds, settings.batch, generator)
        else:
            picks = torch.randint(0, len(latents), (settings.batch,), generator=generator)
        side = settings.latent_crop
        top, left = torch.randint(0, latents.shape[-1] - side + 1, (2,), generator=generator).tolist()
        clean = latents[picks, :, top : top + side, left : left + side]
        drop = torch.rand(len(picks), generator=generator) < EMPTY_PROMPT_PROBABILITY
        context = torch.where(drop[:, None, None], empty, conditions[picks])
        eps = torch.randn(clean.shape, generator=generator)
        timesteps = _timesteps(len(picks), generator)
        noisy = scheduler.add_noise(clean, eps, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps, encoder_hidden_states=context).sample, eps)
        if capture is None:
            return loss
        features = capture.maps(side).flatten(2)  # (B, C, side * side)
        ids = part_ids[picks, top : top + side, left : left + side].flatten(1)  # (B, side * side)
        weights = torch.where(ids > 0, 1.0, 0.1)
        cells = torch.multinomial(weights, min(settings.contrast_cells, side * side), generator=generator)
        sampled = features.gather(2, cells[:, None].expand(-1, features.shape[1], -1)).transpose(1, 2)
        contrast_loss = part_contrast(sampled.reshape(-1, features.shape[1]), ids.gather(1, cells).reshape(-1),
                                      settings.contrast_temperature)
        return loss + settings.contrast_weight * contrast_loss

    try:
        _fit(unet, "unet", settings.unet_lr, settings.unet_steps, run, batch_loss)
    finally:  # a paused run leaves the UNet without hooks too
        if capture is not None:
            capture.close()


def pretrain(settings: PretrainSettings) -> dict[str, Any]:
    """Render the data, pretrain the VAE then the UNet (resuming a saved state), and save the checkpoint.

    Returns:
        The ``pretrain.json`` record written with the checkpoint (settings, ``wall_seconds``, ``runs``).

    Raises:
        PretrainPaused: the budget ran out; the state is saved for the next run.
        InputError: ``settings.out`` holds other files than a checkpoint, or the state of a run with other settings.
    """
    if settings.out.is_dir() and (foreign := sorted(p.name for p in settings.out.iterdir()
                                                    if p.name not in CHECKPOINT_ENTRIES)):
        raise InputError(f"{settings.out}: holds {foreign[:3]}, not a pretraining checkpoint; use a new --out")
    _finish_swap(settings.out)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    parts = build_tiny_components(settings.seed, settings.unet_width)
    parts.text_encoder.requires_grad_(False)
    if settings.init:
        _initialise(parts, settings.init)
    run = ResumableRun(settings, parts, generator)
    corpus = [(kind, settings.images) for kind in KINDS.values()]
    corpus += [(generic_kind(index), settings.generic_images) for index in range(settings.generic_layouts)]
    frames = render_frames(corpus, settings.size, settings.data_seed)
    print(f"rendered {len(frames.prompts)} frames of {settings.size} px", flush=True)
    pretrain_vae(parts, frames, settings, run)
    parts.vae.requires_grad_(False)
    pretrain_unet(parts, frames, settings, run)
    return _write_checkpoint(parts, settings, run)


def _initialise(parts: TinyComponents, source: str) -> None:
    """Start from the VAE, UNet and text encoder weights and the latent scaling factor of checkpoint ``source``
    ('tiny' or a diffusers folder): the UNet keeps the text encodings it was trained with, whatever ``--seed``.

    Raises:
        InputError: ``source`` does not load, or its UNet has another width.
    """
    backbone = load_backbone(backbone_source(source), with_text_encoder=True)
    try:
        parts.unet.load_state_dict(backbone.unet.state_dict())
        parts.vae.load_state_dict(backbone.vae.state_dict())
        parts.text_encoder.load_state_dict(backbone.text_encoder.state_dict())
    except RuntimeError:
        raise InputError(f"--init {source}: its UNet, VAE or text encoder has other shapes than this run's "
                         "(--unet-width must match)") from None
    parts.vae.register_to_config(scaling_factor=backbone.vae.config.scaling_factor)


def _aside(out: Path) -> Path:
    return out.with_name(out.name + ".old")


def _finish_swap(out: Path) -> None:
    """Complete or undo a checkpoint swap a kill interrupted (see :func:`_write_checkpoint`)."""
    aside = _aside(out)
    if not aside.is_dir():
        return
    if out.exists():  # the new checkpoint is in place; only deleting the old folder was missed
        shutil.rmtree(aside)
    else:  # killed between the two moves: put the old folder, and the run state in it, back
        os.replace(aside, out)


def _write_checkpoint(parts: TinyComponents, settings: PretrainSettings, run: ResumableRun) -> dict[str, Any]:
    """Save the finished backbone into ``settings.out`` whole, with ``pretrain.json`` (settings, compute time,
    runs), and return that record.

    The checkpoint is written to ``<out>.partial``; then ``out`` (with the run state) moves to ``<out>.old``, the
    new folder moves in, and the old one is deleted. A kill at any point leaves either the run state or the
    finished checkpoint, never neither (:func:`_finish_swap` tidies up on the next run).
    """
    out = settings.out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_tiny_sd(parts, partial)
    record = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
              "wall_seconds": round(run.seconds, 1), "runs": run.runs}
    (partial / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    if out.exists():
        os.replace(out, _aside(out))  # only checkpoint entries (checked first); the run state goes with them
    os.replace(partial, out)
    _finish_swap(out)
    return record


def _parse(argv: list[str] | None) -> PretrainSettings:
    defaults = PretrainSettings(out=Path("."))
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.training.pretrain_tiny", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    for name, value in vars(defaults).items():
        if name != "out":
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    settings = PretrainSettings(**vars(parser.parse_args(argv)))
    if settings.crop > settings.size or settings.latent_crop > settings.size // 8:
        parser.error(f"--crop {settings.crop} and --latent-crop {settings.latent_crop} must fit in a --size "
                     f"{settings.size} frame and its {settings.size // 8}-cell latent")
    if settings.checkpoint_every < 1:
        parser.error(f"--checkpoint-every must be >= 1, got {settings.checkpoint_every}")
    if settings.images * len(KINDS) + settings.generic_layouts * settings.generic_images < 1:
        parser.error("nothing to pretrain on: --images and --generic-layouts x --generic-images are 0")
    if settings.contrast_weight > 0:
        per_kind = [count for count, used in ((settings.images, settings.images), (settings.generic_images,
                                                                                   settings.generic_layouts)) if used]
        if settings.batch < 2 or settings.batch % 2 or min(per_kind) < 2:
            parser.error(f"--contrast-weight needs an even --batch (got {settings.batch}) and 2 or more frames of "
                         f"every kind (got {min(per_kind)})")
    return settings


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: exit status 0 when the checkpoint is written, 75 when paused, 2 on bad input."""
    settings = _parse(argv)
    try:
        record = pretrain(settings)
    except PretrainPaused as paused:
        print(f"{settings.out}: {paused}; run the same command again to continue", flush=True)
        sys.exit(PAUSED_EXIT_STATUS)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {settings.out}: {record['wall_seconds']:.0f} s over {record['runs']} run(s) on {settings.threads} "
          "thread(s)", flush=True)


if __name__ == "__main__":
    main()
