"""Augmentation of reference samples for learning (METHOD.md §3.1), built on albumentations.

Order, as the reference: (non-face) zoom-out with p=0.1; resize to the working resolution; Gaussian blur
(p=0.5); coarse dropout (p=0.3, holes filled with black and labelled background); horizontal flip (p=0.5);
a random square crop of side U(min_crop_ratio, 1) that keeps > 30 % of a "focus" class's pixels (the focus
class cycles over classes from sample to sample); resize back; rotation (p=0.5, +-30 degrees, +-10 for faces)
with a black, background-labelled border. Hole sizes scale with the resolution (16-128 px at 512).
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

FOCUS_KEEP = 0.3
"""Fraction of the focus class's pixels a crop must keep."""

CROP_TRIES = 50


class ReferenceAugmenter:
    """Random augmentation of one ``(image, mask)`` pair at a time; deterministic for a seed.

    Args:
        resolution: output side in pixels.
        min_crop_ratio: lower bound of the random crop side, as a fraction of the resolution.
        flip: allow horizontal flips.
        face: the reference's face settings (no zoom-out, smaller holes, +-10 degree rotation).
        seed: random seed.
    """

    def __init__(
        self, resolution: int, min_crop_ratio: float = 0.8, flip: bool = True, face: bool = False, seed: int = 0
    ) -> None:
        self.resolution = resolution
        self.min_crop_ratio = min_crop_ratio
        self.face = face
        self.rng = np.random.default_rng(seed)
        hole = (resolution // 32, resolution // 8 if face else resolution // 4)
        self.photometric = A.Compose(
            [
                A.Resize(resolution, resolution, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
                A.GaussianBlur(blur_limit=(3, 5), p=0.5),
                A.CoarseDropout(
                    num_holes_range=(1, 4 if face else 8), hole_height_range=hole, hole_width_range=hole,
                    fill=0, fill_mask=0, p=0.3,
                ),
                A.HorizontalFlip(p=0.5 if flip else 0.0),
            ],
            seed=int(self.rng.integers(2**31)),
        )
        self.rotate = A.Compose(
            [
                A.Resize(resolution, resolution, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
                A.Rotate(limit=10 if face else 30, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
            ],
            seed=int(self.rng.integers(2**31)),
        )

    def _zoom_out(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shrink by U(0.5, 0.8) and paste at a random position on a black, background canvas."""
        height, width = mask.shape
        scale = self.rng.uniform(0.5, 0.8)
        small_h, small_w = max(1, int(height * scale)), max(1, int(width * scale))
        top, left = self.rng.integers(0, height - small_h + 1), self.rng.integers(0, width - small_w + 1)
        canvas, labels = np.zeros_like(image), np.zeros_like(mask)
        canvas[top : top + small_h, left : left + small_w] = cv2.resize(image, (small_w, small_h), cv2.INTER_AREA)
        labels[top : top + small_h, left : left + small_w] = cv2.resize(
            mask, (small_w, small_h), interpolation=cv2.INTER_NEAREST
        )
        return canvas, labels

    def _focus_crop(self, image: np.ndarray, mask: np.ndarray, focus: int) -> tuple[np.ndarray, np.ndarray]:
        """A random square crop keeping more than 30 % of the focus class (any crop if it is absent)."""
        side_max = self.resolution
        total = int((mask == focus).sum())
        for _ in range(CROP_TRIES):
            side = int(self.rng.uniform(self.min_crop_ratio, 1.0) * side_max)
            top, left = self.rng.integers(0, side_max - side + 1), self.rng.integers(0, side_max - side + 1)
            crop = mask[top : top + side, left : left + side]
            if total == 0 or (crop == focus).sum() > FOCUS_KEEP * total:
                return image[top : top + side, left : left + side], crop
        return image, mask

    def __call__(self, image: np.ndarray, mask: np.ndarray, focus: int) -> tuple[np.ndarray, np.ndarray]:
        """Augment one pair.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            mask: ``(H, W)`` uint8 labels.
            focus: the class whose pixels the random crop must keep.

        Returns:
            ``(R, R, 3)`` uint8 image and ``(R, R)`` uint8 mask.
        """
        if not self.face and self.rng.random() < 0.1:
            image, mask = self._zoom_out(image, mask)
        out = self.photometric(image=image, mask=mask)
        image, mask = self._focus_crop(out["image"], out["mask"], focus)
        out = self.rotate(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
        return out["image"], out["mask"]
