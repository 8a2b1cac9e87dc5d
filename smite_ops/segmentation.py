"""Unguided window segmentation (METHOD.md §4.1-4.3), with the coarse-to-fine (§4.6) and tiled (§4.7) modes.

A window of frames goes through one UNet pass at a timestep drawn from ``t_range``; the inference-variant WAS
of every frame is the class score map. :class:`WindowSegmenter` returns scores on a square grid covering the
whole frame (aspect ratio not preserved, as the reference's 512x512 frames); callers resize to native size.

Differences from the reference, deliberate: the wide-video square-crop refinement of §4.6 step 3 is not done
(the zoom-in crop of step 4 follows the foreground directly), and crops are resized with antialiased bicubic
interpolation instead of PIL's Lanczos.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic.dataclasses import dataclass
from torch import Tensor

from smite_ops.backbone import Backbone
from smite_ops.part_model import PartModel
from smite_ops.settings import SETTINGS_CONFIG, NonNegativeFloat, PositiveInt, TimestepRange
from smite_ops.unet_maps import MapOptions, MapRunner

TILE_FRACTION = 450 / 512
"""Side of each of the four tiles of the multi-crop mode, as a fraction of the frame (METHOD.md §4.7)."""


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class SegmentOptions:
    """The tunables of window segmentation (defaults: the reference's shipped scripts, METHOD.md §9).

    Attributes:
        t_range: inclusive range of the single timestep, drawn per window and per pass.
        hierarchical: coarse pass, then a pass on per-frame object crops pasted back (§4.6; on in the shipped
            scripts, off in the reference's argparse).
        crop_expand: object box expansion per side, as a fraction of the box size.
        multi_crop: run four overlapping tiles per frame and average them (§4.7).
        pooled_group_norm: resnet and output group norms take their statistics over all frames of a pass, as
            the official inflated UNet (METHOD.md §2.2); False normalises each frame alone.
    """

    t_range: TimestepRange = (95, 104)
    hierarchical: bool = True
    crop_expand: NonNegativeFloat = 0.04
    multi_crop: bool = False
    pooled_group_norm: bool = True


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class SegmentSettings(SegmentOptions):
    """:class:`SegmentOptions` and the working geometry.

    Attributes:
        resolution: working resolution in pixels (frames and crops are resized to it).
        output_size: side of the returned score grid; None = the attention map size (twice that in
            hierarchical mode, where crops carry finer detail than one full-frame map).
    """

    resolution: PositiveInt = 512
    output_size: PositiveInt | None = None


def to_unit_range(frames: Tensor) -> Tensor:
    """uint8 (or 0..255 float) frames ``(T, 3, H, W)`` -> float32 in ``[-1, 1]``."""
    return frames.float() / 127.5 - 1.0


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bicubic resize of ``(T, C, H, W)`` float images to ``size = (height, width)``."""
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)


def object_boxes(foreground: Tensor, expand: float) -> list[tuple[int, int, int, int]]:
    """Per-frame bounding boxes ``(top, left, bottom, right)`` (exclusive ends) of ``(T, H, W)`` bool masks.

    Each box grows by ``expand`` times its height / width on every side, clamped to the frame. A frame whose
    foreground has at most 2 pixels gets the whole frame (METHOD.md §4.6 step 4).
    """
    _, height, width = foreground.shape
    boxes = []
    for mask in foreground:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if ys.numel() <= 2:
            boxes.append((0, 0, height, width))
            continue
        top, bottom = int(ys.min()), int(ys.max()) + 1
        left, right = int(xs.min()), int(xs.max()) + 1
        dy, dx = round(expand * (bottom - top)), round(expand * (right - left))
        boxes.append((max(top - dy, 0), max(left - dx, 0), min(bottom + dy, height), min(right + dx, width)))
    return boxes


class WindowSegmenter:
    """Segments windows of frames with a learned part model.

    Args:
        backbone: the loaded backbone the part model was trained on.
        part_model: the learned part model; its trained UNet weights are copied into the backbone's UNet.
        settings: segmentation settings.
        cross_frame: self-attention across the frames of a window (METHOD.md §2.2).
        options: map computation options.
    """

    def __init__(
        self,
        backbone: Backbone,
        part_model: PartModel,
        settings: SegmentSettings = SegmentSettings(),
        *,
        cross_frame: bool = True,
        options: MapOptions = MapOptions(),
    ) -> None:
        part_model.apply_to_unet(backbone.unet)
        self.runner = MapRunner(
            backbone, cross_frame=cross_frame, pooled_group_norm=settings.pooled_group_norm, options=options
        )
        self.conditioning = part_model.conditioning
        self.num_parts = len(part_model.part_names)
        self.settings = settings

    @torch.no_grad()
    def __call__(self, frames: Tensor, seed: int) -> Tensor:
        """Segment one window.

        Args:
            frames: ``(T, 3, H, W)`` uint8 RGB frames at any size.
            seed: seeds the timestep draws, VAE sampling and noise (same seed, same scores).

        Returns:
            ``(T, P, S, S)`` float32 class scores (WAS logits) over the whole frame, ``S`` = output size.
        """
        generator = torch.Generator().manual_seed(seed)
        images = to_unit_range(frames)
        if not self.settings.hierarchical:
            scores = self._frame_pass(images, generator)
            return resize_scores(scores, self.settings.output_size or scores.shape[-1])
        return self._coarse_to_fine(images, generator)

    def _single_pass(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """One UNet pass on ``(T, 3, H, W)`` images in [-1, 1] resized to the working resolution."""
        side = self.settings.resolution
        latents = self.runner.encode(resize(images, (side, side)), generator)
        low, high = self.settings.t_range
        timestep = int(torch.randint(low, high + 1, (1,), generator=generator))
        noisy, _ = self.runner.add_noise(latents, timestep, generator)
        self.runner.predict(noisy, timestep, self.conditioning, num_frames=images.shape[0])
        scores = self.runner.inference_maps(self.num_parts).float().cpu()
        self.runner.release()
        return scores

    def _frame_pass(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Scores ``(T, P, s, s)`` of whole frames: one pass, or four averaged tiles in multi-crop mode."""
        if not self.settings.multi_crop:
            return self._single_pass(images, generator)
        height, width = images.shape[-2:]
        tile_h, tile_w = round(TILE_FRACTION * height), round(TILE_FRACTION * width)
        grid = None
        total = torch.zeros(images.shape[0], self.num_parts, height, width)
        count = torch.zeros(1, 1, height, width)
        for top in (0, height - tile_h):
            for left in (0, width - tile_w):
                tile = self._single_pass(images[..., top : top + tile_h, left : left + tile_w], generator)
                grid = grid or tile.shape[-1]
                total[..., top : top + tile_h, left : left + tile_w] += resize_scores(tile, (tile_h, tile_w))
                count[..., top : top + tile_h, left : left + tile_w] += 1
        return resize_scores(total / count, grid)

    def _coarse_to_fine(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """§4.6: find the object with a full-frame pass, segment per-frame crops, paste them back."""
        coarse = self._single_pass(images, generator)
        out = self.settings.output_size or 2 * coarse.shape[-1]
        height, width = images.shape[-2:]
        foreground = resize_scores(coarse, (height, width)).argmax(1) != 0
        boxes = object_boxes(foreground, self.settings.crop_expand)
        side = self.settings.resolution
        crops = torch.cat(
            [resize(images[i : i + 1, :, top:bottom, left:right], (side, side))
             for i, (top, left, bottom, right) in enumerate(boxes)]
        )
        return paste_crops(self._frame_pass(crops, generator), boxes, (height, width), out)


def paste_crops(
    fine: Tensor, boxes: list[tuple[int, int, int, int]], frame_size: tuple[int, int], out: int
) -> Tensor:
    """Paste per-frame crop scores back into whole-frame score grids (METHOD.md §4.6 step 5).

    Args:
        fine: ``(T, P, s, s)`` scores of the crops.
        boxes: per frame ``(top, left, bottom, right)`` of its crop in native pixels (exclusive ends).
        frame_size: native ``(height, width)``.
        out: side of the returned grid.

    Returns:
        ``(T, P, out, out)`` float32: each crop's scores resized into its box (scaled to the grid); outside
        the box, background gets the largest score of ``fine`` and every other class the smallest, so it wins there.
    """
    height, width = frame_size
    canvas = torch.full((fine.shape[0], fine.shape[1], out, out), float(fine.min()))
    canvas[:, 0] = fine.max()
    for index, (top, left, bottom, right) in enumerate(boxes):
        y0, y1 = scaled_span(top, bottom, out / height)
        x0, x1 = scaled_span(left, right, out / width)
        canvas[index, :, y0:y1, x0:x1] = resize_scores(fine[index : index + 1], (y1 - y0, x1 - x0))[0]
    return canvas


def scaled_span(start: int, stop: int, scale: float) -> tuple[int, int]:
    """Pixel span ``[start, stop)`` scaled to another grid, at least one cell wide."""
    low = round(start * scale)
    return low, max(round(stop * scale), low + 1)


def resize_scores(scores: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bilinear resize of class scores ``(T, P, h, w)`` to ``size`` (an int means square)."""
    target = (size, size) if isinstance(size, int) else size
    if tuple(scores.shape[-2:]) == target:
        return scores
    return F.interpolate(scores, size=target, mode="bilinear", align_corners=False)
