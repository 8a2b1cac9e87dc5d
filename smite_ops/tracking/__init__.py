"""Point tracking: a checkpoint-compatible CoTracker3 and a weight-free fallback, behind `PointTracker`."""

from smite_ops.tracking.base import PointTracker, Tracks

__all__ = ["PointTracker", "Tracks"]
