"""Scenes around one object: textured scrolling backgrounds, smooth pose paths, a passing occluder.

A video is the object drawn at :func:`pose_at` for ``tau = t / (T - 1)`` in ``0..1`` over a background
scrolled by :func:`background_at`, with the occluder in front. The occluder is painted with material
:data:`OCCLUDER`; ground truth maps it to background (:func:`render`), because an occluded part is not
visible. All randomness comes from the ``numpy.random.Generator`` passed in, so a scene is a pure
function of its generator's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import fourier_gaussian

from pipeline.synth.raster import Canvas, Part, Polygon, affine
from pipeline.synth.shapes import ObjectKind, random_colour

OCCLUDER = 255
"""Material code of occluder pixels (ground truth: background)."""


@dataclass(frozen=True)
class Pose:
    """Object placement: centre and scale as fractions of the image size, rotation in radians,
    articulation phase in radians."""

    x: float
    y: float
    scale: float
    angle: float
    phase: float

    def matrix(self, kind: ObjectKind, size: int) -> np.ndarray:
        """``(3, 3)`` object frame -> image pixels for a ``size x size`` image."""
        return affine(self.x * size, self.y * size, self.angle, self.scale * kind.extent * size)


@dataclass(frozen=True)
class Motion:
    """A smooth pose path.

    x, y, scale and angle each follow ``base + amplitude[i] * sin(2 pi cycles[i] tau + offset[i])`` (scale
    multiplicatively: ``base.scale * (1 + ...)``), ``i`` in that order; the articulation phase grows linearly
    by ``phase_cycles`` turns over the video.
    """

    base: Pose
    amplitude: tuple[float, ...]
    cycles: tuple[float, ...]
    offset: tuple[float, ...]
    phase_cycles: float


@dataclass(frozen=True)
class Occluder:
    """A striped bar crossing the frame between ``tau = start`` and ``tau = start + 0.6``."""

    colour: tuple[float, ...]
    width: float
    tilt: float
    start: float
    left_to_right: bool


def random_pose(kind: ObjectKind, rng: np.random.Generator) -> Pose:
    """A still pose for a reference image: near the anchor, moderate scale and rotation, any phase."""
    return Pose(
        x=kind.anchor[0] + rng.uniform(-0.05, 0.05),
        y=kind.anchor[1] + rng.uniform(-0.04, 0.04),
        scale=rng.uniform(0.85, 1.05),
        angle=rng.uniform(-0.2, 0.2),
        phase=rng.uniform(0.0, 2.0 * math.pi),
    )


def random_motion(kind: ObjectKind, rng: np.random.Generator) -> Motion:
    """A pose path that keeps the object in frame: drift, zoom, rocking and 1.5-3 articulation cycles."""
    return Motion(
        base=Pose(
            x=kind.anchor[0],
            y=kind.anchor[1],
            scale=rng.uniform(0.85, 0.95),
            angle=rng.uniform(-0.05, 0.05),
            phase=rng.uniform(0.0, 2.0 * math.pi),
        ),
        amplitude=(rng.uniform(0.03, 0.06), rng.uniform(0.01, 0.03), rng.uniform(0.06, 0.12), rng.uniform(0.08, 0.16)),
        cycles=tuple(float(c) for c in rng.uniform(0.4, 1.0, size=4)),
        offset=tuple(float(o) for o in rng.uniform(0.0, 2.0 * math.pi, size=4)),
        phase_cycles=rng.uniform(1.5, 3.0),
    )


def pose_at(motion: Motion, tau: float) -> Pose:
    """The pose at normalised time ``tau`` (0 = first frame, 1 = last)."""
    wave = [
        a * math.sin(2.0 * math.pi * c * tau + o)
        for a, c, o in zip(motion.amplitude, motion.cycles, motion.offset, strict=True)
    ]
    base = motion.base
    return Pose(
        x=base.x + wave[0],
        y=base.y + wave[1],
        scale=base.scale * (1.0 + wave[2]),
        angle=base.angle + wave[3],
        phase=base.phase + 2.0 * math.pi * motion.phase_cycles * tau,
    )


def random_occluder(rng: np.random.Generator) -> Occluder:
    """A bar 8-13 % of the frame wide, tilted up to ~17 degrees, crossing during the middle of the video."""
    return Occluder(
        colour=random_colour(rng, (0.0, 1.0), (0.1, 0.6), (0.3, 0.9)),
        width=rng.uniform(0.08, 0.13),
        tilt=rng.uniform(-0.3, 0.3),
        start=rng.uniform(0.1, 0.3),
        left_to_right=bool(rng.integers(2)),
    )


def occluder_part(occluder: Occluder, tau: float, size: int) -> Part:
    """The bar at time ``tau``: its centre moves linearly from -15 % to 115 % of the width (off frame outside)."""
    progress = float(np.clip((tau - occluder.start) / 0.6, 0.0, 1.0))
    if not occluder.left_to_right:
        progress = 1.0 - progress
    centre = size * (-0.15 + 1.3 * progress)
    half_width, half_length = 0.5 * occluder.width * size, 0.8 * size
    bar = Polygon(
        ((-half_width, -half_length), (half_width, -half_length), (half_width, half_length), (-half_width, half_length))
    )
    return Part(OCCLUDER, bar, affine(centre, 0.5 * size, occluder.tilt), occluder.colour, "stripes")


def _periodic_blur(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with wrap-around borders, done in the Fourier domain (cost independent of sigma)."""
    return np.fft.ifft2(fourier_gaussian(np.fft.fft2(noise), sigma=sigma)).real


