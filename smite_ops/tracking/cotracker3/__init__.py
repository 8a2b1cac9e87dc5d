"""Checkpoint-compatible CoTracker3 (offline): model, checkpoint loading, predictor and tracker."""

from smite_ops.tracking.cotracker3.checkpoint import CheckpointError, load_cotracker3, read_state_dict
from smite_ops.tracking.cotracker3.model import CoTracker3Offline, CoTrackerInputError, TrackerOutput
from smite_ops.tracking.cotracker3.predictor import CoTracker3Predictor, grid_points, model_queries
from smite_ops.tracking.cotracker3.tracker import CoTracker3Tracker

__all__ = [
    "CheckpointError",
    "CoTracker3Offline",
    "CoTracker3Predictor",
    "CoTracker3Tracker",
    "CoTrackerInputError",
    "TrackerOutput",
    "grid_points",
    "load_cotracker3",
    "model_queries",
    "read_state_dict",
]
