"""Procedurally generated articulated kinds: a large space of part layouts, and held-out kinds that share none.

A :class:`Layout` is the structure of a kind: a core body (an ellipse or a convex polygon), one to four limb
chains attached around its outline (one or two segments each, every segment a capsule, an ellipse or a tapered
quad; a chain may be a mirrored pair) and up to two markings painted on the core. Its :meth:`Layout.signature`
(core primitive, each chain's segment primitives, symmetry and attachment sector, the number of markings) names
the discrete layout; proportions and joint angles are continuous and drawn per kind.

A :class:`LayoutSpace` is one generator configuration. Layout ``i`` of a space is drawn from its own random
stream ``(space seed, i)`` and redrawn until its signature hash lands in the space's half
(:attr:`LayoutSpace.half`), so :data:`PRETRAIN_SPACE` (pretraining corpora) and :data:`HELDOUT_SPACE` (the
held-out evaluation kinds :data:`HELDOUT_KINDS`) never share a layout, whatever their sizes.

Fine parts: the core, each chain's segments (proximal, distal) and each marking. Coarse parts: the core with its
markings, and each chain as a whole; every layout has fewer coarse than fine parts. Colours do not identify
parts: an instance paints its parts from a palette of 2-4 random colours assigned at random (two parts may share
a colour, and a part's colour changes from instance to instance), each part with a random texture.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.synth.raster import Capsule, Ellipse, Part, Polygon, Texture, affine
from pipeline.synth.shapes import KINDS, Colour, ObjectKind, random_colour
from smite_ops.errors import InputError

Primitive = Literal["capsule", "ellipse", "quad"]
PRIMITIVES: tuple[Primitive, ...] = ("capsule", "ellipse", "quad")
TEXTURES: tuple[Texture, ...] = ("flat", "dome", "gradient", "stripes")
CHAIN_NAMES: tuple[tuple[str, str], ...] = (
    ("arm", "hand"), ("leg", "foot"), ("neck", "head"), ("stalk", "bulb"),
    ("tail", "tuft"), ("wing", "feather"), ("horn", "point"), ("fin", "ray"),
)
"""(proximal, distal) fine part names of a chain; a kind uses each pair at most once."""
MARKING_NAMES = ("spot", "band")
CORE_NAME = "body"
REACH = 0.5
"""Distance (fraction of the image size, at pose scale 1) from the anchor of the farthest bounding-box corner of
the largest instance's parts over an articulation cycle."""


@dataclass(frozen=True)
class Segment:
    """One limb segment along its local +x axis: ``length`` and ``width`` in object units, angles in radians.

    ``rest`` is its angle relative to the parent's direction, ``swing`` the amplitude of its articulation and
    ``lag`` the articulation's phase offset.
    """

    primitive: Primitive
    length: float
    width: float
    rest: float
    swing: float
    lag: float


@dataclass(frozen=True)
class Chain:
    """Segments attached at angle ``anchor`` (radians) on the core outline; ``mirrored``: also drawn reflected
    about the vertical axis (same labels), with articulation phase shifted by ``mirror_lag``."""

    names: tuple[str, ...]
    anchor: float
    segments: tuple[Segment, ...]
    mirrored: bool
    mirror_lag: float


@dataclass(frozen=True)
class Marking:
    """An ellipse painted on the core: centre ``(x, y)`` and radii ``(rx, ry)`` as fractions of the core radii."""

    name: str
    x: float
    y: float
    rx: float
    ry: float


