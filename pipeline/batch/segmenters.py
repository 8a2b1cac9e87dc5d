"""Segmenter factories: picklable recipes that build a segmenter once inside each Ray actor.

A factory is called with no arguments in the actor process and returns a :class:`LoadedSegmenter`. Shipping
the recipe instead of the model keeps the driver light and lets every actor load its weights onto its own
device. :class:`PartModelFactory` is the SMITE model (backbone + learned part model);
:class:`NearestColourFactory` is the reference-free nearest-colour baseline fitted on a reference set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from pipeline.batch.commit_key import content_hash
from pipeline.config import JobConfig
from pipeline.io.references import load_reference_set
from pipeline.method.settings import temporal_refiner
from smite_ops.baselines import NearestColourSegmenter
from smite_ops.part_model import MANIFEST_FILE, WEIGHTS_FILE, load_part_model
from smite_ops.tracking.base import Tracks

SegmentFn = Callable[[Tensor, int], Tensor]
"""``segment(frames (T, 3, H, W) uint8, seed) -> scores (T, P, h, w)`` float class scores over the whole frame."""

RefineFn = Callable[[Tensor, Tensor, Tracks, tuple[int, int], int], Tensor]
"""``refine(frames (T, 3, H, W) uint8, reference (T, P, h, w), tracks, track_frame_size (H, W), seed) -> scores``:
guided refinement of a window against its unguided reference scores and its point tracks (phase B)."""


@dataclass
class LoadedSegmenter:
    """A segmenter ready to run, with what the outputs need to name its classes.

    Attributes:
        segment: the window segmenter call (see :data:`SegmentFn`).
        part_names: the ``P`` class names, ``background`` first.
        model_id: a short id of the model, written to every mask row.
        refine: guided refinement, present when the job has guidance on.
        frame_forwards: UNet frame-forward equivalents run so far (a backward counts two); None: no UNet.
    """

    segment: SegmentFn
    part_names: list[str]
    model_id: str
    refine: RefineFn | None = None
    frame_forwards: Callable[[], int] | None = None


SegmenterFactory = Callable[[], LoadedSegmenter]
"""A picklable zero-argument callable that builds a :class:`LoadedSegmenter` (run once per actor)."""


@dataclass(frozen=True)
class PartModelFactory:
    """The SMITE segmenter: the job's backbone plus the learned part model in ``model_dir``."""

    model_dir: str
    config: JobConfig

    def __call__(self) -> LoadedSegmenter:
        # imported here: diffusers takes ~10 s to import, which actors running another segmenter never need
        from pipeline.batch.sequential import build_segmenter

        segmenter, part_model = build_segmenter(self.model_dir, self.config)
        refine = temporal_refiner(segmenter, self.config.guidance)
        runner = segmenter.runner
        return LoadedSegmenter(
            segmenter, part_model.part_names, part_model.model_id, refine, lambda: runner.frame_forwards
        )

    def fingerprint(self) -> dict[str, str]:
        """Content hashes of the part model's files and of the backbone it was trained on (for commit keys).

        Only the model's own files count: ``smite train`` may keep its training state in the same folder.
        """
        root = self.model_dir.rstrip("/")
        files = {name: content_hash(f"{root}/{name}") for name in (MANIFEST_FILE, WEIGHTS_FILE)}
        return {**files, "backbone": load_part_model(self.model_dir).base_hash}


@dataclass(frozen=True)
class NearestColourFactory:
    """The nearest-colour baseline fitted on the reference set in ``references_dir``.

    Its model id hashes the fitted colour table, so two fits on the same references share an id.
    """

    references_dir: str
    bins: int = 32

    def __call__(self) -> LoadedSegmenter:
        references = load_reference_set(self.references_dir)
        classifier = NearestColourSegmenter(references.images, references.masks, references.num_parts, self.bins)
        digest = hashlib.sha256(classifier.table.numpy().tobytes()).hexdigest()[:8]

        def segment(frames: Tensor, seed: int) -> Tensor:
            return classifier(frames)

        return LoadedSegmenter(segment, references.part_names, f"nearest-colour-{digest}")

    def fingerprint(self) -> dict[str, str | int]:
        """The baseline's settings and the content hash of its reference set (for commit keys)."""
        return {"baseline": "nearest-colour", "bins": self.bins, "references": content_hash(self.references_dir)}
