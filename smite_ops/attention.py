"""Video behaviour for the stock ``diffusers.UNet2DConditionModel``: cross-frame attention and Q/K capture.

:func:`configure_video_unet` installs a :class:`VideoAttnProcessor` on every attention module (through
``unet.set_attn_processor``) and, optionally, frame-pooled group norms (:mod:`smite_ops.group_norm`).
The UNet is then called as usual with a batch of ``B·F`` frames, the ``F`` frames of each clip
consecutive (frame ``f`` of clip ``b`` at index ``b·F + f``) and ``encoder_hidden_states`` repeated per
frame; ``F`` is :attr:`VideoUNet.num_frames`.

Cross-frame self-attention (METHOD.md §2.2): every ``attn1`` regroups its per-frame queries, keys and
values ``(B·F, N, C)`` into ``(B, F·N, C)`` so each query attends over the tokens of all frames of its
clip (softmax over ``F·N`` keys). With ``F = 1`` or ``cross_frame=False`` the module computes exactly
what diffusers' ``AttnProcessor2_0`` computes (same operations, same ``F.scaled_dot_product_attention``
call with its default scale ``1/sqrt(head_dim)``; spatial norm, group norm, ``norm_cross``, q/k norms,
residual connection and ``rescale_output_factor`` are honoured the same way).

Captured tensors (the contract that :mod:`smite_ops.was` codes against). After a forward pass,
``capture.layers[name]`` is a :class:`CapturedLayer` per hooked module, with one entry appended to its
``q`` and ``k`` lists per forward call:

- ``kind == "self"`` (``attn1``): ``q`` and ``k`` of shape ``(F, heads, N, head_dim)`` with
  ``N = h·w`` the tokens of ONE frame, i.e. per-frame projections, so intra-frame attention can be
  recomputed even when the UNet attended across frames;
- ``kind == "cross"`` (``attn2``): ``q`` of shape ``(F, heads, N, head_dim)`` and ``k`` of shape
  ``(F, heads, L_text, head_dim)`` (``L_text`` = 77 for CLIP);
- ``sizes[i] == (h, w)``: the layer's feature-map size at call ``i`` (``N = h·w``); ``size`` is the latest.

``capture.cross_layers()`` / ``capture.self_layers()`` return the latest call as the ``(q, k, (h, w))`` /
``(q, k)`` tuples that :mod:`smite_ops.was` takes; ``capture.query_maps(size)`` returns the cross layers'
queries as feature maps (what a linear probe or a feature loss reads).

For ``B`` clips the leading dimension is ``B·F``. With ``conditional_half=True`` (a CFG-doubled batch
``[unconditional clips, conditional clips]``) only the second half of the batch is kept. Tensors are
the projections after any q/k norm, in the UNet's dtype, and keep their autograd graph unless
``detach=True`` (gradients flow back into the latents through them).

Default capture layers (``capture_layers="auto"``, METHOD.md §2.3 generalised to any SD-shaped UNet):
``attn2`` of all transformer blocks of the first 3 attentions of the up block working at 1/4 of the
highest up-block resolution and of the first 2 attentions at 1/2; ``attn1`` of all transformer blocks
of every attention at the highest resolution. For SD 1.x/2.x these are the 8 modules of §2.3.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from smite_ops.group_norm import pool_group_norms, unpool_group_norms

LayerKind = Literal["self", "cross"]
_CROSS_LEVELS = ((4, 3), (2, 2))  # (down-scale relative to the highest resolution, attentions used)


@dataclass
class CapturedLayer:
    """Q/K captured at one attention module; see the module docstring for shapes."""

    name: str
    kind: LayerKind
    q: list[torch.Tensor] = field(default_factory=list)
    k: list[torch.Tensor] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) per forward call

    @property
    def size(self) -> tuple[int, int] | None:
        """(h, w) of the feature map at the latest captured call, ``None`` before any."""
        return self.sizes[-1] if self.sizes else None


class AttentionCapture:
    """Per-layer lists of captured queries and keys, filled by :class:`VideoAttnProcessor`.

    Set ``enabled = False`` to run the UNet without capturing (e.g. denoising steps whose maps are unused).
    """

    def __init__(self, layers: dict[str, LayerKind], *, conditional_half: bool = False, detach: bool = False) -> None:
        self.layers = {name: CapturedLayer(name, kind) for name, kind in layers.items()}
        self.conditional_half = conditional_half
        self.detach = detach
        self.enabled = True

    def of_kind(self, kind: LayerKind) -> list[CapturedLayer]:
        """The hooked layers of one kind, in hook order."""
        return [layer for layer in self.layers.values() if layer.kind == kind]

    def cross_layers(self, call: int = -1) -> list[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]]:
        """``(q, k, (h, w))`` of every cross layer for one forward ``call`` (default: the latest)."""
        return [(layer.q[call], layer.k[call], layer.sizes[call]) for layer in self.of_kind("cross")]

    def query_maps(
        self, size: tuple[int, int], call: int = -1, heights: Collection[int] | None = None
    ) -> torch.Tensor:
        """The cross layers' queries of one forward ``call`` as feature maps ``(B·F, C, *size)``.

        Each layer's ``(B·F, heads, h·w, head_dim)`` queries become ``heads·head_dim`` channels of an ``(h, w)``
        map, resized bilinearly to ``size``; the layers' channels are concatenated in hook order. ``heights``
        keeps only the layers whose map height is in it.

        Raises:
            ValueError: no cross layer is left.
        """
        maps = []
        for q, _, (height, width) in self.cross_layers(call):
            if heights is None or height in heights:
                cells = q.permute(0, 1, 3, 2).reshape(q.shape[0], -1, height, width)
                maps.append(F.interpolate(cells, size=size, mode="bilinear", align_corners=False))
        if not maps:
            raise ValueError(f"no captured cross layer has a map height in {sorted(heights or ())}")
        return torch.cat(maps, dim=1)

    def self_layers(self, call: int = -1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(q, k)`` of every self layer for one forward ``call`` (default: the latest)."""
        return [(layer.q[call], layer.k[call]) for layer in self.of_kind("self")]

    def clear(self) -> None:
        """Drop all captured tensors and sizes (keeps the layer list)."""
        for layer in self.layers.values():
            layer.q.clear()
            layer.k.clear()
            layer.sizes.clear()

    def record(self, name: str, q: torch.Tensor, k: torch.Tensor, size: tuple[int, int]) -> None:
        """Store per-frame ``q (B·F, heads, N, d)`` and ``k (B·F, heads, L, d)`` of layer ``name``."""
        if self.conditional_half:
            if q.shape[0] % 2:
                raise ValueError(f"conditional_half capture needs an even batch, got {q.shape[0]}")
            q, k = q[q.shape[0] // 2 :], k[k.shape[0] // 2 :]
        if self.detach:
            q, k = q.detach(), k.detach()
        layer = self.layers[name]
        layer.q.append(q)
        layer.k.append(k)
        layer.sizes.append(size)


@dataclass
class VideoState:
    """What the processors and pooled norms read at call time; owned by :class:`VideoUNet`."""

    num_frames: int = 1
    cross_frame: bool = True
    sample_size: tuple[int, int] | None = None  # latent (H, W) of the current UNet call


def level_size(sample_size: tuple[int, int] | None, tokens: int) -> tuple[int, int]:
    """(h, w) of the UNet level with ``tokens = h·w`` for a latent of ``sample_size`` (ceil-halving).

    Without a known sample size the level is assumed square.
    """
    if sample_size is None:
        side = round(tokens**0.5)
        if side * side != tokens:
            raise ValueError(f"cannot infer the spatial size of {tokens} tokens (not a square)")
        return side, side
    h, w = sample_size
    while h * w > tokens and (h, w) != (1, 1):
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != tokens:
        raise ValueError(f"{tokens} tokens match no UNet level of a {sample_size} latent")
    return h, w


def _join_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B·F, heads, N, d) -> (B, heads, F·N, d)``: the tokens of all frames of a clip in one sequence."""
    batch_frames, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch_frames // frames, frames * tokens, heads, dim).transpose(1, 2)


def _join_mask(mask: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B·F, heads, 1, N) -> (B, heads, 1, F·N)`` for key masks (one row broadcast over queries)."""
    if mask.shape[2] != 1:
        raise ValueError("cross-frame attention supports key masks only (one mask row per frame)")
    return _join_frames(mask.transpose(2, 3), frames).transpose(2, 3)