@dataclass(frozen=True)
class Layout:
    """The structure of one procedural kind (see the module docstring); lengths in object units."""

    core: Literal["ellipse", "polygon"]
    core_rx: float
    core_ry: float
    core_sides: int
    chains: tuple[Chain, ...]
    markings: tuple[Marking, ...]

    def signature(self) -> str:
        """The discrete layout: core primitive, sorted chain descriptors, marking count."""
        chains = sorted(
            f"{'/'.join(s.primitive for s in chain.segments)}{'*2' if chain.mirrored else ''}"
            f"@{round(chain.anchor / (math.pi / 4)) % 8}"
            for chain in self.chains
        )
        return f"{self.core}|{','.join(chains)}|m{len(self.markings)}"

    @property
    def fine_parts(self) -> tuple[str, ...]:
        """``background``, the core, every chain's segments in chain order, the markings."""
        chains = [name for chain in self.chains for name in chain.names]
        return ("background", CORE_NAME, *chains, *(marking.name for marking in self.markings))

    @property
    def coarse_parts(self) -> tuple[str, ...]:
        """``background``, the core (with its markings), each chain as one part named after its first segment."""
        return ("background", CORE_NAME, *(chain.names[0] for chain in self.chains))

    @property
    def fine_to_coarse(self) -> tuple[int, ...]:
        mapping = [0, 1]
        for index, chain in enumerate(self.chains):
            mapping += [2 + index] * len(chain.segments)
        return (*mapping, *([1] * len(self.markings)))


@dataclass(frozen=True)
class LayoutSpace:
    """A generator configuration: part-count bounds, chain bounds, seed and the signature-hash half it keeps."""

    name: str
    seed: int
    half: int
    fine_parts: tuple[int, int] = (3, 8)
    chains: tuple[int, int] = (1, 4)
    markings: tuple[int, int] = (0, 2)

    def layout(self, index: int) -> Layout:
        """Layout ``index`` of this space: a pure function of ``(seed, index)``."""
        key = (zlib.crc32(self.name.encode()), index)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))
        while True:
            layout = _sample_layout(rng, self)
            parts = len(layout.fine_parts) - 1
            if (
                self.fine_parts[0] <= parts <= self.fine_parts[1]
                and len(layout.coarse_parts) < len(layout.fine_parts)
                and zlib.crc32(layout.signature().encode()) % 2 == self.half
            ):
                return layout


def _sample_segment(rng: np.random.Generator, first: bool) -> Segment:
    return Segment(
        primitive=PRIMITIVES[int(rng.integers(len(PRIMITIVES)))],
        length=float(rng.uniform(0.14, 0.26) if first else rng.uniform(0.09, 0.18)),
        width=float(rng.uniform(0.07, 0.12) if first else rng.uniform(0.06, 0.13)),
        rest=float(rng.uniform(-0.5, 0.5) if first else rng.uniform(-1.0, 1.0)),
        swing=float(rng.uniform(0.1, 0.45)),
        lag=float(rng.uniform(0.0, 2.0 * math.pi)),
    )


def _sample_layout(rng: np.random.Generator, space: LayoutSpace) -> Layout:
    chain_count = int(rng.integers(space.chains[0], space.chains[1] + 1))
    names = rng.permutation(len(CHAIN_NAMES))[:chain_count]
    sectors = rng.permutation(8)[:chain_count]
    chains = []
    for pair, sector in zip(names, sectors, strict=True):
        depth = int(rng.integers(1, 3))
        # Mirrored pairs hang off the sides (sectors 1-3 and 5-7 are below and above the horizontal axis).
        mirrored = bool(rng.random() < 0.4) and int(sector) not in (0, 4)
        chains.append(
            Chain(
                names=CHAIN_NAMES[int(pair)][:depth],
                anchor=float(sector * math.pi / 4 + rng.uniform(-0.25, 0.25)),
                segments=tuple(_sample_segment(rng, first=k == 0) for k in range(depth)),
                mirrored=mirrored,
                mirror_lag=float(rng.choice([0.0, math.pi])),
            )
        )
    markings = tuple(
        Marking(name, float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.4, 0.4)),
                float(rng.uniform(0.2, 0.35)), float(rng.uniform(0.2, 0.35)))
        for name in MARKING_NAMES[: int(rng.integers(space.markings[0], space.markings[1] + 1))]
    )
    return Layout(
        core="ellipse" if rng.random() < 0.5 else "polygon",
        core_rx=float(rng.uniform(0.18, 0.28)),
        core_ry=float(rng.uniform(0.13, 0.24)),
        core_sides=int(rng.integers(5, 9)),
        chains=tuple(chains),
        markings=markings,
    )


