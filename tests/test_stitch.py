"""Stitching overlapping windows: agreement is preserved exactly and window borders leave no seams."""

import pytest
import torch

from pipeline.batch.stitch import ScoreStitcher, blend_weights, native_labels
from pipeline.batch.windows import Window, plan_windows


def _video_scores(num_frames: int, parts: int = 4, size: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(num_frames, parts, size, size, generator=generator)


def _stitch(windows: list[Window], num_frames: int, scores_for, order=None) -> torch.Tensor:
    stitcher = ScoreStitcher(windows, num_frames)
    out: dict[int, torch.Tensor] = {}
    for window in order or windows:
        for frame, blended in stitcher.add(window, scores_for(window)):
            assert frame not in out
            out[frame] = blended
    assert sorted(out) == list(range(num_frames))
    return torch.stack([out[f] for f in range(num_frames)])


def test_weights_ramp_only_on_inner_edges() -> None:
    assert torch.equal(blend_weights(Window(0, 4), 4), torch.ones(4))
    assert blend_weights(Window(0, 4), 10).tolist() == [1.0, 1.0, 1.0, 0.5]
    assert blend_weights(Window(6, 10), 10).tolist() == [0.5, 1.0, 1.0, 1.0]
    assert blend_weights(Window(3, 8), 10).tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])


@pytest.mark.parametrize(("frames", "window", "overlap"), [(40, 16, 8), (40, 18, 0), (23, 8, 5)])
def test_windows_that_agree_give_the_single_window_result(frames: int, window: int, overlap: int) -> None:
    truth = _video_scores(frames)
    windows = plan_windows(frames, window, overlap)
    stitched = _stitch(windows, frames, lambda w: truth[w.start : w.stop], order=list(reversed(windows)))
    torch.testing.assert_close(stitched, truth)
    single = _stitch([Window(0, frames)], frames, lambda w: truth)
    assert torch.equal(native_labels(stitched, 12, 12), native_labels(single, 12, 12))


def test_no_seam_at_window_borders() -> None:
    # Each window sees the same smooth signal plus its own constant offset; a hard cut would jump by the
    # offset difference at the border, the blend moves there in small steps.
    frames, truth = 40, torch.linspace(0, 1, 40)[:, None, None, None].expand(40, 1, 1, 1)
    windows = plan_windows(frames, 16, 8)
    offsets = {w.start: 0.2 * k for k, w in enumerate(windows)}
    stitched = _stitch(windows, frames, lambda w: truth[w.start : w.stop] + offsets[w.start]).flatten()
    steps = stitched.diff().abs()
    assert steps.max() < 0.2 / 2  # far below the 0.2 jump of "last window wins"


def test_frames_are_released_as_soon_as_complete() -> None:
    windows = plan_windows(24, 8, 4)
    stitcher = ScoreStitcher(windows, 24)
    first = list(stitcher.add(windows[0], torch.zeros(8, 2, 3, 3)))
    assert [frame for frame, _ in first] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="added twice"):
        list(stitcher.add(windows[0], torch.zeros(8, 2, 3, 3)))


def test_native_labels_shape_and_argmax() -> None:
    scores = torch.zeros(2, 3, 4, 4)
    scores[:, 2] = 1.0
    labels = native_labels(scores, 9, 7)
    assert labels.shape == (2, 9, 7) and labels.dtype == torch.int64 and bool((labels == 2).all())
