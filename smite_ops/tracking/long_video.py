"""Track a long video once, in overlapping temporal chunks, into tracks that every window reuses.

Memory is bounded by one chunk: frames are pulled chunk by chunk through ``read_chunk(start, stop)`` and
never held for the whole video. A point is tracked by whichever chunk *owns* its query frame (chunks own
consecutive frame ranges split at the middle of each overlap). A point whose lifetime runs past its
chunk is **continued** with its identity kept:

- forwards, in chunk order: in chunk ``k + 1`` the point is re-queried at its position in the last frame
  of the overlap with chunk ``k`` in which it is visible, and its track after that frame is taken from
  chunk ``k + 1``;
- backwards, in reverse chunk order (a second pass that reads only the chunks it needs): in chunk
  ``k - 1`` it is re-queried at the first visible frame of the overlap, and its track before that frame
  is taken from chunk ``k - 1``.

A point that is invisible throughout an overlap is not continued past it (it stays invisible, its
position held), so the overlap should exceed the occlusions that the tracker is expected to bridge.

Each point lives ``L = 2 * horizon + 1`` frames around its query frame (shifted inwards at the video's
ends; the whole video when ``horizon`` is None). Only the lifetime is tracked and stored
(``VideoTracks``: ``(N, L)`` per point instead of a dense ``(T, N)``), so with points seeded at a fixed
rate both compute and memory grow linearly with the video. ``slice_tracks`` cuts the ``Tracks`` of one
window out of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from smite_ops.tracking.base import PointTracker, Tracks
from smite_ops.tracking.queries import query_frame_indices

_NO_POINTS = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))

ReadChunk = Callable[[int, int], torch.Tensor]
"""``read_chunk(start, stop)`` -> frames ``[start, stop)`` as a ``(stop - start, 3, H, W)`` uint8 tensor."""


@dataclass(frozen=True)
class ChunkConfig:
    """How a long video is cut for tracking.

    Attributes:
        chunk_frames: frames per tracker call (bounds memory; CoTracker3 offline handles 60 at once).
        overlap_frames: frames shared by consecutive chunks, where tracks are handed over.
        horizon: a point is tracked up to this many frames before and after its query frame
            (None: through the whole video). 16 covers a 15-frame voting window around any frame
            within 8 frames of a query frame (``queries.query_frames_for(T, every=16)``).
    """

    chunk_frames: int = 48
    overlap_frames: int = 8
    horizon: int | None = 16

    def __post_init__(self) -> None:
        if not 1 <= self.overlap_frames < self.chunk_frames:
            raise ValueError(
                f"overlap_frames must be in [1, chunk_frames), got {self.overlap_frames} with {self.chunk_frames}"
            )
        if self.horizon is not None and self.horizon < 0:
            raise ValueError(f"horizon must be >= 0 frames or None, got {self.horizon}")


@dataclass(frozen=True)
class VideoTracks:
    """Point tracks of a whole video, each point stored over its lifetime only.

    Attributes:
        num_frames: ``T``, frames in the video.
        band_start: ``(N,)`` int64, first frame of each point's lifetime ``[band_start, band_start + L)``.
        points: ``(N, L, 2)`` float32 pixel ``(x, y)`` over the lifetime.
        visible: ``(N, L)`` bool over the lifetime; a point is invisible outside its lifetime.
        query_frames: ``(N,)`` int64, the frame each point was queried in.
        point_frames: tracker work spent on these tracks: points x frames summed over every tracker call.
    """

    num_frames: int
    band_start: torch.Tensor
    points: torch.Tensor
    visible: torch.Tensor
    query_frames: torch.Tensor
    point_frames: int = 0

    def __post_init__(self) -> None:
        n, length, two = self.points.shape
        if two != 2 or self.visible.shape != (n, length) or {self.band_start.shape, self.query_frames.shape} != {(n,)}:
            raise ValueError(
                f"inconsistent video track shapes: points {tuple(self.points.shape)}, visible "
                f"{tuple(self.visible.shape)}, band_start {tuple(self.band_start.shape)}, "
                f"query_frames {tuple(self.query_frames.shape)}"
            )

    @property
    def num_points(self) -> int:
        return self.points.shape[0]


def plan_chunks(num_frames: int, chunk_frames: int, overlap_frames: int) -> list[tuple[int, int]]:
    """Overlapping ``[start, stop)`` chunks covering ``num_frames`` frames.

    Chunks start every ``chunk_frames - overlap_frames`` frames; the last one is shifted back to end at
    the video's end (a larger overlap) so that every chunk is full length; a video no longer than one
    chunk is one chunk.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if num_frames <= chunk_frames:
        return [(0, num_frames)]
    last = num_frames - chunk_frames
    starts = [*range(0, last, chunk_frames - overlap_frames), last]
    return [(start, start + chunk_frames) for start in starts]


