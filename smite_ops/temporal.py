"""Phase-B temporal refinement of one window, by mode (the cost/quality points of ``benchmarks/temporal_frontier.py``).

Every mode starts from the window's phase-A scores ``S_ref`` (unguided, stitched) and its slice of the shared
point tracks:

- ``filter``: the zero-UNet track-vote filter (:func:`smite_ops.track_filter.track_vote_filter`) on ``S_ref``;
- ``fast``: the filter first, then guided latent updates whose tracking target is the filtered ``S_ref``
  (held fixed, so the few updates pull toward votes from the whole window's unguided maps rather than from
  the still-noisy maps of the current step), then the filter on their output;
- ``full``: the guided loop as the reference runs it (votes recomputed on each step's maps), unfiltered.

UNet cost per window frame: ``filter`` 0, the others :meth:`GuidanceSettings.frame_forwards` minus the
reference pass (phase A's).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from smite_ops.guidance import GuidanceError, GuidedSegmenter
from smite_ops.track_filter import track_vote_filter
from smite_ops.tracking.base import Tracks
from smite_ops.voting import GridRounding, project_to_grid

TemporalMode = Literal["filter", "fast", "full"]
TEMPORAL_MODES: tuple[TemporalMode, ...] = ("filter", "fast", "full")


class TemporalRefiner:
    """Refines one window's phase-A scores against its tracks (a ``pipeline.batch.segmenters.RefineFn``).

    Args:
        mode: ``filter``, ``fast`` or ``full`` (module docstring).
        guided: the guided segmenter; required unless ``mode`` is ``filter``.
        voting_window: frames of the voting window of the filter.
        radius: spread of the filter's corrections, in score cells.
        flips_only: the filter corrects only the cells whose label the vote changes.
        refilter: ``fast`` mode filters the guided scores again (else returns them as the UNet made them).
        projection: how track pixels map to score cells (:func:`smite_ops.voting.project_to_grid`).
    """

    def __init__(
        self,
        mode: TemporalMode,
        guided: GuidedSegmenter | None,
        voting_window: int = 15,
        radius: int = 0,
        flips_only: bool = False,
        refilter: bool = True,
        projection: GridRounding = "official",
    ) -> None:
        if mode not in TEMPORAL_MODES:
            raise GuidanceError(f"guidance mode must be one of {', '.join(TEMPORAL_MODES)}, got {mode!r}")
        if mode != "filter" and guided is None:
            raise GuidanceError(f"guidance mode {mode!r} needs a guided segmenter")
        self.mode = mode
        self.guided = guided
        self.voting_window = voting_window
        self.radius = radius
        self.flips_only = flips_only
        self.refilter = refilter
        self.projection = projection

    def filter(self, scores: Tensor, tracks: Tracks, track_frame_size: tuple[int, int]) -> Tensor:
        """Track-vote filter ``(T, P, s, s)`` scores with the window's tracks (pixels in ``track_frame_size``)."""
        side = scores.shape[-1]
        cells, valid = project_to_grid(tracks.points, tracks.visible, track_frame_size, (side, side), self.projection)
        cells, valid = cells.to(scores.device), valid.to(scores.device)
        return track_vote_filter(scores, cells, valid, self.voting_window, self.radius, self.flips_only)

    def __call__(
        self, frames: Tensor, reference: Tensor, tracks: Tracks, track_frame_size: tuple[int, int], seed: int
    ) -> Tensor:
        """Refined scores of one window.

        Args:
            frames: ``(T, 3, H, W)`` uint8 frames of the window.
            reference: ``(T, P, s, s)`` phase-A scores ``S_ref`` of these frames.
            tracks: the window's tracks, pixels in ``track_frame_size = (H, W)``.
            seed: seeds the guided loop's VAE sampling and noise.

        Returns:
            ``(T, P, S, S)`` float32 scores (``S`` = ``s`` for ``filter``, else the guided segmenter's output size).
        """
        if self.mode == "full" and self.guided is not None:
            return self.guided(frames, reference, tracks, track_frame_size, seed)
        filtered = self.filter(reference.float(), tracks, track_frame_size)
        if self.mode == "filter" or self.guided is None:
            return filtered
        scores = self.guided(frames, reference, tracks, track_frame_size, seed, votes=filtered)
        return self.filter(scores, tracks, track_frame_size) if self.refilter else scores
