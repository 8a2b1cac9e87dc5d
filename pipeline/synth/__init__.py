"""Synthetic part-segmentation benchmark: procedurally drawn cars, faces and horses with dense ground truth.

Entry point: :func:`generate_benchmark`; object kinds and their part lists: :data:`KINDS`.
"""

from pipeline.synth.generate import generate_benchmark
from pipeline.synth.shapes import KINDS, ObjectKind

__all__ = ["KINDS", "ObjectKind", "generate_benchmark"]
