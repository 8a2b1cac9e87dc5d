"""The offline CoTracker3 model: whole-video iterative refinement of point tracks.

State-dict keys and shapes match the official ``scaled_offline.pth`` checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from smite_ops.tracking.cotracker3.blocks import Mlp, UpdateFormer
from smite_ops.tracking.cotracker3.correlation import (
    NUM_LEVELS,
    PATCH_SIZE,
    correlate,
    feature_pyramid,
    query_support,
)
from smite_ops.tracking.cotracker3.embeddings import (
    MOTION_DIM,
    motion_encoding,
    resample_time_table,
    sincos_time_table,
)
from smite_ops.tracking.cotracker3.encoder import STRIDE, FeatureEncoder

MODEL_RESOLUTION = (384, 512)
"""``(H, W)`` the model was trained at; also the fixed normaliser of the motion features."""
CORR_FEATURES = 256
INPUT_DIM = 2 + NUM_LEVELS * CORR_FEATURES + MOTION_DIM
"""1110: visibility and confidence logits, correlation features, motion encoding."""
ENCODER_CHUNK = 16
"""Frames encoded per feature-encoder call (bounds activation memory; per-frame operation)."""
CORR_ELEMENT_BUDGET = 2**27
"""Most sampled patch / correlation values held at once per pyramid level (512 MB in float32)."""


class CoTrackerInputError(ValueError):
    """A video or query tensor the tracker cannot process."""


class TrackerOutput(NamedTuple):
    """Model outputs.

    Attributes:
        tracks: ``(B, T, N, 2)`` float, ``(x, y)`` in pixels of the model's input video.
        visibility: ``(B, T, N)`` float probabilities.
        confidence: ``(B, T, N)`` float probabilities.
    """

    tracks: torch.Tensor
    visibility: torch.Tensor
    confidence: torch.Tensor


@dataclass(frozen=True)
class RefinementState:
    """What the refinement iterations carry.

    Attributes:
        levels: 4 pyramid levels ``(B, T, 128, h_l, w_l)`` (see ``feature_pyramid``).
        supports: per level ``(B, N, 49, 128)`` query support patches.
        coords: ``(B, T, N, 2)`` track positions ``(x, y)`` in feature units (pixels / 4).
        vis, conf: ``(B, T, N)`` visibility / confidence logits.
    """

    levels: list[torch.Tensor]
    supports: list[torch.Tensor]
    coords: torch.Tensor
    vis: torch.Tensor
    conf: torch.Tensor

    def output(self) -> TrackerOutput:
        """Tracks in pixels and probabilities."""
        return TrackerOutput(self.coords * STRIDE, self.vis.sigmoid(), self.conf.sigmoid())


def _check_inputs(video: torch.Tensor, queries: torch.Tensor) -> None:
    if video.dim() != 5 or video.shape[2] != 3:
        raise CoTrackerInputError(f"video must be (B, T, 3, H, W), got {tuple(video.shape)}")
    b, t, _, h, w = video.shape
    if h % STRIDE or w % STRIDE or h < 32 or w < 32:
        raise CoTrackerInputError(f"frame size must be multiples of 4 and at least 32, got {h}x{w}")
    if queries.dim() != 3 or queries.shape[0] != b or queries.shape[2] != 3:
        raise CoTrackerInputError(f"queries must be ({b}, N, 3) rows (t, x, y), got {tuple(queries.shape)}")
    frames = queries[..., 0]
    if queries.shape[1] and (frames.min() < 0 or frames.max() >= t):
        raise CoTrackerInputError(f"query frames must lie in [0, {t - 1}]")


class CoTracker3Offline(nn.Module):
    """Offline CoTracker3 (the hub's ``cotracker3_offline`` configuration).

    Tracks are coupled through learned virtual tracks, so a point's result depends on the other
    points tracked with it. Every operation is per batch element, so a batch equals stacked
    single-sample calls.
    """

    def __init__(self, window_len: int = 60, model_resolution: tuple[int, int] = MODEL_RESOLUTION) -> None:
        super().__init__()
        self.model_resolution = model_resolution
        self.corr_element_budget = CORR_ELEMENT_BUDGET
        self.fnet = FeatureEncoder()
        self.corr_mlp = Mlp(PATCH_SIZE**4, 384, CORR_FEATURES, approximate="none")
        self.updateformer = UpdateFormer(INPUT_DIM)
        self.register_buffer("time_emb", sincos_time_table(window_len, INPUT_DIM), persistent=True)

    def encode(self, video: torch.Tensor) -> list[torch.Tensor]:
        """Feature pyramid of a video.

        Args:
            video: ``(B, T, 3, H, W)`` float RGB in ``[0, 255]``.

        Returns:
            4 levels ``(B, T, 128, H / 4 / 2^l, W / 4 / 2^l)`` (see ``feature_pyramid``).
        """
        b, t = video.shape[:2]
        frames = (2.0 * (video / 255.0) - 1.0).flatten(0, 1)
        features = torch.cat([self.fnet(chunk) for chunk in frames.split(ENCODER_CHUNK)])
        return feature_pyramid(features.view(b, t, *features.shape[1:]))

    def prepare(self, video: torch.Tensor, queries: torch.Tensor) -> RefinementState:
        """Encode the video, sample the query support patches and initialise the tracks.

        Args and shapes as for ``forward``; every frame starts at the query position with zero logits.
        """
        _check_inputs(video, queries)
        levels = self.encode(video)
        frames = queries[..., 0].long()
        centres = queries[..., 1:] / STRIDE
        supports = [query_support(level, frames, centres / 2**i) for i, level in enumerate(levels)]
        b, t, n = video.shape[0], video.shape[1], queries.shape[1]
        coords = centres[:, None].expand(b, t, n, 2)
        zeros = coords.new_zeros(b, t, n)
        return RefinementState(levels, supports, coords, zeros, zeros)

    def correlation_features(self, level: torch.Tensor, coords: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """``corr_mlp`` of one level's correlations, ``(B, T, N, 256)``; see ``correlate`` for inputs.

        Frames are processed in chunks so that the sampled 7x7 patches and the correlations held at
        once stay within ``self.corr_element_budget`` values (default ``CORR_ELEMENT_BUDGET``).
        """
        per_frame = coords.shape[0] * coords.shape[2] * PATCH_SIZE**2 * max(level.shape[2], PATCH_SIZE**2)
        frames = max(1, self.corr_element_budget // per_frame)
        return torch.cat(
            [
                self.corr_mlp(correlate(level_chunk, coords_chunk, support))
                for level_chunk, coords_chunk in zip(level.split(frames, 1), coords.split(frames, 1), strict=True)
            ],
            dim=1,
        )

    def transformer_input(self, state: RefinementState) -> torch.Tensor:
        """Assemble the update-transformer tokens of one iteration.

        Returns:
            ``(B, N, T, 1110)``: ``[vis, conf, corr (4 x 256), motion (84)]`` plus the time embedding.
        """
        coords = state.coords
        corr = torch.cat(
            [
                self.correlation_features(level, coords / 2**index, support)
                for index, (level, support) in enumerate(zip(state.levels, state.supports, strict=True))
            ],
            dim=-1,
        )
        normaliser = (self.model_resolution[1] / STRIDE, self.model_resolution[0] / STRIDE)
        motion = motion_encoding(coords, normaliser)
        tokens = torch.cat([state.vis[..., None], state.conf[..., None], corr, motion], dim=-1)
        return tokens.permute(0, 2, 1, 3) + resample_time_table(self.time_emb, coords.shape[1])

    def step(self, state: RefinementState) -> RefinementState:
        """One refinement iteration: add the update transformer's increments to the state."""
        delta = self.updateformer(self.transformer_input(state)).permute(0, 2, 1, 3)
        return replace(
            state,
            coords=state.coords + delta[..., :2],
            vis=state.vis + delta[..., 2],
            conf=state.conf + delta[..., 3],
        )

    def iterate(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 4) -> Iterator[TrackerOutput]:
        """Yield the outputs of every refinement iteration (see ``forward`` for the arguments)."""
        state = self.prepare(video, queries)
        for _ in range(iters):
            state = self.step(state)
            yield state.output()

    def forward(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 4) -> TrackerOutput:
        """Track query points through a whole video.

        Args:
            video: ``(B, T, 3, H, W)`` float RGB in ``[0, 255]``; ``H, W`` multiples of 4, >= 32.
            queries: ``(B, N, 3)`` float rows ``(t, x, y)``: frame index (truncated to an integer)
                and pixel position in ``video``.
            iters: refinement iterations (>= 1).

        Returns:
            The last iteration's ``TrackerOutput``.
        """
        if iters < 1:
            raise CoTrackerInputError(f"iters must be >= 1, got {iters}")
        *_, last = self.iterate(video, queries, iters)
        return last
