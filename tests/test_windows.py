"""Window and shard planning: the reference's examples and edge cases."""

from itertools import pairwise

import pytest

from pipeline.batch.windows import Window, group_shards, plan_windows


def spans(windows: list[Window]) -> list[tuple[int, int]]:
    return [(w.start, w.stop) for w in windows]


@pytest.mark.parametrize(
    ("frames", "window", "overlap", "expected"),
    [
        (40, 18, 0, [(0, 18), (18, 36), (22, 40)]),
        (40, 16, 8, [(0, 16), (8, 24), (16, 32), (24, 40)]),
        (1, 18, 0, [(0, 1)]),
        (10, 18, 0, [(0, 10)]),
        (18, 18, 0, [(0, 18)]),
        (36, 18, 0, [(0, 18), (18, 36)]),
        (19, 16, 8, [(0, 16), (3, 19)]),
    ],
)
def test_reference_examples_and_edges(frames: int, window: int, overlap: int, expected: list) -> None:
    assert spans(plan_windows(frames, window, overlap)) == expected


@pytest.mark.parametrize(("frames", "window", "overlap", "count"), [(288, 18, 0, 16), (288, 16, 8, 35)])
def test_window_counts_of_the_reference(frames: int, window: int, overlap: int, count: int) -> None:
    windows = plan_windows(frames, window, overlap)
    assert len(windows) == count and windows[-1] == Window(frames - window, frames)


@pytest.mark.parametrize("frames", [1, 5, 17, 18, 19, 40, 97, 288])
@pytest.mark.parametrize(("window", "overlap"), [(18, 0), (16, 8), (4, 3)])
def test_windows_cover_every_frame_with_full_length(frames: int, window: int, overlap: int) -> None:
    windows = plan_windows(frames, window, overlap)
    covered = {f for w in windows for f in range(w.start, w.stop)}
    assert covered == set(range(frames))
    assert all(w.length == min(window, frames) for w in windows)
    assert all(a.stop - b.start >= overlap for a, b in pairwise(windows))  # no gaps, at least `overlap`


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        plan_windows(0, 18, 0)
    with pytest.raises(ValueError, match="overlap < window"):
        plan_windows(10, 8, 8)


def test_shards_group_consecutive_windows() -> None:
    windows = plan_windows(40, 16, 8)
    assert group_shards(windows, 3) == [windows[:3], windows[3:]]
    assert group_shards(windows, 10) == [windows]
    with pytest.raises(ValueError):
        group_shards(windows, 0)