class VideoAttnProcessor:
    """Attention processor: optional cross-frame self-attention and optional Q/K capture (module doc)."""

    def __init__(self, state: VideoState, name: str, capture: AttentionCapture | None = None) -> None:
        self.state = state
        self.name = name
        self.capture = capture

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention of ``hidden_states (B·F, N, C)`` (or ``(B·F, C, h, w)``); returns the same shape."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, sequence_length, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
        joint = encoder_hidden_states is None and self.state.cross_frame
        frames = self.state.num_frames
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.capture is not None and self.capture.enabled:
            self.capture.record(self.name, query, key, level_size(self.state.sample_size, query.shape[2]))
        if joint:
            if batch % frames:
                raise ValueError(f"batch of {batch} is not a whole number of {frames}-frame clips")
            query, key, value = (_join_frames(x, frames) for x in (query, key, value))
            attention_mask = None if attention_mask is None else _join_mask(attention_mask, frames)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _up_block_scales(unet: UNet2DConditionModel) -> list[int]:
    """Down-scale of each up block's feature maps relative to the last (highest-resolution) up block."""
    scales, scale = [], 1
    for block in reversed(unet.up_blocks):
        if getattr(block, "upsamplers", None) is not None:
            scale *= 2
        scales.append(scale)
    return scales[::-1]


