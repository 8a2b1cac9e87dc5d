"""Write the conformance vectors of tests/conformance/vectors/ by running the OFFICIAL SMITE code.

Runs in its own environment (tools/reference_vectors/.venv: diffusers 0.19, transformers 4.35, torch-dct)
on a checkout of the official repository in tools/reference_vectors/official (see README.md here, which also
lists every patch applied to the official code, all of them in this file). Nothing here is imported by the
smite package or its tests; the tests read only the npz files this writes.

Usage: tools/reference_vectors/.venv/bin/python tools/reference_vectors/generate.py
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
    num_pixels = torch.zeros(PARTS, dtype=torch.int64)
    values, counts = torch.unique(mask, return_counts=True)
    num_pixels[values.type(torch.int64)] = counts.type(torch.int64)
    num_pixels[0] = 0
    pixel_weights = torch.where(num_pixels > 0, num_pixels.sum() / (num_pixels + 1e-6), 0)
    pixel_weights[0] = 1
    one_hot = torch.zeros(PARTS, 64, 64).scatter_(0, mask.long(), 1.0)
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


def loss_gradient_stage(unet: torch.nn.Module, loss_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training loss of one fixed sample through the UNet, and its gradients w.r.t. the learned tokens and
    the cross-attention K/V weights.

    One 512-px frame (64 x 64 latents and maps, as SD), no classifier-free guidance (the official loop's
    ``guidance_scale <= 1`` branch), epoch 5: the frequency term is still off (``epoch > 5``). With it on, the
    gradient through the UNet is ill-conditioned: its phase term differentiates ``angle()`` of near-zero
    spectrum coefficients (gradient ~ 1 / |coefficient|), so fp32 rounding of the maps (1e-6) moves the token
    gradient by 2.6 %, on either side; the frequency term's own gradient is compared on fixed maps in
    ``losses.npz``. The official steps (src/training.py ``training_step``): UNet
    forward, ``get_attention_map`` with the training arguments of run.py (all class tokens, raw logits,
    64 x 64), the training WAS expression of lines 381-385, the class weights of lines 372-377 and
    ``compute_loss``; then ``backward``.
    """
    from src.training import compute_loss
    from src.was_attention import get_attention_map

    hooks = Hooks(unet, CROSS_LAYERS + SELF_LAYERS)
    generator = torch.Generator().manual_seed(15)
    noisy = torch.randn(1, 4, 64, 64, generator=generator)
    noise = torch.randn(1, 4, 64, 64, generator=generator)
    conditioning = torch.randn(77, CROSS_DIM, generator=generator)
    tokens = conditioning[1:PARTS].clone().requires_grad_(True)
    mask = torch.from_numpy(loss_inputs["mask"]).float()[None]
    kv = {name: p for name, p in unet.named_parameters() if "attn2.to_k" in name or "attn2.to_v" in name}
    for parameter in unet.parameters():
        parameter.requires_grad_(False)
    for parameter in kv.values():
        parameter.requires_grad_(True)
    embeds = torch.cat([conditioning[:1], tokens, conditioning[PARTS:]])[None]
    eps = unet(noisy[:, :, None], 50, encoder_hidden_states=embeds).sample[:, :, 0]
    _, cross, self_maps = get_attention_map(hooks, hooks.attention_maps, output_size=(64, 64),
                                            token_ids=list(range(PARTS)), average_layers=True, apply_softmax=False,
                                            guidance_scale=0.0)
    cross, self_maps = cross[0], self_maps[0]
    small = torch.nn.functional.interpolate(cross.softmax(dim=0)[None], 64, mode="bilinear")[0]
    was = (self_maps[None] * small.flatten(1, 2)[..., None, None]).sum(dim=1)
    num_pixels = torch.zeros(PARTS, dtype=torch.int64)
    values, counts = torch.unique(mask, return_counts=True)
    num_pixels[values.type(torch.int64)] = counts.type(torch.int64)
    num_pixels[0] = 0
    pixel_weights = torch.where(num_pixels > 0, num_pixels.sum() / (num_pixels + 1e-6), 0)
    pixel_weights[0] = 1
    one_hot = torch.zeros(PARTS, 64, 64).scatter_(0, mask.long(), 1.0)
    losses = compute_loss(cross_attention=cross, was_attention=was, cross_gt=mask, was_gt=one_hot,
                          pixel_weights=pixel_weights, noise=eps, noise_gt=noise, epoch=5, num_parts=PARTS,
                          coef_loss_sd=0.005, coef_loss_fourier=0.001)
    losses["total"].backward()
    hooks.attention_maps.clear()
    out = {"noisy": noisy.numpy(), "noise": noise.numpy(), "conditioning": conditioning.numpy(),
           "mask": loss_inputs["mask"], "timestep": np.array(50), "epoch": np.array(5),
           "total": losses["total"].detach().numpy(), "grad_tokens": tokens.grad.numpy()}
    for name, parameter in kv.items():
        out[f"grad/{name}"] = parameter.grad.numpy()
        parameter.requires_grad_(False)
    return out


def save(name: str, arrays: dict[str, np.ndarray]) -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    path = VECTORS / f"{name}.npz"
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})
    print(f"{path.relative_to(REPO)}: {', '.join(f'{k}{tuple(np.shape(v))}' for k, v in arrays.items())}")


def main() -> None:
    torch.set_num_threads(1)
    git = ["git", "-C", str(OFFICIAL), "rev-parse", "HEAD"]
    head = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    if head != OFFICIAL_COMMIT:
        raise SystemExit(f"{OFFICIAL} is at {head}, expected {OFFICIAL_COMMIT}")
    digests = write_sd21_tiny(MODEL, bin_weights=True)
    from diffusers import UNet2DConditionModel

    if weight_digest(UNet2DConditionModel.from_pretrained(MODEL / "unet")) != digests["unet"]:
        raise SystemExit("the saved UNet does not load back to the same weights")
    data = inputs()
    unet = official_unet()
    save("voting_512", voting_stage())
    save("dct_lowpass", dct_stage())
    losses = loss_stage()
    save("losses", losses)
    save("unet_clip", {**data, **unet_stage(unet, data), "unet_digest": np.array(digests["unet"])})
    save("loss_gradients", loss_gradient_stage(official_unet(), losses))


if __name__ == "__main__":
    main()
