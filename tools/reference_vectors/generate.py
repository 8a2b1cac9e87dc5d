"""Write the conformance vectors of tests/conformance/vectors/ by running the OFFICIAL SMITE code.

Runs in its own environment (tools/reference_vectors/.venv: diffusers 0.19, transformers 4.35, torch-dct)
on a checkout of the official repository in tools/reference_vectors/official (see README.md here, which also
lists every patch applied to the official code, all of them in this file). Nothing here is imported by the
smite package or its tests; the tests read only the npz files this writes.

Usage: tools/reference_vectors/.venv/bin/python tools/reference_vectors/generate.py [VECTOR ...]
(all vectors by default; names as in tests/conformance/vectors/, without ``.npz``)
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OFFICIAL = HERE / "official"
MODEL = HERE / "model"
VECTORS = REPO / "tests" / "conformance" / "vectors"
OFFICIAL_COMMIT = "7ecfff7e66629e3b5855c835048710062c9518dc"

FRAMES = 4
LATENT = 32  # 256 px frames: the tiny model's maps are 32 x 32, as SD's are 64 x 64 at 512 px
TIMESTEP = 100
PARTS = 3
SELF_ROW_STRIDE = 32
CROSS_LAYERS = [
    "up_blocks[1].attentions[0].transformer_blocks[0].attn2",
    "up_blocks[1].attentions[1].transformer_blocks[0].attn2",
    "up_blocks[1].attentions[2].transformer_blocks[0].attn2",
    "up_blocks[2].attentions[0].transformer_blocks[0].attn2",
    "up_blocks[2].attentions[1].transformer_blocks[0].attn2",
]
SELF_LAYERS = [f"up_blocks[3].attentions[{i}].transformer_blocks[0].attn1" for i in range(3)]
"""The official default ``--attention_layers_to_use`` (utils/args.py)."""

sys.path.insert(0, str(REPO / "tests" / "conformance"))
sys.path.insert(0, str(OFFICIAL))
# the official src/__init__.py and utils/__init__.py import the whole pipeline (tensorboard, decord, ...):
# register the packages without running them, so that ``src.<module>`` imports only the modules a stage
# needs (no change to the code)
for _package in ("src", "utils"):
    _module = types.ModuleType(_package)
    _module.__path__ = [str(OFFICIAL / _package)]
    sys.modules[_package] = _module


def _unavailable(name: str) -> types.ModuleType:
    """PATCH 2: a stand-in for torchvision, whose PyPI wheels need another torch build than the CPU one here.

    The official code imports it for ``gaussian_blur`` (inference's optional blur) and ``ToPILImage`` (training
    logs), neither of which the vectors run; touching any attribute raises.
    """
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def missing(attribute: str) -> object:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise RuntimeError(f"{name}.{attribute} is not available in the vector generator")

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


for _name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
    sys.modules.setdefault(_name, _unavailable(_name))
sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
sys.modules["torchvision.transforms.functional"].gaussian_blur = None  # imported by name by src/was_attention.py

from sd21_tiny import CROSS_DIM, UNET, weight_digest, write_sd21_tiny  # noqa: E402


def _load_file(name: str, path: Path) -> types.ModuleType:
    """Import one file of the official code without its package ``__init__`` (which imports everything)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def official_unet() -> torch.nn.Module:
    """The official inflated UNet, built as utils/setup.py's ``load_unets`` does.

    PATCH 1: ``UNet3DConditionModel.from_pretrained_2d(None)`` builds SD 2.1's hard-coded config
    (``generate_config``); here the same config with the tiny checkpoint's sizes is used instead. The
    official keys ``upcast_attention=True`` etc. are kept. Weights are then copied with the official
    ``transfer_unets``; every 2D parameter must have arrived (checked).
    """
    from diffusers import UNet2DConditionModel
    from models import UNet3DConditionModel

    transfer = _load_file("official_transfer_weights", OFFICIAL / "utils" / "transfer_weights.py").transfer_unets
    config = UNet3DConditionModel.generate_config()
    for key in ("attention_head_dim", "block_out_channels", "cross_attention_dim", "norm_num_groups", "sample_size"):
        config[key] = UNET[key]
    unet3d = UNet3DConditionModel.from_config(config)
    unet2d = UNet2DConditionModel.from_pretrained(MODEL / "unet")
    unet = transfer(unet3d, unet2d)
    state2d, state3d = unet2d.state_dict(), unet.state_dict()
    missing = [k for k in state2d if k not in state3d or not torch.equal(state2d[k], state3d[k])]
    if missing:
        raise SystemExit(f"transfer_unets left {len(missing)} parameters untransferred, e.g. {missing[:3]}")
    use_plain_xformers(unet)
    return unet.eval()