def track_long_video(
    tracker: PointTracker,
    read_chunk: ReadChunk,
    num_frames: int,
    queries: torch.Tensor,
    config: ChunkConfig | None = None,
) -> VideoTracks:
    """Track ``queries`` through a video of ``num_frames`` frames, one chunk in memory at a time.

    Args:
        tracker: any ``PointTracker``; it sees chunks ``(t, 3, H, W)`` uint8 with ``t <= chunk_frames``.
        read_chunk: returns frames ``[start, stop)`` as ``(stop - start, 3, H, W)`` uint8.
        num_frames: frames in the video.
        queries: ``(N, 3)`` float rows ``(t, x, y)`` in video frame indices and pixels.
        config: chunking and lifetime; defaults to ``ChunkConfig()``.

    Returns:
        ``VideoTracks`` of the ``N`` points, in query order.
    """
    config = config or ChunkConfig()
    query_frames = query_frame_indices(queries, num_frames)
    chunks = plan_chunks(num_frames, config.chunk_frames, config.overlap_frames)
    state = _TrackState(num_frames, query_frames, config.horizon)
    # chunk k owns the query frames from the middle of its overlap with chunk k - 1 on
    boundaries = torch.tensor([(start + chunks[k - 1][1]) // 2 for k, (start, _) in enumerate(chunks) if k])
    owner = torch.searchsorted(boundaries, query_frames, right=True)
    query_xy = queries[:, 1:].to(torch.float32)
    work = 0  # tracker point-frames
    for k, (start, stop) in enumerate(chunks):
        owned = torch.nonzero(owner == k).flatten()
        carried, carried_at = state.forward_handover(start, chunks[k - 1][1]) if k else _NO_POINTS
        at = torch.cat([query_frames[owned], carried_at])
        xy = torch.cat([query_xy[owned], state.position(carried, carried_at)])
        tracks = _run(tracker, read_chunk, start, stop, at, xy)
        if tracks is None:
            continue
        work += (stop - start) * at.numel()
        begin = torch.maximum(state.band_start[owned], torch.tensor(start))
        state.write(owned, begin, state.band_end(owned, stop), start, tracks, columns=slice(0, owned.numel()))
        end = state.band_end(carried, stop)
        state.write(carried, carried_at + 1, end, start, tracks, columns=slice(owned.numel(), None))
    for k in range(len(chunks) - 2, -1, -1):
        start, stop = chunks[k]
        carried, carried_at = state.backward_handover(chunks[k + 1][0], stop)
        tracks = _run(tracker, read_chunk, start, stop, carried_at, state.position(carried, carried_at))
        if tracks is not None:
            work += (stop - start) * carried_at.numel()
            begin = torch.maximum(state.band_start[carried], torch.tensor(start))
            state.write(carried, begin, carried_at, start, tracks, columns=slice(None))
    return replace(state.finish(query_frames), point_frames=work)


def slice_tracks(tracks: VideoTracks, start: int, stop: int) -> Tracks:
    """The tracks of window ``[start, stop)``: its points visible in at least one of its frames.

    Returns:
        ``Tracks`` with ``stop - start`` frames, window-relative: ``points[i]`` is frame ``start + i``
        and ``query_frames`` are ``query frame - start`` (may lie outside the window). Outside a
        point's lifetime its position is held at the nearest lifetime frame and it is invisible.
    """
    if not 0 <= start < stop <= tracks.num_frames:
        raise ValueError(f"window [{start}, {stop}) is not a non-empty range inside [0, {tracks.num_frames})")
    length = tracks.points.shape[1]
    overlaps = (tracks.band_start < stop) & (tracks.band_start + length > start)
    candidates = torch.nonzero(overlaps).flatten()
    window = _gather(tracks, candidates, start, stop)
    seen = window.visible.any(dim=0)
    return Tracks(window.points[:, seen], window.visible[:, seen], window.query_frames[seen])


def dense_tracks(tracks: VideoTracks) -> Tracks:
    """All ``N`` points over all ``T`` frames as one dense ``Tracks`` (``T * N`` memory; short videos only)."""
    return _gather(tracks, torch.arange(tracks.num_points), 0, tracks.num_frames)


def _gather(tracks: VideoTracks, index: torch.Tensor, start: int, stop: int) -> Tracks:
    """Points ``index`` over frames ``[start, stop)``, lifetime edges held, invisible outside the lifetime."""
    offset, inside = _lifetime_offsets(tracks.band_start[index], tracks.points.shape[1], start, stop)
    points = tracks.points[index[:, None], offset].transpose(0, 1).contiguous()
    visible = (tracks.visible[index[:, None], offset] & inside).transpose(0, 1).contiguous()
    return Tracks(points, visible, tracks.query_frames[index] - start)


def _lifetime_offsets(
    band_start: torch.Tensor, length: int, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, stop - start)`` lifetime index of absolute frames ``[start, stop)`` (clamped) and whether inside."""
    offset = torch.arange(start, stop)[None, :] - band_start[:, None]
    return offset.clamp(0, length - 1), (offset >= 0) & (offset < length)


def _run(
    tracker: PointTracker, read_chunk: ReadChunk, start: int, stop: int, at: torch.Tensor, xy: torch.Tensor
) -> Tracks | None:
    """Track points queried at absolute frames ``at`` (M,) and positions ``xy`` (M, 2) in ``[start, stop)``."""
    if at.numel() == 0:
        return None
    frames = read_chunk(start, stop)
    if frames.ndim != 4 or frames.shape[0] != stop - start or frames.shape[1] != 3:
        raise ValueError(
            f"read_chunk({start}, {stop}) returned shape {tuple(frames.shape)}, expected ({stop - start}, 3, H, W)"
        )
    queries = torch.cat([(at - start).to(torch.float32)[:, None], xy], dim=1)
    return tracker.track(frames, queries)


class _TrackState:
    """Lifetime tracks under construction, and how far each point's track has been filled."""

    def __init__(self, num_frames: int, query_frames: torch.Tensor, horizon: int | None) -> None:
        self.length = num_frames if horizon is None else min(2 * horizon + 1, num_frames)
        self.band_start = (query_frames - (horizon or 0)).clamp(0, num_frames - self.length)
        n = query_frames.numel()
        self.num_frames = num_frames
        self.points = torch.full((n, self.length, 2), float("nan"))
        self.visible = torch.zeros((n, self.length), dtype=torch.bool)
        self.filled_from = torch.full((n,), num_frames)  # [filled_from, filled_to): frames tracked so far
        self.filled_to = torch.full((n,), -1)

    def band_end(self, index: torch.Tensor, stop: int) -> torch.Tensor:
        """``min(stop, lifetime end)`` of points ``index``."""
        return torch.clamp(self.band_start[index] + self.length, max=stop)

    def position(self, index: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """``(M, 2)`` positions of points ``index`` at absolute frames ``frame``."""
        return self.points[index, frame - self.band_start[index]]

    def forward_handover(self, start: int, previous_stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Points to continue into a chunk at ``start`` and their re-query frames (last visible overlap frame)."""
        band_end = self.band_start + self.length
        index = torch.nonzero((self.filled_to == previous_stop) & (band_end > previous_stop)).flatten()
        seen = self._visible_in(index, start, previous_stop)
        found = seen.any(dim=1)
        last = seen.shape[1] - 1 - seen.flip(1).to(torch.uint8).argmax(dim=1)
        return index[found], start + last[found]

    def backward_handover(self, next_start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Points to continue back into a chunk ending at ``stop``, re-queried at their first visible overlap frame."""
        index = torch.nonzero((self.filled_from == next_start) & (self.band_start < next_start)).flatten()
        seen = self._visible_in(index, next_start, stop)
        found = seen.any(dim=1)
        return index[found], next_start + seen.to(torch.uint8).argmax(dim=1)[found]

    def _visible_in(self, index: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """``(M, stop - start)`` visibility of points ``index`` in absolute frames ``[start, stop)``."""
        offset, inside = _lifetime_offsets(self.band_start[index], self.length, start, stop)
        return self.visible[index[:, None], offset] & inside

    def write(
        self,
        index: torch.Tensor,
        begin: torch.Tensor,
        end: torch.Tensor,
        chunk_start: int,
        tracks: Tracks,
        columns: slice,
    ) -> None:
        """Store frames ``[begin, end)`` (absolute, per point) of ``tracks[:, columns]`` for points ``index``."""
        frames = torch.arange(chunk_start, chunk_start + tracks.num_frames)
        take = (frames[None, :] >= begin[:, None]) & (frames[None, :] < end[:, None])
        point, frame = torch.nonzero(take, as_tuple=True)
        column = torch.arange(tracks.num_points)[columns][point]
        rows = index[point]
        offset = frames[frame] - self.band_start[rows]
        self.points[rows, offset] = tracks.points[frame, column].to(torch.float32)
        self.visible[rows, offset] = tracks.visible[frame, column]
        self.filled_from[index] = torch.minimum(self.filled_from[index], begin)
        self.filled_to[index] = torch.maximum(self.filled_to[index], end)

    def finish(self, query_frames: torch.Tensor) -> VideoTracks:
        """Hold each point's position over the frames it was not tracked in, and freeze the result."""
        tracked = ~self.points[..., 0].isnan()
        steps = torch.arange(self.length).expand_as(tracked)
        latest = torch.where(tracked, steps, -1).cummax(dim=1).values
        source = torch.where(latest < 0, tracked.to(torch.uint8).argmax(dim=1, keepdim=True), latest)
        points = self.points.gather(1, source[..., None].expand(-1, -1, 2))
        return VideoTracks(self.num_frames, self.band_start, points, self.visible, query_frames)
