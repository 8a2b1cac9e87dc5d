"""The job configuration, translated into the method's own settings (one place for every bridge).

``pipeline.config`` declares what a user sets; ``smite_ops`` takes frozen dataclasses that know nothing about
YAML or pydantic. The functions here are the only translation between the two, so a new key is wired once.
This module imports neither Ray nor video I/O: benchmarks and actors can build the method from a
configuration alone.
"""

from __future__ import annotations

from dataclasses import fields

from pipeline.config import GuidanceConfig, JobConfig
from smite_ops.guidance import GuidanceSettings, GuidedSegmenter
from smite_ops.learning import LearnSettings
from smite_ops.losses import SmiteLoss
from smite_ops.segmentation import SegmentSettings, WindowSegmenter
from smite_ops.temporal import TemporalRefiner


def segment_settings(config: JobConfig) -> SegmentSettings:
    """The method's segmentation settings from a job configuration."""
    segment = config.segment
    return SegmentSettings(
        resolution=config.model.resolution, t_range=segment.t_range, hierarchical=segment.hierarchical,
        crop_expand=segment.crop_expand, multi_crop=segment.multi_crop,
        pooled_group_norm=segment.pooled_group_norm,
    )


def learn_settings(config: JobConfig) -> LearnSettings:
    """The method's learning settings from a job configuration."""
    train = config.train
    return LearnSettings(
        token_epochs=train.token_epochs, stage2=train.stage2, trainable=train.trainable,
        token_lr=train.token_lr, unet_lr=train.unet_lr, t_range=train.t_range,
        guidance_scale=train.guidance_scale, validation_t_range=train.validation_t_range,
        resolution=config.model.resolution, loss_scale=train.loss_scale,
        loss=SmiteLoss(coef_sd=train.coef_sd, coef_freq=train.coef_freq, freq_from_epoch=train.freq_from_epoch,
                       freq_reference_quirk=train.freq_low_band == "official"),
    )


def guidance_settings(guidance: GuidanceConfig) -> GuidanceSettings:
    """The guided loop's settings: every :class:`GuidanceSettings` field takes the section's value of that name."""
    section = guidance.model_dump()
    shared = {f.name: section[f.name] for f in fields(GuidanceSettings) if f.name in section}
    return GuidanceSettings(**shared | {key: tuple(shared[key]) for key in ("timesteps", "betas")})


def temporal_refiner(segmenter: WindowSegmenter, guidance: GuidanceConfig) -> TemporalRefiner | None:
    """Phase-B refinement of ``segmenter``'s windows in the section's ``mode``; None when guidance is off."""
    if not guidance.enabled:
        return None
    guided = None if guidance.mode == "filter" else GuidedSegmenter(segmenter, guidance_settings(guidance))
    return TemporalRefiner(
        guidance.mode, guided, guidance.voting_window, guidance.filter_radius, projection=guidance.track_projection
    )