def memory_efficient_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_bias: torch.Tensor | None = None,
    op: object = None, scale: float | None = None,
) -> torch.Tensor:
    """PATCH 3 (with :func:`use_plain_xformers`): ``xformers.ops.memory_efficient_attention`` in plain torch.

    ``softmax(q k^T * scale + bias) v`` over ``(B, L, D)`` tensors, ``scale`` defaulting to ``D ** -0.5`` as
    xformers does; the same numbers as xformers up to its float rounding.
    """
    scores = query @ key.transpose(-1, -2) * (query.shape[-1] ** -0.5 if scale is None else scale)
    if attn_bias is not None:
        scores = scores + attn_bias
    return scores.softmax(dim=-1) @ value


def use_plain_xformers(unet: torch.nn.Module) -> None:
    """PATCH 3: the official cross-attention (``CrossAttentionModified``) works only with its
    ``XFormersAttnProcessor2`` (the other processors return one value where it unpacks three, and reject its
    ``t`` keyword), which calls xformers, CUDA-only. The official pipeline gets it through
    ``enable_xformers_memory_efficient_attention()``; here the same processor class is installed and the
    module's ``xformers`` name points to :func:`memory_efficient_attention`. Self-attention
    (``FullyFrameAttention``) runs its own plain-torch path (``_attention``), the same formula.
    """
    import models.attention as attention

    ops = types.SimpleNamespace(memory_efficient_attention=memory_efficient_attention)
    attention.xformers = types.SimpleNamespace(ops=ops)
    for module in unet.modules():
        if isinstance(module, attention.CrossAttentionModified):
            module.set_processor(attention.XFormersAttnProcessor2())


class Hooks:
    """The official attention hooks (src/hooks.py ``create_hook``) on a bare object, not a whole pipeline."""

    def __init__(self, unet: torch.nn.Module, layers: list[str]) -> None:
        from src.hooks import create_hook

        self.unet = unet
        self.attention_maps: dict[str, list[torch.Tensor]] = {}
        self.device = torch.device("cpu")
        self.num_parts = PARTS
        create_hook(self, layers)


def inputs() -> dict[str, np.ndarray]:
    """Seeded inputs shared by every stage."""
    generator = torch.Generator().manual_seed(7)
    latents = torch.randn(FRAMES, 4, LATENT, LATENT, generator=generator)
    conditioning = torch.randn(77, CROSS_DIM, generator=generator)
    return {"latents": latents.numpy(), "conditioning": conditioning.numpy(), "timestep": np.array(TIMESTEP)}