@dataclass(frozen=True)
class ProceduralInstance:
    """One instance: a colour and a texture per fine part (background's unused), proportions and facing."""

    colours: tuple[Colour, ...]
    textures: tuple[Texture, ...]
    core_scale: float
    limb_scale: float
    facing_left: bool


class ProceduralKind(ObjectKind):
    """An :class:`ObjectKind` drawn from a :class:`Layout`; limbs swing with ``phase``."""

    anchor = (0.5, 0.5)

    def __init__(self, name: str, layout: Layout) -> None:
        self.name = name
        self.layout = layout
        self.fine_parts = layout.fine_parts
        self.coarse_parts = layout.coarse_parts
        self.fine_to_coarse = layout.fine_to_coarse
        largest = ProceduralInstance((0.0,) * len(self.fine_parts), ("flat",) * len(self.fine_parts), 1.12, 1.15, False)
        self.extent = REACH / max(_radius(self.parts(largest, phase)) for phase in np.linspace(0.0, 2.0 * math.pi, 16))

    def sample_instance(self, rng: np.random.Generator) -> ProceduralInstance:
        palette = [random_colour(rng, (0.0, 1.0), (0.2, 0.9), (0.3, 0.95)) for _ in range(int(rng.integers(2, 5)))]
        count = len(self.fine_parts)
        return ProceduralInstance(
            colours=tuple(palette[int(i)] for i in rng.integers(len(palette), size=count)),
            textures=tuple(TEXTURES[int(i)] for i in rng.integers(len(TEXTURES), size=count)),
            core_scale=float(rng.uniform(0.88, 1.12)),
            limb_scale=float(rng.uniform(0.85, 1.15)),
            facing_left=bool(rng.integers(2)),
        )

    def parts(self, instance: ProceduralInstance, phase: float) -> list[Part]:
        layout, drawn = self.layout, []
        rx, ry = layout.core_rx * instance.core_scale, layout.core_ry * instance.core_scale
        label = 2
        for chain in layout.chains:
            labels = range(label, label + len(chain.segments))
            label += len(chain.segments)
            drawn += self._chain(chain, labels, instance, phase, rx, ry, mirror=False)
            if chain.mirrored:
                drawn += self._chain(chain, labels, instance, phase + chain.mirror_lag, rx, ry, mirror=True)
        core_colour, core_texture = instance.colours[1], instance.textures[1]
        if layout.core == "ellipse":
            drawn.append(Part(1, Ellipse(0.0, 0.0, rx, ry), np.eye(3), core_colour, core_texture))
        else:
            turns = 2.0 * math.pi * np.arange(layout.core_sides) / layout.core_sides
            vertices = tuple((float(rx * math.cos(a)), float(ry * math.sin(a))) for a in turns)
            drawn.append(Part(1, Polygon(vertices), np.eye(3), core_colour, core_texture))
        for marking in layout.markings:
            shape = Ellipse(marking.x * rx, marking.y * ry, marking.rx * rx, marking.ry * ry)
            drawn.append(Part(label, shape, np.eye(3), instance.colours[label], instance.textures[label]))
            label += 1
        return [part.placed(affine(mirror=instance.facing_left)) for part in drawn]

    @staticmethod
    def _chain(
        chain: Chain, labels: range, instance: ProceduralInstance, phase: float, rx: float, ry: float, mirror: bool
    ) -> list[Part]:
        """The segments of one chain, root inside the core outline, each joint rotated by its articulation."""
        root = (0.85 * rx * math.cos(chain.anchor), 0.85 * ry * math.sin(chain.anchor))
        joint = affine(*root, chain.anchor)
        drawn = []
        for segment, label in zip(chain.segments, labels, strict=True):
            length, width = segment.length * instance.limb_scale, segment.width * instance.limb_scale
            joint = joint @ affine(angle=segment.rest + segment.swing * math.sin(phase + segment.lag))
            drawn.append(Part(label, _segment_shape(segment.primitive, length, width), joint,
                              instance.colours[label], instance.textures[label]))
            joint = joint @ affine(0.92 * length)
        return [part.placed(affine(mirror=True)) for part in drawn] if mirror else drawn


