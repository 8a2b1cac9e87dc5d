"""Group normalisation with statistics pooled over all frames of a clip (METHOD.md §2.2).

The reference "inflated" UNet normalises resnet features and the final output norm over the whole
``(B, C, F, H, W)`` clip tensor. :class:`FramePooledGroupNorm` reproduces that on the stock 2D UNet,
whose activations are laid out ``(B·F, C, H, W)`` with the frames of a clip consecutive. It is a
``torch.nn.GroupNorm`` that shares the wrapped module's parameters, so state-dict keys and values are
unchanged when it is swapped in.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D
from torch import nn


class ClipLength(Protocol):
    """Anything exposing the number of frames per clip of the current forward pass."""

    @property
    def num_frames(self) -> int: ...


class FramePooledGroupNorm(nn.GroupNorm):
    """``GroupNorm`` whose mean/variance per (clip, group) are taken over channels x frames x pixels.

    Input ``(B·F, C, H, W)`` (any number of trailing spatial dims) with ``F = clip.num_frames`` read at
    call time; output has the same shape and dtype. With ``F = 1`` this is exactly ``nn.GroupNorm``.
    """

    def __init__(self, norm: nn.GroupNorm, clip: ClipLength) -> None:
        super().__init__(norm.num_groups, norm.num_channels, eps=norm.eps, affine=False)
        self.affine = norm.affine
        self.weight = norm.weight
        self.bias = norm.bias
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.clip.num_frames
        if x.shape[0] % frames:
            raise ValueError(f"batch of {x.shape[0]} is not a whole number of {frames}-frame clips")
        batch, channels = x.shape[0] // frames, x.shape[1]
        clip = x.reshape(batch, frames, channels, -1).transpose(1, 2).reshape(batch, channels, -1)
        normed = F.group_norm(clip, self.num_groups, self.weight, self.bias, self.eps)
        return normed.reshape(batch, channels, frames, -1).transpose(1, 2).reshape(x.shape)

    def unwrap(self) -> nn.GroupNorm:
        """A plain ``nn.GroupNorm`` holding the same parameter objects."""
        norm = nn.GroupNorm(self.num_groups, self.num_channels, eps=self.eps, affine=False)
        norm.affine, norm.weight, norm.bias = self.affine, self.weight, self.bias
        return norm


def pool_group_norms(unet: nn.Module, clip: ClipLength) -> list[str]:
    """Swap every resnet ``norm1``/``norm2`` and ``conv_norm_out`` of a diffusers UNet for the pooled norm.

    Returns the qualified names of the swapped modules. Transformer-block norms stay per frame.
    """
    out_norm = getattr(unet, "conv_norm_out", None)
    targets = [("", "conv_norm_out")] if type(out_norm) is nn.GroupNorm else []
    targets += [
        (name, child)
        for name, module in unet.named_modules()
        if isinstance(module, ResnetBlock2D)
        for child in ("norm1", "norm2")
        if type(getattr(module, child)) is nn.GroupNorm
    ]
    for parent_name, child in targets:
        parent = unet.get_submodule(parent_name)
        setattr(parent, child, FramePooledGroupNorm(getattr(parent, child), clip))
    return [f"{parent}.{child}".lstrip(".") for parent, child in targets]


def unpool_group_norms(unet: nn.Module) -> None:
    """Undo :func:`pool_group_norms`: put plain ``nn.GroupNorm`` modules back (same parameters)."""
    for name, module in list(unet.named_modules()):
        if isinstance(module, FramePooledGroupNorm):
            parent_name, _, child = name.rpartition(".")
            setattr(unet.get_submodule(parent_name), child, module.unwrap())