def unet_stage(unet: torch.nn.Module, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inflated UNet forward on a 4-frame clip, the captured attention, and WAS (inference, training)."""
    from src.was_attention import calculate_was_mask, get_attention_map

    hooks = Hooks(unet, CROSS_LAYERS + SELF_LAYERS)
    latents = torch.from_numpy(data["latents"])
    sample = latents.permute(1, 0, 2, 3)[None]  # (1, C, F, h, w)
    conditioning = torch.from_numpy(data["conditioning"])[None]
    with torch.no_grad():
        eps = unet(sample, TIMESTEP, encoder_hidden_states=conditioning).sample[0].permute(1, 0, 2, 3)
        common = {"output_size": (LATENT, LATENT), "token_ids": list(range(PARTS)), "average_layers": True,
                  "video_length": FRAMES, "guidance_scale": 0.0}
        # inference (run.py): train=True, apply_softmax=False -> raw logits
        _, cross, self_maps = get_attention_map(hooks, hooks.attention_maps, apply_softmax=False, **common)
        was_inf = calculate_was_mask(hooks, cross, self_maps, mask_patch_size=LATENT)
        # training variant: src/training.py (lines 381-385 of the pinned commit) evaluates, inline in its
        # training loop, the class softmax of these logits propagated through the self-attention maps; the
        # same expression on the same official outputs, per frame:
        probabilities = cross.softmax(dim=1).flatten(2)  # (F, P, N)
        was_train = (self_maps[:, None] * probabilities[..., None, None]).sum(dim=2)
    return {
        "eps": eps.numpy(),
        "cross_logits": cross.numpy(),
        "self_maps_rows": self_maps[:, ::SELF_ROW_STRIDE].numpy(),  # every 32nd key pixel: keeps the file small
        "was_inference": was_inf.numpy(),
        "was_training": was_train.numpy(),
    }


def tracks_512(frames: int = 16, stride: int = 5, seed: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tracks ``(T, N, 2)`` float pixels at 512 px and visibility ``(T, N)``.

    One point per grid cell ``(5a + 2, 5b + 2)`` wandering within +-11 px of its cell centre, so points never
    share a cell in a frame (the official per-frame loop lets the last writer win there, we average; that
    documented difference is not what this vector tests). A third of the coordinates are snapped to multiples
    of 8 px, where ``x / 8 - 0.5`` is a half-integer: the rounding rule matters there. Points near the border
    leave the frame; 20 % of the entries are occluded.
    """
    generator = torch.Generator().manual_seed(seed)
    cells = torch.arange(2, 64, stride, dtype=torch.float32)
    base = torch.stack(torch.meshgrid(cells, cells, indexing="xy"), dim=-1).reshape(-1, 2)  # (N, 2) cells (x, y)
    centre = (base + 0.5) * 8
    steps = torch.randn(frames, len(base), 2, generator=generator) * 4
    points = centre + steps.cumsum(0).clamp(-11, 11)
    snap = torch.rand(points.shape, generator=generator) < 1 / 3
    points = torch.where(snap, torch.round(points / 8) * 8, points)
    edge = (base == cells[0]) | (base == cells[-1])
    points = torch.where(edge[None], points + torch.sign(centre - 256) * 20, points)  # some leave the frame
    visible = torch.rand(frames, len(base), generator=generator) > 0.2
    return points, visible


def voting_stage() -> dict[str, np.ndarray]:
    """Track voting (src/tracking.py ``apply_voting``) from tracks at 512 px on 64 x 64 maps.

    The official code tracks a fresh query grid from every frame ``i`` and votes frame ``i`` with that
    grid's tracks; here frame ``i`` gets the points of the shared tracks visible on the grid in frame ``i``
    (so each is visible in its query frame, as there). Positions go through the official
    ``x / 8 - 0.5`` (src/tracking.py ``apply_tracker``) and ``postprocess_predictions``.
    """
    from src.tracking import apply_voting, postprocess_predictions

    points, visible = tracks_512()
    generator = torch.Generator().manual_seed(12)
    maps = torch.randn(points.shape[0], PARTS, 64, 64, generator=generator)
    indices, vis = postprocess_predictions((points / 8 - 0.5)[None], visible.float()[None], 64)
    per_frame_tracks, per_frame_visible = [], []
    for i in range(points.shape[0]):
        chosen = vis[i] > 0
        per_frame_tracks.append(indices[:, chosen])
        per_frame_visible.append(vis[:, chosen])
    voted = apply_voting(maps.clone(), per_frame_tracks, per_frame_visible)
    return {"points": points.numpy(), "visible": visible.numpy(), "maps": maps.numpy(), "voted": voted.numpy()}


def dct_stage() -> dict[str, np.ndarray]:
    """DCT low-pass (src/frequency_filter.py ``dct_loss``) of 4-frame 64 x 64 maps, threshold 0.4."""
    from src.frequency_filter import dct_loss

    generator = torch.Generator().manual_seed(13)
    maps = torch.randn(4, PARTS, 64, 64, generator=generator)
    reference = torch.randn(4, PARTS, 64, 64, generator=generator)
    loss, filtered = dct_loss(maps, reference, low_pass=True, threshold=0.4)
    return {"maps": maps.numpy(), "reference": reference.numpy(), "threshold": np.array(0.4),
            "energy": loss.numpy(), "lowpassed": filtered.numpy()}


def class_targets(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official training loop's inline loss inputs for a ``(1, H, W)`` float label mask: the class weights
    ``(P,)`` (src/training.py lines 372-377) and the one-hot target ``(P, H, W)`` (lines 387-389)."""
    num_pixels = torch.zeros(PARTS, dtype=torch.int64)
    values, counts = torch.unique(mask, return_counts=True)
    num_pixels[values.type(torch.int64)] = counts.type(torch.int64)
    num_pixels[0] = 0
    pixel_weights = torch.where(num_pixels > 0, num_pixels.sum() / (num_pixels + 1e-6), 0)
    pixel_weights[0] = 1
    one_hot = torch.zeros(PARTS, *mask.shape[1:]).scatter_(0, mask.long(), 1.0)
    return pixel_weights, one_hot


def loss_stage() -> dict[str, np.ndarray]:
    """The training loss terms (src/training.py ``compute_loss``) and their gradients w.r.t. the maps.

    One 64 x 64 sample, 3 classes, epoch 6 (frequency term on), the shipped coefficients (``coef_loss_sd``
    0.005, ``coef_loss_fourier`` 0.001). The class weights are the training loop's inline expression
    (src/training.py lines 372-377), evaluated here on the same mask.
    """
    from src.training import compute_loss

    generator = torch.Generator().manual_seed(14)
    cross = torch.randn(PARTS, 64, 64, generator=generator).requires_grad_(True)
    was = torch.rand(PARTS, 64, 64, generator=generator)
    was = (was / was.sum(0, keepdim=True)).requires_grad_(True)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    mask = ((xx > 20).long() + (yy > 40).long() * (xx > 20).long()).float()[None]  # (1, 64, 64): 0, 1, 2
    eps_pred = torch.randn(1, 4, 64, 64, generator=generator).requires_grad_(True)
    eps = torch.randn(1, 4, 64, 64, generator=generator)
    pixel_weights, one_hot = class_targets(mask)
    losses = compute_loss(cross_attention=cross, was_attention=was, cross_gt=mask, was_gt=one_hot,
                          pixel_weights=pixel_weights, noise=eps_pred, noise_gt=eps, epoch=6, num_parts=PARTS,
                          coef_loss_sd=0.005, coef_loss_fourier=0.001)
    out = {"cross_logits": cross.detach().numpy(), "was_train": was.detach().numpy(), "mask": mask[0].long().numpy(),
           "eps_pred": eps_pred.detach().numpy(), "eps": eps.numpy(), "epoch": np.array(6)}
    for term in ("loss1", "loss2", "loss_sd", "loss_freq", "total"):
        grads = torch.autograd.grad(losses[term], [cross, was, eps_pred], allow_unused=True, retain_graph=True)
        out[term] = losses[term].detach().numpy()
        for name, grad in zip(("cross_logits", "was_train", "eps_pred"), grads, strict=True):
            out[f"{term}_grad_{name}"] = np.zeros(0, np.float32) if grad is None else grad.numpy()
    return out


def training_batch() -> dict[str, torch.Tensor]:
    """The fixed training sample of ``loss_gradients.npz`` and the optimiser-step vectors: one 512-px frame's
    noisy latents and noise ``(1, 4, 64, 64)`` at timestep 50, and a ``(77, D)`` prompt embedding."""
    generator = torch.Generator().manual_seed(15)
    noisy = torch.randn(1, 4, 64, 64, generator=generator)
    noise = torch.randn(1, 4, 64, 64, generator=generator)
    conditioning = torch.randn(77, CROSS_DIM, generator=generator)
    return {"noisy": noisy, "noise": noise, "conditioning": conditioning, "timestep": torch.tensor(50)}


def training_loss(
    unet: torch.nn.Module, hooks: Hooks, batch: dict[str, torch.Tensor], tokens: list[torch.Tensor],
    mask: torch.Tensor, epoch: int, coef_loss_fourier: float,
) -> dict[str, torch.Tensor]:
    """The official training step's loss on the fixed sample (src/training.py ``training_step``, no CFG: the
    loop's ``guidance_scale <= 1`` branch): the tokens written over prompt positions ``1..P-1`` as
    ``_encode_prompt(use_tokens=True)`` does, the UNet forward, ``get_attention_map`` with run.py's training
    arguments (all class tokens, raw logits, 64 x 64), the inline training WAS (lines 381-385), the class
    weights and one-hot target, and ``compute_loss`` with the shipped ``coef_loss_sd`` 0.005.

    Args:
        tokens: tensors ``(1, n, D)`` with ``P - 1`` tokens in all (the official ``embeddings_to_optimize``: one each).
        mask: ``(1, 64, 64)`` float labels.
    """
    from src.training import compute_loss
    from src.was_attention import get_attention_map

    conditioning = batch["conditioning"][None]
    learned = torch.cat(tokens, dim=1)  # (1, P - 1, D)
    embeds = torch.cat([conditioning[:, :1], learned, conditioning[:, 1 + learned.shape[1]:]], dim=1)
    eps = unet(batch["noisy"][:, :, None], batch["timestep"], encoder_hidden_states=embeds).sample[:, :, 0]
    _, cross, self_maps = get_attention_map(hooks, hooks.attention_maps, output_size=(64, 64),
                                            token_ids=list(range(PARTS)), average_layers=True, apply_softmax=False,
                                            guidance_scale=0.0)
    hooks.attention_maps.clear()
    cross, self_maps = cross[0], self_maps[0]
    small = torch.nn.functional.interpolate(cross.softmax(dim=0)[None], 64, mode="bilinear")[0]
    was = (self_maps[None] * small.flatten(1, 2)[..., None, None]).sum(dim=1)
    pixel_weights, one_hot = class_targets(mask)
    return compute_loss(cross_attention=cross, was_attention=was, cross_gt=mask, was_gt=one_hot,
                        pixel_weights=pixel_weights, noise=eps, noise_gt=batch["noise"], epoch=epoch,
                        num_parts=PARTS, coef_loss_sd=0.005, coef_loss_fourier=coef_loss_fourier)


def _batch_arrays(batch: dict[str, torch.Tensor], mask: np.ndarray, epoch: int) -> dict[str, np.ndarray]:
    return {**{key: value.numpy() for key, value in batch.items()}, "mask": mask, "epoch": np.array(epoch)}


def loss_gradient_stage(unet: torch.nn.Module, loss_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training loss of one fixed sample through the UNet, and its gradients w.r.t. the learned tokens and
    the cross-attention K/V weights.

    One 512-px frame (64 x 64 latents and maps, as SD), no classifier-free guidance, epoch 5: the frequency
    term is still off (``epoch > 5``). With it on, the gradient through the UNet is ill-conditioned: its phase
    term differentiates ``angle()`` of near-zero spectrum coefficients (gradient ~ 1 / |coefficient|), so fp32
    rounding of the maps (1e-6) moves the token gradient by 2.6 %, on either side; the frequency term's own
    gradient is compared on fixed maps in ``losses.npz``. See :func:`training_loss` for the official steps.
    """
    hooks = Hooks(unet, CROSS_LAYERS + SELF_LAYERS)
    batch = training_batch()
    tokens = batch["conditioning"][1:PARTS].clone().requires_grad_(True)
    mask = torch.from_numpy(loss_inputs["mask"]).float()[None]
    kv = {name: p for name, p in unet.named_parameters() if "attn2.to_k" in name or "attn2.to_v" in name}
    for parameter in unet.parameters():
        parameter.requires_grad_(False)
    for parameter in kv.values():
        parameter.requires_grad_(True)
    losses = training_loss(unet, hooks, batch, [tokens[None]], mask, epoch=5, coef_loss_fourier=0.001)
    losses["total"].backward()
    out = {**_batch_arrays(batch, loss_inputs["mask"], 5), "total": losses["total"].detach().numpy(),
           "grad_tokens": tokens.grad.numpy()}
    for name, parameter in kv.items():
        out[f"grad/{name}"] = parameter.grad.numpy()
        parameter.requires_grad_(False)
    return out


def optimiser_stage(loss_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The trainable parameters before and after one stage-1 and one stage-2 optimiser step on the fixed sample.

    The official setup of ``--training_mode text_embeds+crossattn_kv`` (scripts/common/common_train_params.sh):
    ``set_embeddings_to_optimize``'s per-token parameters, ``configure_optimizers`` (src/optimization.py:
    Adam lr 0.1 on the tokens, Adam ``--learning_rate`` 1e-6 on every ``attn2.to_k``/``attn2.to_v``) and
    ``backward_and_optimize`` (src/training.py: the loss scaled by 0.01, the token gradient norm clipped at
    1000 by ``accelerate`` (mixed precision off: fp32 on CPU), then the tokens' optimiser at epochs <= 50 and
    the UNet's at epochs > 50 not divisible by 10, tokens frozen). Stage 1 runs at epoch 5, stage 2 at epoch 51,
    each from the same initial state with fresh optimisers (stage 2's Adam has never stepped before epoch 51 in
    the official loop either). ``coef_loss_fourier`` is 0 in both (a valid official setting): at epoch 51 the
    frequency term's gradient is ill-conditioned (see :func:`loss_gradient_stage`).
    """
    from accelerate import Accelerator
    from src.optimization import configure_optimizers
    from src.training import backward_and_optimize

    batch = training_batch()
    mask = torch.from_numpy(loss_inputs["mask"]).float()[None]
    out = _batch_arrays(batch, loss_inputs["mask"], 0)
    del out["epoch"]
    for stage, epoch in (("stage1", 5), ("stage2", 51)):
        unet = official_unet()
        hooks = Hooks(unet, CROSS_LAYERS + SELF_LAYERS)
        pipeline = types.SimpleNamespace(unet=unet, accelerator=Accelerator(mixed_precision="no", cpu=True))
        pipeline.embeddings_to_optimize = torch.nn.ParameterList(
            [batch["conditioning"][None, i : i + 1].clone().requires_grad_(True) for i in range(1, PARTS)]
        )
        configure_optimizers(pipeline, learning_rate=1e-6, training_mode="text_embeds+crossattn_kv")
        kv = {name: p for name, p in unet.named_parameters() if p.requires_grad}
        before = {name: p.detach().clone() for name, p in kv.items()}
        tokens_before = torch.cat(list(pipeline.embeddings_to_optimize))[:, 0].detach().clone()
        losses = training_loss(unet, hooks, batch, list(pipeline.embeddings_to_optimize), mask, epoch, 0.0)
        backward_and_optimize(losses["total"], pipeline, epoch=epoch, scale=0.01,
                              training_mode="text_embeds+crossattn_kv")
        out[f"{stage}/epoch"] = np.array(epoch)
        out[f"{stage}/total"] = losses["total"].detach().numpy()
        out[f"{stage}/tokens_before"] = tokens_before.numpy()
        out[f"{stage}/tokens_after"] = torch.cat(list(pipeline.embeddings_to_optimize))[:, 0].detach().numpy()
        for name, parameter in kv.items():
            out[f"{stage}/delta/{name}"] = (parameter.detach() - before[name]).numpy()
    return out


class GuidancePipeline(Hooks):
    """The pipeline attributes the official guided loop reads (src/latent_optimization.py, ``_process_timestep``
    of src/inference.py), on a bare object with the official hooks, for frames with maps of ``map_size``.

    PATCH 4: the official code hard-codes map sizes for 512-px frames (``calculate_was_mask(...,
    mask_patch_size=64)`` and ``512``); the frames here are smaller, so :meth:`calculate_was_mask` scales the
    size it is asked for by ``map_size / 64`` (64 -> the map size, as 64 is SD's map size at 512 px).
    """

    def __init__(self, unet: torch.nn.Module, map_size: int) -> None:
        from diffusers import DDIMScheduler

        super().__init__(unet, CROSS_LAYERS + SELF_LAYERS)
        self.map_size = map_size
        self.controlnet = None
        self.scheduler = DDIMScheduler.from_pretrained(MODEL / "scheduler")
        self.scheduler.set_timesteps(1000)  # as set_inference_timesteps("fast"): t -> t - 1 per step

    def get_attention_map(self, raw_attention_maps: dict, **kwargs: object) -> tuple:
        from src.was_attention import get_attention_map

        return get_attention_map(self, raw_attention_maps, **kwargs)

    def calculate_was_mask(self, cross: torch.Tensor, self_maps: torch.Tensor, mask_patch_size: int = 64,
                           use_cross_attention_only: bool = False) -> torch.Tensor:
        from src.was_attention import calculate_was_mask

        return calculate_was_mask(self, cross, self_maps, mask_patch_size=mask_patch_size * self.map_size // 64,
                                  use_cross_attention_only=use_cross_attention_only)

    def clean_features(self) -> None:
        from src.unet_utils import clean_features

        clean_features(self)

    def inference_args(self, frames: int) -> dict[str, object]:
        """run.py's inference arguments (all class tokens, raw logits, 64 x 64 at 512 px: the map size here)
        without CFG, for clips of ``frames`` frames."""
        return {"attention_output_size": (self.map_size, self.map_size), "token_ids": list(range(PARTS)),
                "average_layers": True, "apply_softmax": False, "video_length": frames, "guidance_scale": 0.0,
                "cross_attention_kwargs": None, "controlnet_keep": None, "controlnet_conditioning_scale": None,
                "extra_step_kwargs": {}}


GUIDED_T = 103
TRACK_WEIGHT = 0.1
REG_WEIGHT = 8.0
DCT_THRESHOLD = 0.4


def guided_update_stage(unet: torch.nn.Module, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One guided update with both energies (src/latent_optimization.py ``_update_latent_with_energy_function``).

    A 4-frame slice at 256 px (32 x 32 latents): the clean latents of ``unet_clip.npz`` noised to t = 103
    (the second of the official timesteps 104..101, so the low-pass threshold is ``--dct_threshold`` 0.4, not
    the first step's 0.999), the first iteration (``iter_`` 0, fresh moments), ``--track_weight`` 0.1 and
    ``--regularization_weight`` 8 (the official README's values), the prompt embedding of ``unet_clip.npz``.
    ``S_ref`` is the official WAS of the same latents noised with other noise at t = 104 (as ``_get_refrence``,
    an unguided pass). The votes ``S_trk`` are the WAS of a third noise draw: the official voting needs 15
    frames (``determine_window``), and is compared on its own in ``voting_512.npz``.
    """
    from src.inference import _process_timestep
    from src.latent_optimization import _update_latent_with_energy_function

    pipeline = GuidancePipeline(unet, LATENT)
    args = pipeline.inference_args(FRAMES)
    generator = torch.Generator().manual_seed(16)
    clean = torch.from_numpy(data["latents"]).permute(1, 0, 2, 3)[None]  # (1, C, F, h, w)
    prompt = torch.from_numpy(data["conditioning"])[None]
    noisy, reference, voted = (
        pipeline.scheduler.add_noise(clean, torch.randn(clean.shape, generator=generator), torch.tensor(t))
        for t in (GUIDED_T, 104, GUIDED_T)
    )
    with torch.no_grad():
        reference, voted = (_process_timestep(pipeline, prompt, z, None, t, **args)[1]["was_64_attention_maps"]
                            for z, t in ((reference, 104), (voted, GUIDED_T)))
    pipeline.attention_maps.clear()
    latents = {"latent": noisy.clone(), "was_tracked": voted, "was_refrence": reference}
    after, losses, _, _ = _update_latent_with_energy_function(
        pipeline, prompt_embeds=prompt, latents_dict=latents, t=GUIDED_T, m1=0.0, m2=0.0, iter_=0, i=1,
        track_weight=TRACK_WEIGHT, regularization_weight=REG_WEIGHT, dct_threshold=DCT_THRESHOLD, **args,
    )
    to_frames = lambda x: x[0].permute(1, 0, 2, 3).detach().numpy()  # noqa: E731  (1, C, F, h, w) -> (F, C, h, w)
    return {
        "latents": to_frames(noisy), "conditioning": data["conditioning"], "timestep": np.array(GUIDED_T),
        "track_weight": np.array(TRACK_WEIGHT), "reg_weight": np.array(REG_WEIGHT),
        "dct_threshold": np.array(DCT_THRESHOLD), "voted": voted.numpy(), "reference": reference.numpy(),
        "loss_tracking": np.array(losses["loss_tracking"]), "loss_reference": np.array(losses["loss_refrence"]),
        "latents_after": to_frames(after),
    }


WINDOW_FRAMES = 16
WINDOW_LATENT = 16  # 128-px frames: 16 x 16 maps
WINDOW_STEPS = (104, 103)
"""The guided window of ``window_labels.npz``: the official guided window length (16 frames; its voting needs
15), 128 px so that the whole-window passes stay small, and the official timesteps 104..101 cut to one optimised
step (the official loop runs 15 iterations per step, hard-coded)."""


def tracks_128() -> tuple[torch.Tensor, torch.Tensor]:
    """Tracks ``(16, N, 2)`` at 128 px and visibility ``(16, N)``: :func:`tracks_512` with cells 12 apart, at a
    quarter size; no two points share a cell of the 16 x 16 grid in any frame (checked: there the official
    vote lets the last point win and ours averages, a documented difference not under test here)."""
    points, visible = tracks_512(frames=WINDOW_FRAMES, stride=12)
    points = points / 4
    cells = torch.round(points / 8 - 0.5).long()
    for frame_cells, frame_visible in zip(cells, visible, strict=True):
        inside = frame_visible & (frame_cells >= 0).all(-1) & (frame_cells < WINDOW_LATENT).all(-1)
        if len(torch.unique(frame_cells[inside], dim=0)) != int(inside.sum()):
            raise SystemExit("tracks_128: two visible points share a cell")
    return points, visible


def official_tracks(points: torch.Tensor, visible: torch.Tensor, side: int) -> tuple[list, list]:
    """Tracks in the form ``apply_voting`` takes (per query frame: grid indices and visibility), through the
    official ``x / 8 - 0.5`` and ``postprocess_predictions`` on a ``side`` grid, each frame's points being
    those visible in it (see :func:`voting_stage`)."""
    from src.tracking import postprocess_predictions

    indices, vis = postprocess_predictions((points / 8 - 0.5)[None], visible.float()[None], side)
    chosen = [vis[i] > 0 for i in range(points.shape[0])]
    return [indices[:, c] for c in chosen], [vis[:, c] for c in chosen]


def window_labels_stage(unet: torch.nn.Module, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A 16-frame window's label maps, unguided and guided, and the guided loop with the optimisation at t_{i+1}.

    Seeded clean latents (16 frames, 16 x 16) are noised to t = 104 with noise drawn as our
    ``MapRunner.add_noise`` draws it (``randn((F, C, h, w))``, seed 17). Unguided: ``_get_refrence``'s pass
    (src/inference.py: CFG 100 with an unconditional embedding, maps of the conditional half,
    ``return_latent=False``) at t = 104; its labels are the argmax of the 128-px WAS (512 px scaled). Guided:
    ``_inference``'s loop (from line 207) over :data:`WINDOW_STEPS` (``_process_timestep`` without gradient,
    then ``optimize_latents``: 4-frame slices, 15 iterations, votes from :func:`tracks_128`, ``was_refrence``
    the unguided WAS, ``--track_weight`` 0.1, ``--regularization_weight`` 8, ``--dct_threshold`` 0.4); the
    scores are the last pass's WAS at the map size. The loop runs twice: as the official code runs it
    (the optimisation's UNet and step size at ``t_i`` while the latents are at ``t_{i+1}``) and with
    ``optimize_latents`` given ``t_{i+1}``, which is what our code does (README, deviations).
    """
    from src.inference import _process_timestep
    from src.latent_optimization import optimize_latents

    pipeline = GuidancePipeline(unet, WINDOW_LATENT)
    args = pipeline.inference_args(WINDOW_FRAMES)
    generator = torch.Generator().manual_seed(17)
    latents = torch.randn(WINDOW_FRAMES, 4, WINDOW_LATENT, WINDOW_LATENT, generator=torch.Generator().manual_seed(18))
    noise = torch.randn(latents.shape, generator=generator)
    uncond = torch.randn(1, 77, CROSS_DIM, generator=generator)
    prompt = torch.from_numpy(data["conditioning"])[None]
    to_official = lambda x: x.permute(1, 0, 2, 3)[None]  # noqa: E731  (F, C, h, w) -> (1, C, F, h, w)
    start = pipeline.scheduler.add_noise(to_official(latents), to_official(noise), torch.tensor(WINDOW_STEPS[0]))
    with torch.no_grad():
        unguided = _process_timestep(pipeline, torch.cat([uncond, prompt]), start, None, WINDOW_STEPS[0],
                                     **{**args, "guidance_scale": 100.0}, return_latent=False)
    points, visible = tracks_128()
    tracks = official_tracks(points, visible, WINDOW_LATENT)
    out = {"latents": latents.numpy(), "conditioning": data["conditioning"], "noise": noise.numpy(),
           "points": points.numpy(), "visible": visible.numpy(), "timesteps": np.array(WINDOW_STEPS),
           "track_weight": np.array(TRACK_WEIGHT), "reg_weight": np.array(REG_WEIGHT),
           "dct_threshold": np.array(DCT_THRESHOLD), "unguided_scores": unguided["was_64_attention_maps"].numpy(),
           "unguided_labels": unguided["was_attention_maps"].argmax(1).to(torch.uint8).numpy()}
    for variant, shift in (("official", 0), ("at_next_t", 1)):
        z = start.clone()
        for i, t in enumerate(WINDOW_STEPS):
            pipeline.clean_features()
            with torch.no_grad():
                z, maps = _process_timestep(pipeline, prompt, z, None, t, **args)
            if i < len(WINDOW_STEPS) - 1:
                z = optimize_latents(
                    pipeline, prompt_embeds=prompt, latents=z, saved_features={}, t=WINDOW_STEPS[i + shift],
                    was_refrence=unguided["was_64_attention_maps"], i=i, was_current=maps["was_64_attention_maps"],
                    pred_tracks_indices=tracks[0], pred_visibilities=tracks[1], regularization_weight=REG_WEIGHT,
                    track_weight=TRACK_WEIGHT, dct_threshold=DCT_THRESHOLD, output_path=str(MODEL / "vis"), **args,
                )
        out[f"{variant}/guided_scores"] = maps["was_64_attention_maps"].numpy()  # labels: their argmax
    return out


def save(name: str, arrays: dict[str, np.ndarray]) -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    path = VECTORS / f"{name}.npz"
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})
    print(f"{path.relative_to(REPO)}: {', '.join(f'{k}{tuple(np.shape(v))}' for k, v in arrays.items())}")


def main(names: list[str]) -> None:
    """Write the vectors ``names`` (all when empty)."""
    torch.set_num_threads(1)
    git = ["git", "-C", str(OFFICIAL), "rev-parse", "HEAD"]
    head = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    if head != OFFICIAL_COMMIT:
        raise SystemExit(f"{OFFICIAL} is at {head}, expected {OFFICIAL_COMMIT}")
    digests = write_sd21_tiny(MODEL, bin_weights=True)
    from diffusers import UNet2DConditionModel

    if weight_digest(UNet2DConditionModel.from_pretrained(MODEL / "unet")) != digests["unet"]:
        raise SystemExit("the saved UNet does not load back to the same weights")
    losses = loss_stage()
    stages = {
        "voting_512": voting_stage,
        "dct_lowpass": dct_stage,
        "losses": lambda: losses,
        "unet_clip": lambda: {**inputs(), **unet_stage(official_unet(), inputs()),
                              "unet_digest": np.array(digests["unet"])},
        "loss_gradients": lambda: loss_gradient_stage(official_unet(), losses),
        "optimiser_steps": lambda: optimiser_stage(losses),
        "guided_update": lambda: guided_update_stage(official_unet(), inputs()),
        "window_labels": lambda: window_labels_stage(official_unet(), inputs()),
    }
    unknown = set(names) - set(stages)
    if unknown:
        raise SystemExit(f"unknown vectors {sorted(unknown)}; known: {list(stages)}")
    for name, stage in stages.items():
        if not names or name in names:
            save(name, stage())


if __name__ == "__main__":
    main(sys.argv[1:])
