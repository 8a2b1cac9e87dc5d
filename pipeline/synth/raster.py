"""Rasterise coloured 2-D primitives into an RGB image and a pixel-exact material (label) map.

Coordinates are image pixels, x to the right and y down; a pixel is "inside" a primitive when its centre
``(col + 0.5, row + 0.5)`` is. Each primitive lives in its own local frame placed by a 3x3 affine matrix
(local -> image); object poses and joint rotations are compositions of :func:`affine` matrices. Primitives
are painted in order (later ones cover earlier ones) and every painted pixel takes the primitive's material
and colour at once, so the label map is exactly the drawn object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

Texture = Literal["flat", "dome", "gradient", "spokes", "stripes"]


def affine(
    tx: float = 0.0, ty: float = 0.0, angle: float = 0.0, scale: float = 1.0, mirror: bool = False
) -> np.ndarray:
    """``(3, 3)`` float64 matrix: mirror x (optional), then scale, rotate by ``angle`` radians, translate."""
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    flip = -1.0 if mirror else 1.0
    return np.array([[cos * flip, -sin, tx], [sin * flip, cos, ty], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Ellipse:
    """Axis-aligned ellipse centred at ``(cx, cy)``, radii ``(rx, ry)``; local coords scaled to the unit disk."""

    cx: float
    cy: float
    rx: float
    ry: float

    def bounds(self) -> tuple[float, float, float, float]:
        return self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, self.cy + self.ry

    def cover(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        u, v = (x - self.cx) / self.rx, (y - self.cy) / self.ry
        return u * u + v * v <= 1.0, u, v


@dataclass(frozen=True)
class Capsule:
    """Segment ``(x0, y0)``-``(x1, y1)`` thickened by ``radius``; u runs 0..1 along it, v -1..1 across."""

    x0: float
    y0: float
    x1: float
    y1: float
    radius: float

    def bounds(self) -> tuple[float, float, float, float]:
        r = self.radius
        return (
            min(self.x0, self.x1) - r,
            min(self.y0, self.y1) - r,
            max(self.x0, self.x1) + r,
            max(self.y0, self.y1) + r,
        )

    def cover(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dy = self.x1 - self.x0, self.y1 - self.y0
        length2 = max(dx * dx + dy * dy, 1e-12)
        u = np.clip(((x - self.x0) * dx + (y - self.y0) * dy) / length2, 0.0, 1.0)
        ex, ey = x - (self.x0 + u * dx), y - (self.y0 + u * dy)
        return (
            ex * ex + ey * ey <= self.radius * self.radius,
            u,
            (ex * -dy + ey * dx) / (np.sqrt(length2) * self.radius),
        )


@dataclass(frozen=True)
class Polygon:
    """Convex polygon (vertices in either winding order); u, v map its bounding box to -1..1."""

    vertices: tuple[tuple[float, float], ...]

    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = zip(*self.vertices, strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    def cover(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        points = np.asarray(self.vertices, dtype=np.float64)
        edges = np.roll(points, -1, axis=0) - points
        signed_area = np.sum(points[:, 0] * np.roll(points[:, 1], -1) - np.roll(points[:, 0], -1) * points[:, 1])
        sign = 1.0 if signed_area >= 0 else -1.0
        inside = np.ones(x.shape, dtype=bool)
        for (px, py), (ex, ey) in zip(points, edges, strict=True):
            inside &= sign * (ex * (y - py) - ey * (x - px)) >= 0.0
        x0, y0, x1, y1 = self.bounds()
        return inside, (2 * x - x0 - x1) / max(x1 - x0, 1e-12), (2 * y - y0 - y1) / max(y1 - y0, 1e-12)


class Shape(Protocol):
    """What :class:`Canvas` needs of a primitive (:class:`Ellipse`, :class:`Capsule`, :class:`Polygon`)."""

    def bounds(self) -> tuple[float, float, float, float]:
        """Local bounding box ``(x0, y0, x1, y1)``."""
        ...

    def cover(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For local points (float arrays of one shape): ``(inside (bool), u, v)``, u/v texture coordinates."""
        ...


@dataclass(frozen=True)
class Part:
    """One painted primitive.

    Attributes:
        material: value written into the material map (a part label, or a scene code such as an occluder's).
        shape: the primitive in its local frame.
        transform: ``(3, 3)`` local -> image affine.
        colour: RGB in 0..255 before shading.
        texture: brightness pattern over the primitive's local coordinates.
    """

    material: int
    shape: Shape
    transform: np.ndarray
    colour: tuple[float, ...]
    texture: Texture = "flat"

    def corners(self) -> np.ndarray:
        """``(2, 4)`` image coordinates (x; y) of the corners of the shape's local bounding box."""
        x0, y0, x1, y1 = self.shape.bounds()
        return (self.transform @ np.array([[x0, x1, x0, x1], [y0, y0, y1, y1], [1.0, 1.0, 1.0, 1.0]]))[:2]

    def placed(self, outer: np.ndarray) -> Part:
        """The same part with ``outer`` applied after its own transform (e.g. the object's pose)."""
        return Part(self.material, self.shape, outer @ self.transform, self.colour, self.texture)


def _shading(texture: Texture, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if texture == "dome":
        return 1.12 - 0.3 * np.minimum(u * u + v * v, 1.0)
    if texture == "gradient":
        return 1.1 - 0.2 * (v + 1.0)
    if texture == "spokes":
        radius, angle = np.hypot(u, v), np.arctan2(v, u)
        spokes = (np.cos(5.0 * angle) > 0.2) & (radius > 0.2) & (radius < 0.62)
        return np.where(radius < 0.2, 1.6, np.where(spokes, 1.9, np.where(radius < 0.68, 0.9, 0.55)))
    if texture == "stripes":
        return np.where(np.floor(4.0 * (v + 1.0)) % 2 == 0, 1.0, 0.75)
    return np.ones_like(u)


@dataclass
class Canvas:
    """An RGB float image with a material map, painted by :meth:`paint`.

    Attributes:
        rgb: ``(H, W, 3)`` float32, 0..255 (values may exceed 255 until :meth:`image`).
        material: ``(H, W)`` uint8; 0 where nothing was painted.
    """

    rgb: np.ndarray
    material: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.material = np.zeros(self.rgb.shape[:2], dtype=np.uint8)

    def paint(self, part: Part) -> None:
        """Paint one primitive over what is there (only its image-space bounding box is evaluated)."""
        corners = part.corners()
        height, width = self.material.shape
        c0, c1 = max(int(np.floor(corners[0].min())), 0), min(int(np.ceil(corners[0].max())) + 1, width)
        r0, r1 = max(int(np.floor(corners[1].min())), 0), min(int(np.ceil(corners[1].max())) + 1, height)
        if c0 >= c1 or r0 >= r1:
            return
        cols, rows = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
        inverse = np.linalg.inv(part.transform)
        x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
        y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
        inside, u, v = part.shape.cover(x, y)
        shade = _shading(part.texture, u, v)[inside]
        window = (slice(r0, r1), slice(c0, c1))
        self.material[window][inside] = part.material
        self.rgb[window][inside] = shade[:, None] * np.asarray(part.colour, dtype=np.float32)

    def image(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB."""
        return np.clip(np.rint(self.rgb), 0, 255).astype(np.uint8)
