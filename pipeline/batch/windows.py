"""Temporal windows and shards: pure, deterministic planning (METHOD.md §4.2, ARCHITECTURE.md §4 step 1)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Window:
    """Frames ``[start, stop)`` of a video that share one UNet clip (full-frame attention spans them)."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_windows(num_frames: int, window: int, overlap: int) -> list[Window]:
    """Cover ``num_frames`` frames with windows of ``window`` frames overlapping by ``overlap``.

    As in the reference: windows start at 0, each next one starts ``overlap`` frames before the previous
    end, and the last window is shifted back so that it is full length (which can enlarge its overlap).
    A video shorter than one window gives a single window covering it.

    Examples:
        ``plan_windows(40, 18, 0)`` -> [0,18) [18,36) [22,40);
        ``plan_windows(40, 16, 8)`` -> [0,16) [8,24) [16,32) [24,40).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 0 <= overlap < window:
        raise ValueError(f"need 0 <= overlap < window, got overlap={overlap}, window={window}")
    if num_frames <= window:
        return [Window(0, num_frames)]
    windows: list[Window] = []
    start = 0
    while start + window < num_frames:
        windows.append(Window(start, start + window))
        start += window - overlap
    windows.append(Window(num_frames - window, num_frames))
    return windows


def group_shards(windows: list[Window], windows_per_shard: int) -> list[list[Window]]:
    """Group consecutive windows into shards, the unit of work sent to one actor."""
    if windows_per_shard < 1:
        raise ValueError(f"windows_per_shard must be >= 1, got {windows_per_shard}")
    return [windows[i : i + windows_per_shard] for i in range(0, len(windows), windows_per_shard)]
