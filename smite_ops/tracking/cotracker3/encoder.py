"""CoTracker3 per-frame convolutional feature encoder (state-dict prefix ``fnet``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4
"""Feature stride: the encoder output is ``H / 4 x W / 4``."""
LATENT_DIM = 128
"""Channels of the encoder output."""


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with affine-free instance norms and a (possibly strided) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.norm1 = nn.InstanceNorm2d(planes)
        self.norm2 = nn.InstanceNorm2d(planes)
        self.downsample: nn.Sequential | None = None
        if stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), nn.InstanceNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(F, C_in, h, w)`` -> ``(F, C_out, ceil(h / stride), ceil(w / stride))``."""
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + y)


class FeatureEncoder(nn.Module):
    """Multi-scale residual encoder mapping frames in ``[-1, 1]`` to 128-channel stride-4 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(64)
        self.layer1 = nn.Sequential(ResidualBlock(64, 64, 1), ResidualBlock(64, 64, 1))
        self.layer2 = nn.Sequential(ResidualBlock(64, 96, 2), ResidualBlock(96, 96, 1))
        self.layer3 = nn.Sequential(ResidualBlock(96, 128, 2), ResidualBlock(128, 128, 1))
        self.layer4 = nn.Sequential(ResidualBlock(128, 128, 2), ResidualBlock(128, 128, 1))
        self.conv2 = nn.Conv2d(64 + 96 + 128 + 128, 256, kernel_size=3, padding=1)
        self.norm2 = nn.InstanceNorm2d(256)
        self.conv3 = nn.Conv2d(256, LATENT_DIM, kernel_size=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Encode frames independently.

        Args:
            frames: ``(F, 3, H, W)`` float, values in ``[-1, 1]``; ``H`` and ``W`` multiples of 4.

        Returns:
            ``(F, 128, H / 4, W / 4)`` raw (not yet L2-normalised) features.
        """
        size = (frames.shape[-2] // STRIDE, frames.shape[-1] // STRIDE)
        x = F.relu(self.norm1(self.conv1(frames)))
        scales = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            scales.append(F.interpolate(x, size=size, mode="bilinear", align_corners=True))
        x = F.relu(self.norm2(self.conv2(torch.cat(scales, dim=1))))
        return self.conv3(x)