def _attention_names(unet: UNet2DConditionModel, block: int, attentions: int | None, attn: str) -> list[str]:
    up = unet.up_blocks[block]
    chosen = list(getattr(up, "attentions", []))[:attentions]
    if not chosen or (attentions is not None and len(chosen) < attentions):
        raise ValueError(f"cannot choose capture layers: up_blocks.{block} lacks the needed attentions")
    return [
        f"up_blocks.{block}.attentions.{i}.transformer_blocks.{t}.{attn}"
        for i, transformer in enumerate(chosen)
        for t in range(len(transformer.transformer_blocks))
    ]


def auto_capture_layers(unet: UNet2DConditionModel) -> dict[str, LayerKind]:
    """The default hooked modules (module docstring) as ``{module name: kind}``, cross layers first."""
    scales = _up_block_scales(unet)
    layers: dict[str, LayerKind] = {}
    for scale, count in (*_CROSS_LEVELS, (1, None)):
        if scale not in scales:
            raise ValueError(f"cannot choose capture layers: no up block at 1/{scale} resolution")
        kind: LayerKind = "cross" if count is not None else "self"
        names = _attention_names(unet, scales.index(scale), count, "attn2" if count else "attn1")
        layers.update(dict.fromkeys(names, kind))
    return layers


def _named_layers(unet: UNet2DConditionModel, names: Sequence[str]) -> dict[str, LayerKind]:
    layers: dict[str, LayerKind] = {}
    for name in names:
        try:
            module = unet.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"capture layer {name!r}: no such module in the UNet") from exc
        if not isinstance(module, Attention):
            raise ValueError(f"capture layer {name!r} is a {type(module).__name__}, not an Attention")
        layers[name] = "cross" if module.is_cross_attention else "self"
    return layers


def _checked_frames(value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"num_frames must be a positive integer, got {value!r}")
    return int(value)


class VideoUNet:
    """Handle on a UNet configured by :func:`configure_video_unet`: frames per clip, switches, capture."""

    def __init__(self, unet: UNet2DConditionModel, state: VideoState, capture: AttentionCapture) -> None:
        self.unet = unet
        self.state = state
        self.capture = capture
        self._original_processors: dict[str, Any] = dict(unet.attn_processors)
        self._hook = unet.register_forward_pre_hook(self._check_batch, with_kwargs=True)

    @property
    def num_frames(self) -> int:
        """Frames per clip in the UNet batch (``B·F`` samples)."""
        return self.state.num_frames

    @num_frames.setter
    def num_frames(self, value: int) -> None:
        self.state.num_frames = _checked_frames(value)

    @property
    def cross_frame(self) -> bool:
        """Whether self-attention spans all frames of a clip (else it is per frame, plain 2D)."""
        return self.state.cross_frame

    @cross_frame.setter
    def cross_frame(self, value: bool) -> None:
        self.state.cross_frame = bool(value)

    @contextmanager
    def settings(self, num_frames: int | None = None, cross_frame: bool | None = None) -> Iterator[None]:
        """Temporarily change ``num_frames`` and/or ``cross_frame`` (restored on exit)."""
        saved = (self.num_frames, self.cross_frame)
        try:
            if num_frames is not None:
                self.num_frames = num_frames
            if cross_frame is not None:
                self.cross_frame = cross_frame
            yield
        finally:
            self.num_frames, self.cross_frame = saved

    def _check_batch(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        if sample.shape[0] % self.num_frames:
            raise ValueError(
                f"UNet batch of {sample.shape[0]} samples is not a whole number of {self.num_frames}-frame clips"
            )
        self.state.sample_size = (int(sample.shape[-2]), int(sample.shape[-1]))

    def restore(self) -> None:
        """Put back the original processors and group norms and remove the hook."""
        self._hook.remove()
        self.unet.set_attn_processor(dict(self._original_processors))
        unpool_group_norms(self.unet)


def configure_video_unet(
    unet: UNet2DConditionModel,
    num_frames: int = 1,
    *,
    cross_frame: bool = True,
    pooled_group_norm: bool = False,
    capture_layers: Literal["auto"] | Sequence[str] | None = "auto",
    conditional_half: bool = False,
    detach: bool = False,
) -> VideoUNet:
    """Install video attention processors (and optionally frame-pooled group norms) on ``unet``.

    ``capture_layers``: ``"auto"`` (module docstring), explicit attention module names, or ``None``.
    ``conditional_half``/``detach`` configure the capture. Returns the :class:`VideoUNet` handle;
    ``handle.restore()`` undoes everything. Parameters and state-dict keys are unchanged.
    """
    if any(isinstance(p, VideoAttnProcessor) for p in unet.attn_processors.values()):
        raise ValueError("UNet is already configured for video; call restore() on its handle first")
    layers = auto_capture_layers(unet) if capture_layers == "auto" else _named_layers(unet, capture_layers or ())
    state = VideoState(num_frames=_checked_frames(num_frames), cross_frame=cross_frame)
    capture = AttentionCapture(layers, conditional_half=conditional_half, detach=detach)
    video = VideoUNet(unet, state, capture)
    processors = {}
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        processors[key] = VideoAttnProcessor(state, name, capture if name in layers else None)
    unet.set_attn_processor(processors)
    if pooled_group_norm:
        pool_group_norms(unet, state)
    return video