def _radius(parts: list[Part]) -> float:
    """The largest distance from the origin of a corner of any part's bounding box (object units)."""
    return float(max(np.hypot(*part.corners()).max() for part in parts))


def _segment_shape(primitive: Primitive, length: float, width: float) -> Capsule | Ellipse | Polygon:
    """A segment from ``(0, 0)`` to ``(length, 0)`` in its joint's frame."""
    if primitive == "capsule":
        return Capsule(0.0, 0.0, length - width / 2, 0.0, width / 2)
    if primitive == "ellipse":
        return Ellipse(length / 2, 0.0, length / 2, width / 2)
    return Polygon(((0.0, -width / 2), (length, -width / 4), (length, width / 4), (0.0, width / 2)))


PRETRAIN_SPACE = LayoutSpace("pretrain", seed=2027, half=0)
"""Layouts of pretraining corpora: ``generic-<index>`` kinds."""
HELDOUT_SPACE = LayoutSpace("heldout", seed=7919, half=1)
"""The held-out generator configuration: its own seed and the other signature half."""
HELDOUT_KINDS: dict[str, ProceduralKind] = {
    name: ProceduralKind(name, HELDOUT_SPACE.layout(index))
    for index, name in enumerate(("heldout-a", "heldout-b", "heldout-c", "heldout-d"))
}
"""The held-out evaluation kinds: never used to choose anything but the final report."""
_GENERIC = re.compile(r"generic-(\d+)")


def generic_kind(index: int) -> ProceduralKind:
    """Kind ``generic-<index>`` of :data:`PRETRAIN_SPACE`."""
    return ProceduralKind(f"generic-{index}", PRETRAIN_SPACE.layout(index))


def expand_kind_names(names: list[str]) -> list[str]:
    """``names`` with ``heldout`` replaced by the held-out kinds' names (other names unchanged, order kept)."""
    return [name for entry in names for name in (HELDOUT_KINDS if entry == "heldout" else (entry,))]


KNOWN_KIND_NAMES = f"{', '.join(KINDS)}, heldout-a .. heldout-d (heldout: all four), generic-<index>"
"""The kind names :func:`find_kind` and :func:`expand_kind_names` accept, for help texts and errors."""


class UnknownKindError(InputError):
    """A kind name :func:`find_kind` does not know."""


def find_kind(name: str) -> ObjectKind | None:
    """The kind called ``name``: a drawn kind (:data:`KINDS`), a held-out kind or ``generic-<index>``; None if none."""
    if name in KINDS:
        return KINDS[name]
    if name in HELDOUT_KINDS:
        return HELDOUT_KINDS[name]
    match = _GENERIC.fullmatch(name)
    return generic_kind(int(match.group(1))) if match else None


def find_kinds(names: list[str]) -> dict[str, ObjectKind]:
    """The kinds called ``names``, by name (in first-seen order; a repeated name appears once).

    Raises:
        UnknownKindError: some names are no kind (all of them named, with the known names).
    """
    kinds = {name: find_kind(name) for name in names}
    if unknown := [name for name, kind in kinds.items() if kind is None]:
        raise UnknownKindError(f"unknown kind(s) {unknown}; known: {KNOWN_KIND_NAMES}")
    return {name: kind for name, kind in kinds.items() if kind is not None}
