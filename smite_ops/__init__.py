"""SMITE, the method, in pure PyTorch: tensors in, tensors out (no files, Ray or Prefect).

The entry points, imported on first use (``from smite_ops import load_backbone`` loads diffusers then)::

    backbone = load_backbone("path/to/stable-diffusion-2-1-base")     # a diffusers folder
    part_model = load_part_model("models/car", expect_base_hash=backbone.content_hash)
    segmenter = WindowSegmenter(backbone, part_model, SegmentSettings())
    scores = segmenter(frames, seed=0)   # (T, 3, H, W) uint8 frames -> (T, P, S, S) class scores

Every error a caller's input can cause is an :class:`InputError` (a ``ValueError``), except an out-of-bounds
setting, which the settings classes (:mod:`smite_ops.settings`) refuse with pydantic's ``ValidationError``
(also a ``ValueError``) when they are built.
"""

from smite_ops.lazy import lazy_exports

__all__ = [
    "Backbone",
    "GuidanceSettings",
    "GuidedSegmenter",
    "InputError",
    "LearnOptions",
    "LearnSettings",
    "LossOptions",
    "PartLearner",
    "PartModel",
    "SegmentOptions",
    "SegmentSettings",
    "TemporalRefiner",
    "WindowSegmenter",
    "load_backbone",
    "load_part_model",
    "save_part_model",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Backbone": "smite_ops.backbone",
    "load_backbone": "smite_ops.backbone",
    "PartModel": "smite_ops.part_model",
    "load_part_model": "smite_ops.part_model",
    "save_part_model": "smite_ops.part_model",
    "SegmentOptions": "smite_ops.segmentation",
    "SegmentSettings": "smite_ops.segmentation",
    "WindowSegmenter": "smite_ops.segmentation",
    "LearnOptions": "smite_ops.learning",
    "LearnSettings": "smite_ops.learning",
    "LossOptions": "smite_ops.losses",
    "PartLearner": "smite_ops.learning",
    "GuidanceSettings": "smite_ops.guidance",
    "GuidedSegmenter": "smite_ops.guidance",
    "TemporalRefiner": "smite_ops.temporal",
    "InputError": "smite_ops.errors",
})
