"""Synthetic part-segmentation benchmark: procedurally drawn cars, faces and horses with dense ground truth.

Entry point: :func:`generate_benchmark`; object kinds and their part lists: :data:`KINDS` (drawn by hand),
:data:`HELDOUT_KINDS` and ``generic-<index>`` (procedural layouts, :mod:`pipeline.synth.procedural`), all found
by name with :func:`find_kind`.
"""

from pipeline.synth.generate import generate_benchmark
from pipeline.synth.procedural import HELDOUT_KINDS, expand_kind_names, find_kind
from pipeline.synth.shapes import KINDS, ObjectKind

__all__ = ["HELDOUT_KINDS", "KINDS", "ObjectKind", "expand_kind_names", "find_kind", "generate_benchmark"]
