"""The job configuration, handed to the method (one place for every bridge).

The ``train``, ``segment`` and ``guidance`` sections of :class:`~pipeline.config.JobConfig` inherit the method's
settings types, so each value is declared and validated once; the functions here pick a section's method fields
and add what lives elsewhere in the job (the working resolution, the loss). This module imports neither Ray nor
video I/O: benchmarks and actors can build the method from a configuration alone.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pipeline.config import GuidanceConfig, JobConfig
from smite_ops.backbone import Backbone
from smite_ops.guidance import GuidanceSettings, GuidedSegmenter
from smite_ops.learning import LearnOptions, LearnSettings
from smite_ops.losses import LossOptions, SmiteLoss
from smite_ops.part_model import PartModel
from smite_ops.segmentation import SegmentOptions, SegmentSettings, WindowSegmenter
from smite_ops.temporal import TemporalRefiner
from smite_ops.unet_maps import MapOptions


def fields_of(options: type, section: object) -> dict[str, Any]:
    """The values of ``section`` for the fields of the settings type ``options`` (a base class of the section)."""
    return {f.name: getattr(section, f.name) for f in fields(options)}


def segment_settings(config: JobConfig) -> SegmentSettings:
    """The method's segmentation settings: the ``segment`` section's options at the model's resolution."""
    return SegmentSettings(**fields_of(SegmentOptions, config.segment), resolution=config.model.resolution)


def map_options(config: JobConfig) -> MapOptions:
    """How the UNet's captured attention becomes class maps: the ``model`` section's readout."""
    return MapOptions(readout=config.model.readout)


def window_segmenter(backbone: Backbone, part_model: PartModel, config: JobConfig) -> WindowSegmenter:
    """The job's unguided window segmenter: ``segment`` settings and the ``model`` section's map readout."""
    return WindowSegmenter(backbone, part_model, segment_settings(config), options=map_options(config))


def learn_settings(config: JobConfig) -> LearnSettings:
    """The method's learning settings: the ``train`` section's options and loss at the model's resolution."""
    return LearnSettings(
        **fields_of(LearnOptions, config.train), resolution=config.model.resolution,
        loss=SmiteLoss(**fields_of(LossOptions, config.train)),
    )


def guidance_settings(guidance: GuidanceConfig) -> GuidanceSettings:
    """The guided loop's settings: the section's :class:`GuidanceSettings` fields."""
    return GuidanceSettings(**fields_of(GuidanceSettings, guidance))


def temporal_refiner(segmenter: WindowSegmenter, guidance: GuidanceConfig) -> TemporalRefiner | None:
    """Phase-B refinement of ``segmenter``'s windows in the section's ``mode``; None when guidance is off."""
    if not guidance.enabled:
        return None
    guided = None if guidance.mode == "filter" else GuidedSegmenter(segmenter, guidance_settings(guidance))
    return TemporalRefiner(
        guidance.mode, guided, guidance.voting_window, guidance.filter_radius, projection=guidance.track_projection
    )
