"""Synthetic part-segmentation benchmark: procedurally drawn cars, faces and horses with dense ground truth.

Entry point: :func:`generate_benchmark`; object kinds and their part lists: :data:`KINDS` (drawn by hand),
:data:`HELDOUT_KINDS` and ``generic-<index>`` (procedural layouts, :mod:`pipeline.synth.procedural`), all found
by name with :func:`find_kind` (or :func:`find_kinds`, which refuses unknown names).
"""

from pipeline.synth.generate import generate_benchmark
from pipeline.synth.procedural import (
    HELDOUT_KINDS,
    KNOWN_KIND_NAMES,
    UnknownKindError,
    expand_kind_names,
    find_kind,
    find_kinds,
)
from pipeline.synth.shapes import KINDS, ObjectKind

__all__ = [
    "HELDOUT_KINDS",
    "KINDS",
    "KNOWN_KIND_NAMES",
    "ObjectKind",
    "UnknownKindError",
    "expand_kind_names",
    "find_kind",
    "find_kinds",
    "generate_benchmark",
]