def background_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A tileable ``(2 size, 2 size, 3)`` float32 texture (0..255): two blurred noise scales mixing two colours."""
    shape = (2 * size, 2 * size)
    coarse = _periodic_blur(rng.standard_normal(shape), sigma=size / 10)
    fine = _periodic_blur(rng.standard_normal(shape), sigma=size / 64 + 0.5)
    mix = 0.7 * coarse / (coarse.std() + 1e-9) + 0.3 * fine / (fine.std() + 1e-9)
    weight = 1.0 / (1.0 + np.exp(-1.5 * mix))
    first = np.asarray(random_colour(rng, (0.0, 1.0), (0.1, 0.5), (0.35, 0.8)))
    second = np.asarray(random_colour(rng, (0.0, 1.0), (0.1, 0.5), (0.35, 0.8)))
    return (weight[..., None] * first + (1.0 - weight[..., None]) * second).astype(np.float32)


def background_at(texture: np.ndarray, velocity: tuple[float, float], tau: float, size: int) -> np.ndarray:
    """The ``(size, size, 3)`` window of the tileable texture scrolled by ``velocity * size`` pixels per unit tau."""
    dy, dx = (round(v * tau * size) for v in velocity)
    rows = (np.arange(size) + dy) % texture.shape[0]
    cols = (np.arange(size) + dx) % texture.shape[1]
    return texture[np.ix_(rows, cols)]


def render(
    kind: ObjectKind, instance: Any, pose: Pose, background: np.ndarray, occluder: Part | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame.

    Args:
        kind: the object kind; instance: its instance; pose: where and how it is drawn.
        background: ``(S, S, 3)`` float image (copied, not modified).
        occluder: an optional part painted last (material :data:`OCCLUDER`).

    Returns:
        ``(rgb, labels)``: ``(S, S, 3)`` uint8 image and ``(S, S)`` uint8 FINE labels (occluder = background).
    """
    size = background.shape[0]
    canvas = Canvas(background.astype(np.float32, copy=True))
    placement = pose.matrix(kind, size)
    for part in kind.parts(instance, pose.phase):
        canvas.paint(part.placed(placement))
    if occluder is not None:
        canvas.paint(occluder)
    labels = np.where(canvas.material == OCCLUDER, 0, canvas.material).astype(np.uint8)
    return canvas.image(), labels


@dataclass(frozen=True)
class VideoScene:
    """Everything but the object instance that a video needs: pose path, occluder, scrolling background.

    Attributes:
        texture: ``(2S, 2S, 3)`` float32 tileable background for an ``S x S`` video.
        velocity: background scroll (rows, cols) in image sizes over the whole video.
    """

    motion: Motion
    occluder: Occluder
    texture: np.ndarray
    velocity: tuple[float, float]


def random_scene(kind: ObjectKind, rng: np.random.Generator, size: int) -> VideoScene:
    """Sample a :class:`VideoScene` for an ``size x size`` video of ``kind``."""
    return VideoScene(
        motion=random_motion(kind, rng),
        occluder=random_occluder(rng),
        texture=background_texture(rng, size),
        velocity=(rng.uniform(-0.3, 0.3), rng.uniform(-0.6, 0.6)),
    )


def render_video(
    kind: ObjectKind, instance: Any, scene: VideoScene, num_frames: int, occluded: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Render every frame of a video.

    Args:
        num_frames: T >= 2.
        occluded: draw the occluder (False gives the same video without it, for checks).

    Returns:
        ``(frames, labels)``: ``(T, S, S, 3)`` uint8 RGB and ``(T, S, S)`` uint8 FINE labels.
    """
    size = scene.texture.shape[0] // 2
    frames, labels = [], []
    for t in range(num_frames):
        tau = t / (num_frames - 1)
        background = background_at(scene.texture, scene.velocity, tau, size)
        bar = occluder_part(scene.occluder, tau, size) if occluded else None
        rgb, label = render(kind, instance, pose_at(scene.motion, tau), background, bar)
        frames.append(rgb)
        labels.append(label)
    return np.stack(frames), np.stack(labels)
