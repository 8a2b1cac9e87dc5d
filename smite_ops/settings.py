"""How the method's settings types are declared: frozen pydantic dataclasses, validated when they are built.

Every tunable of the method is declared once, in the ``smite_ops`` module that uses it
(:class:`~smite_ops.guidance.GuidanceSettings`, :class:`~smite_ops.segmentation.SegmentOptions`,
:class:`~smite_ops.learning.LearnOptions`, :class:`~smite_ops.losses.LossOptions`), with its default, its bounds
and its description. The job configuration (``pipeline.config``) composes these classes into its sections, so a
YAML file, ``--set`` and Python callers all meet the same checks. A bad value raises pydantic's
``ValidationError`` (a ``ValueError``) naming the field.

They stay dataclasses: ``dataclasses.replace`` and ``dataclasses.fields`` work (``replace`` validates again).
"""

from __future__ import annotations

import itertools
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

SETTINGS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
"""The pydantic configuration of every settings class (``@dataclass(frozen=True, config=SETTINGS_CONFIG)``):
unknown fields are errors and every float must be finite."""

MAX_EPOCHS = 1_000_000

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
"""A float in ``(0, 1]``."""
Timestep = Annotated[int, Field(ge=0, le=999)]
"""A diffusion timestep of the 1000-step schedule."""
Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]
EpochIndex = Annotated[int, Field(ge=0, le=MAX_EPOCHS)]


def _ordered(value: tuple[int, int]) -> tuple[int, int]:
    if value[0] > value[1]:
        raise ValueError(f"must be [low, high] with low <= high, got {list(value)}")
    return value


def _decreasing(value: tuple[int, ...]) -> tuple[int, ...]:
    if any(a <= b for a, b in itertools.pairwise(value)):
        raise ValueError(f"must be strictly decreasing, got {list(value)}")
    return value


TimestepRange = Annotated[tuple[Timestep, Timestep], AfterValidator(_ordered)]
"""An inclusive ``(low, high)`` timestep range."""
DecreasingTimesteps = Annotated[tuple[Timestep, ...], Field(min_length=1), AfterValidator(_decreasing)]
"""A non-empty, strictly decreasing sequence of timesteps."""

