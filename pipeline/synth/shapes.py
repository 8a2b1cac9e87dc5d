"""Procedural object kinds (car, face, horse): their parts at two granularities and how to draw an instance.

Each kind draws an instance in its own object frame (x right, y down, about one unit across, origin near
the middle) as a list of :class:`~pipeline.synth.raster.Part` whose materials are FINE labels
(``fine_parts``, ``background`` first). The COARSE granularity merges fine parts: ``fine_to_coarse[f]`` is
the coarse label of fine label ``f``, so coarse ground truth is ``np.asarray(fine_to_coarse)[fine_labels]``.
The fine part lists of car and face, and the coarse list of horse, are the reference configs' prompts
(METHOD.md §1.1), so the synthetic sets drop into the shipped presets.

``phase`` (radians, growing with time) drives articulation: wheels spin, mouths open and eyes blink, legs
and tails swing. An instance is a frozen dataclass of plain floats/tuples (its ``asdict`` is JSON) holding
everything that varies between instances of a kind: colours, proportions, facing.
"""

from __future__ import annotations

import colorsys
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pipeline.synth.raster import Capsule, Ellipse, Part, Polygon, affine

Colour = tuple[float, ...]
"""RGB, three floats in 0..255."""


def random_colour(
    rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float], val: tuple[float, float]
) -> Colour:
    """A random RGB colour (0..255 floats, rounded to 0.1) from HSV ranges; hue wraps around 1."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return tuple(round(255.0 * c, 1) for c in rgb)


def _scaled(colour: Colour, factor: float) -> Colour:
    return tuple(min(255.0, c * factor) for c in colour)


def _box(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return Polygon(((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


IDENTITY = np.eye(3)


class ObjectKind(ABC):
    """A drawable object kind.

    Class attributes:
        name: kind name used in dataset folder names.
        fine_parts / coarse_parts: class names, ``background`` first.
        fine_to_coarse: coarse label of each fine label (a merge: every coarse part has >= 1 fine part).
        extent: pixels per object unit as a fraction of the image size.
        anchor: where the object origin sits in the image, as fractions of (width, height).
    """

    name: ClassVar[str]
    fine_parts: ClassVar[tuple[str, ...]]
    coarse_parts: ClassVar[tuple[str, ...]]
    fine_to_coarse: ClassVar[tuple[int, ...]]
    extent: ClassVar[float]
    anchor: ClassVar[tuple[float, float]]

    @abstractmethod
    def sample_instance(self, rng: np.random.Generator) -> Any:
        """A new instance (frozen dataclass) with random colours and proportions."""

    @abstractmethod
    def parts(self, instance: Any, phase: float) -> list[Part]:
        """Painter-ordered parts in the object frame, fine labels as materials, articulated by ``phase``."""


@dataclass(frozen=True)
class CarInstance:
    body: Colour
    window: Colour
    wheel: Colour
    headlight: Colour
    taillight: Colour
    plate: Colour
    body_height: float
    cabin_height: float
    wheel_radius: float
    wheelbase: float
    facing_left: bool


class Car(ObjectKind):
    """A car seen from the side: body, cabin, two windows, two spinning wheels, lights and a rear plate."""

    name = "car"
    fine_parts = ("background", "body", "light", "plate", "wheel", "window")
    coarse_parts = ("background", "body", "wheel", "window")
    fine_to_coarse = (0, 1, 1, 1, 2, 3)
    extent = 0.72
    anchor = (0.5, 0.52)

    def sample_instance(self, rng: np.random.Generator) -> CarInstance:
        return CarInstance(
            body=random_colour(rng, (0.0, 1.0), (0.45, 0.9), (0.45, 0.95)),
            window=random_colour(rng, (0.52, 0.62), (0.25, 0.5), (0.25, 0.45)),
            wheel=random_colour(rng, (0.0, 1.0), (0.0, 0.15), (0.12, 0.22)),
            headlight=random_colour(rng, (0.12, 0.17), (0.15, 0.45), (0.9, 1.0)),
            taillight=random_colour(rng, (-0.03, 0.03), (0.75, 1.0), (0.7, 0.95)),
            plate=random_colour(rng, (0.1, 0.16), (0.0, 0.35), (0.85, 1.0)),
            body_height=float(rng.uniform(0.17, 0.22)),
            cabin_height=float(rng.uniform(0.13, 0.17)),
            wheel_radius=float(rng.uniform(0.085, 0.105)),
            wheelbase=float(rng.uniform(0.56, 0.66)),
            facing_left=bool(rng.integers(2)),
        )

    def parts(self, instance: CarInstance, phase: float) -> list[Part]:
        car = instance
        bob = 0.008 * math.sin(2.0 * phase)
        bottom, top = 0.1 + bob, 0.1 + bob - car.body_height
        roof = top - car.cabin_height
        pane_top, pane_bottom = roof + 0.025, top - 0.008
        shell = Polygon(((-0.5, top + 0.02), (0.36, top), (0.5, top + 0.06), (0.5, bottom), (-0.5, bottom)))
        cabin = Polygon(((-0.34, top), (-0.22, roof), (0.1, roof), (0.26, top)))
        rear_pane = Polygon(((-0.3, pane_bottom), (-0.2, pane_top), (-0.07, pane_top), (-0.07, pane_bottom)))
        front_pane = Polygon(((-0.02, pane_bottom), (-0.02, pane_top), (0.09, pane_top), (0.21, pane_bottom)))
        body, light, plate, wheel, window = 1, 2, 3, 4, 5
        drawn = [
            Part(body, shell, IDENTITY, car.body, "gradient"),
            Part(body, cabin, IDENTITY, car.body, "gradient"),
            Part(window, rear_pane, IDENTITY, car.window, "gradient"),
            Part(window, front_pane, IDENTITY, car.window, "gradient"),
            Part(light, Ellipse(0.47, top + 0.045, 0.03, 0.022), IDENTITY, car.headlight, "dome"),
            Part(light, _box(-0.5, top + 0.03, -0.455, top + 0.07), IDENTITY, car.taillight, "flat"),
            Part(plate, _box(-0.5, bottom - 0.07, -0.43, bottom - 0.025), IDENTITY, car.plate, "flat"),
        ]
        spin = -1.7 * phase
        for x in (-car.wheelbase / 2, car.wheelbase / 2):
            hub = affine(x, bottom, spin)
            drawn.append(Part(wheel, Ellipse(0.0, 0.0, car.wheel_radius, car.wheel_radius), hub, car.wheel, "spokes"))
        return [part.placed(affine(mirror=car.facing_left)) for part in drawn]


@dataclass(frozen=True)
class FaceInstance:
    skin: Colour
    hair: Colour
    iris: Colour
    lips: Colour
    cloth: Colour
    head_width: float
    head_height: float
    eye_spacing: float
    hair_volume: float
    neck_width: float


class Face(ObjectKind):
    """A frontal head and shoulders: the mouth opens, the eyes blink and the features shift with head yaw."""

    name = "face"
    fine_parts = ("background", "skin", "eye", "mouth", "nose", "brow", "ear", "neck", "cloth", "hair")
    coarse_parts = ("background", "skin", "eye+brow", "mouth", "hair", "cloth")
    fine_to_coarse = (0, 1, 2, 3, 1, 2, 1, 1, 5, 4)
    extent = 0.75
    anchor = (0.5, 0.44)

    def sample_instance(self, rng: np.random.Generator) -> FaceInstance:
        return FaceInstance(
            skin=random_colour(rng, (0.03, 0.1), (0.25, 0.6), (0.45, 0.95)),
            hair=random_colour(rng, (0.02, 0.14), (0.3, 0.8), (0.1, 0.8)),
            iris=random_colour(rng, (0.0, 1.0), (0.3, 0.8), (0.15, 0.45)),
            lips=random_colour(rng, (-0.04, 0.02), (0.45, 0.8), (0.45, 0.8)),
            cloth=random_colour(rng, (0.0, 1.0), (0.2, 0.9), (0.2, 0.9)),
            head_width=float(rng.uniform(0.26, 0.31)),
            head_height=float(rng.uniform(0.34, 0.39)),
            eye_spacing=float(rng.uniform(0.1, 0.125)),
            hair_volume=float(rng.uniform(0.03, 0.08)),
            neck_width=float(rng.uniform(0.09, 0.12)),
        )

    def parts(self, instance: FaceInstance, phase: float) -> list[Part]:
        face = instance
        rx, ry = face.head_width, face.head_height
        skin, eye, mouth, nose, brow, ear, neck, cloth, hair = range(1, 10)
        yaw = 0.035 * math.sin(0.5 * phase)
        opening = 0.5 + 0.5 * math.sin(phase)
        blink = 0.6 + 0.4 * abs(math.cos(0.8 * phase))
        drawn = [
            Part(
                neck, _box(-face.neck_width, 0.2, face.neck_width, 0.5), IDENTITY, _scaled(face.skin, 0.85), "gradient"
            ),
            Part(
                cloth,
                Polygon(((-0.48, 0.65), (-0.36, 0.42), (0.36, 0.42), (0.48, 0.65))),
                IDENTITY,
                face.cloth,
                "gradient",
            ),
            Part(hair, Ellipse(0.0, -0.05, rx + face.hair_volume, ry + face.hair_volume), IDENTITY, face.hair),
            Part(ear, Ellipse(-rx + 0.01 + yaw, 0.0, 0.055, 0.085), IDENTITY, _scaled(face.skin, 0.92), "dome"),
            Part(ear, Ellipse(rx - 0.01 + yaw, 0.0, 0.055, 0.085), IDENTITY, _scaled(face.skin, 0.92), "dome"),
            Part(skin, Ellipse(0.0, 0.0, rx, ry), IDENTITY, face.skin, "dome"),
            Part(hair, Ellipse(0.0, -0.86 * ry, 0.92 * rx, 0.32 * ry), IDENTITY, face.hair, "gradient"),
        ]
        for side in (-1.0, 1.0):
            x = side * face.eye_spacing + yaw
            drawn += [
                Part(
                    brow,
                    Capsule(x - 0.05, -0.13, x + 0.05, -0.13 - 0.012 * side, 0.017),
                    IDENTITY,
                    _scaled(face.hair, 0.7),
                ),
                Part(eye, Ellipse(x, -0.05, 0.058, 0.035 * blink), IDENTITY, (235.0, 235.0, 228.0)),
                Part(eye, Ellipse(x + 0.6 * yaw, -0.05, 0.026, 0.026 * blink), IDENTITY, face.iris),
            ]
        drawn += [
            Part(
                nose,
                Polygon(((1.3 * yaw, -0.01), (1.3 * yaw - 0.045, 0.1), (1.3 * yaw + 0.045, 0.1))),
                IDENTITY,
                _scaled(face.skin, 0.8),
                "gradient",
            ),
            Part(mouth, Ellipse(yaw, 0.2, 0.09, 0.022 + 0.035 * opening), IDENTITY, face.lips, "dome"),
        ]
        return drawn


@dataclass(frozen=True)
class HorseInstance:
    coat: Colour
    mane: Colour
    hoof: Colour
    body_length: float
    body_depth: float
    leg_length: float
    neck_angle: float
    facing_left: bool


class Horse(ObjectKind):
    """A quadruped seen from the side: walking legs (far pair darker), a swishing tail, a nodding head."""

    name = "horse"
    fine_parts = ("background", "head", "neck", "torso", "foreleg", "hindleg", "tail")
    coarse_parts = ("background", "head", "neck+torso", "leg", "tail")
    fine_to_coarse = (0, 1, 2, 2, 3, 3, 4)
    extent = 0.86
    anchor = (0.5, 0.48)

    def sample_instance(self, rng: np.random.Generator) -> HorseInstance:
        return HorseInstance(
            coat=random_colour(rng, (0.03, 0.11), (0.2, 0.85), (0.25, 0.9)),
            mane=random_colour(rng, (0.03, 0.11), (0.1, 0.7), (0.08, 0.4)),
            hoof=random_colour(rng, (0.0, 1.0), (0.0, 0.2), (0.08, 0.3)),
            body_length=float(rng.uniform(0.27, 0.32)),
            body_depth=float(rng.uniform(0.11, 0.14)),
            leg_length=float(rng.uniform(0.27, 0.33)),
            neck_angle=float(rng.uniform(-0.15, 0.15)),
            facing_left=bool(rng.integers(2)),
        )

    def _leg(
        self, label: int, hip: tuple[float, float], swing: float, horse: HorseInstance, shade: float
    ) -> list[Part]:
        joint = affine(hip[0], hip[1], swing)
        length = horse.leg_length
        return [
            Part(label, Capsule(0.0, 0.0, 0.0, length, 0.032), joint, _scaled(horse.coat, 0.85 * shade), "gradient"),
            Part(label, Capsule(0.0, length - 0.01, 0.0, length + 0.015, 0.034), joint, _scaled(horse.hoof, shade)),
        ]

    def parts(self, instance: HorseInstance, phase: float) -> list[Part]:
        horse = instance
        head, neck, torso, foreleg, hindleg, tail = range(1, 7)
        half, depth = horse.body_length, horse.body_depth
        shoulder, hip = (0.7 * half, 0.02), (-0.72 * half, 0.02)
        swing = [0.32 * math.sin(phase + offset) for offset in (0.0, math.pi, 0.5 * math.pi, 1.5 * math.pi)]
        drawn = self._leg(foreleg, shoulder, swing[1], horse, 0.7) + self._leg(hindleg, hip, swing[3], horse, 0.7)
        rump = affine(-0.92 * half, -0.6 * depth, 0.5 + 0.25 * math.sin(1.3 * phase))
        drawn.append(Part(tail, Capsule(0.0, 0.0, 0.0, 0.26, 0.028), rump, horse.mane, "gradient"))
        drawn.append(Part(torso, Ellipse(0.0, 0.0, half, depth), IDENTITY, horse.coat, "dome"))
        drawn += self._leg(foreleg, shoulder, swing[0], horse, 1.0) + self._leg(hindleg, hip, swing[2], horse, 1.0)
        withers = affine(0.75 * half, -0.45 * depth, horse.neck_angle + 0.12 * math.sin(0.7 * phase))
        neck_shape = Polygon(((-0.08, 0.0), (0.07, 0.09), (0.15, -0.17), (0.06, -0.22)))
        drawn.append(Part(neck, neck_shape, withers, _scaled(horse.coat, 0.97), "gradient"))
        poll = withers @ affine(0.11, -0.2, 0.75)
        drawn.append(Part(head, Ellipse(0.07, 0.0, 0.115, 0.05), poll, _scaled(horse.coat, 1.05), "dome"))
        return [part.placed(affine(mirror=horse.facing_left)) for part in drawn]


KINDS: dict[str, ObjectKind] = {kind.name: kind for kind in (Car(), Face(), Horse())}
