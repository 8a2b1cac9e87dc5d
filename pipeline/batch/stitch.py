"""Blend overlapping windows into per-frame scores, then labels at native resolution (ARCHITECTURE.md §4.4).

Windows are never merged "last window wins": every frame's scores are the weighted mean of the windows that
cover it, with weights that fall off linearly toward a window edge lying inside the video (frames at the
video's own start and end keep full weight). Where the windows agree the blend is exactly their common value,
and the weights change continuously across window borders, so no seam appears there. A frame's contributions
are summed in window order whatever order they arrived in, so the result is bit-identical across runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from pipeline.batch.windows import Window


def blend_weights(window: Window, num_frames: int) -> torch.Tensor:
    """Per-frame blending weights of ``window``, shape ``(window.length,)``, all in ``(0, 1]``.

    A triangular ramp ``min(i + 1, n - i) / ceil(n / 2)`` on each side that borders other frames; a side at
    the start or end of the video stays at 1.
    """
    n = window.length
    i = torch.arange(n, dtype=torch.float32)
    half = (n + 1) // 2
    rise = ((i + 1) / half).clamp(max=1.0) if window.start > 0 else torch.ones(n)
    fall = ((n - i) / half).clamp(max=1.0) if window.stop < num_frames else torch.ones(n)
    return torch.minimum(rise, fall)


class ScoreStitcher:
    """Accumulates window scores and releases each frame, in order, once every window covering it arrived.

    Memory holds only frames still waiting for a window, so it is bounded by the shards in flight, not by the
    video length. Windows may be added in any order.

    Args:
        windows: every window that covers a frame of ``frames``.
        num_frames: frames of the whole video (the blending weights depend on where it ends).
        frames: the frames to release (default: the whole video); scores of other frames are ignored.
    """

    def __init__(self, windows: list[Window], num_frames: int, frames: range | None = None) -> None:
        self.num_frames = num_frames
        self.frames = frames if frames is not None else range(num_frames)
        self._windows = {(w.start, w.stop) for w in windows}
        self._pending = torch.zeros(num_frames, dtype=torch.int32)
        for w in windows:
            self._pending[w.start : w.stop] += 1
        if bool((self._pending[self.frames.start : self.frames.stop] == 0).any()):
            raise ValueError(f"the windows do not cover every frame of [{self.frames.start}, {self.frames.stop})")
        self._parts: dict[int, list[tuple[int, torch.Tensor, float]]] = {}
        self._next = self.frames.start

    @property
    def next_frame(self) -> int:
        """The first frame not yet released (``frames.stop`` once all are)."""
        return self._next

    def add(self, window: Window, scores: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Add one window's scores ``(window.length, P, h, w)``; yield ``(frame_index, (P, h, w) float32)``
        for every frame that became complete, in increasing frame order."""
        if (window.start, window.stop) not in self._windows:
            raise ValueError(f"window [{window.start}, {window.stop}) is not part of the plan or was added twice")
        self._windows.discard((window.start, window.stop))
        if scores.shape[0] != window.length:
            raise ValueError(f"expected {window.length} frames of scores, got {scores.shape[0]}")
        weights = blend_weights(window, self.num_frames)
        for frame in range(max(window.start, self.frames.start), min(window.stop, self.frames.stop)):
            offset = frame - window.start
            part = (window.start, scores[offset].float() * weights[offset], float(weights[offset]))
            self._parts.setdefault(frame, []).append(part)
            self._pending[frame] -= 1
        while self._next < self.frames.stop and self._pending[self._next] == 0:
            frame = self._next
            parts = sorted(self._parts.pop(frame), key=lambda item: item[0])
            total = parts[0][1]
            for _, weighted, _ in parts[1:]:
                total = total + weighted
            yield frame, total / sum(weight for _, _, weight in parts)
            self._next += 1


def stitch_range(
    window_scores: Iterable[tuple[Window, torch.Tensor]], num_frames: int, start: int, stop: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """Blend frames ``[start, stop)`` of a video from window scores, exactly as :class:`ScoreStitcher` does.

    Args:
        window_scores: ``(window, (window.length, P, h, w) scores)`` pairs that include every window covering a
            frame of the range; windows outside it are skipped.
        num_frames: frames of the whole video.

    Yields:
        ``(frame_index, (P, h, w) float32)`` in increasing frame order.
    """
    pairs = [(window, scores) for window, scores in window_scores if window.start < stop and window.stop > start]
    stitcher = ScoreStitcher([window for window, _ in pairs], num_frames, range(start, stop))
    for window, scores in pairs:
        yield from stitcher.add(window, scores)


def native_labels(scores: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize class scores ``(..., P, h, w)`` bilinearly to ``height x width`` and take the argmax.

    Returns:
        ``(..., height, width)`` int64 labels.
    """
    lead = scores.shape[:-3]
    flat = scores.reshape(-1, *scores.shape[-3:]).float()
    resized = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return resized.argmax(dim=1).reshape(*lead, height, width)


def native_probabilities(scores: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Softmax over classes of one frame's scores ``(P, h, w)``, resized bilinearly to ``height x width``.

    Returns:
        ``(P, height, width)`` float32 class probabilities (each pixel sums to 1); their argmax is the label map.
    """
    probabilities = torch.softmax(scores.float(), dim=0)[None]
    if probabilities.shape[-2:] != (height, width):
        probabilities = F.interpolate(probabilities, size=(height, width), mode="bilinear", align_corners=False)
    return probabilities[0]
