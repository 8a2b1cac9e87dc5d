"""The pure helpers of :mod:`smite_ops.segmentation` on hand-computed cases (issue 19, mutation).

Pixel range mapping, the antialiased ``align_corners=False`` bicubic resize, object boxes at their edge
cases (2 and 3 foreground pixels, a tiny frame before others, a box on the left edge) and scaled spans.
"""

from __future__ import annotations

import torch

from smite_ops.segmentation import object_boxes, resize, resize_scores, scaled_span, to_unit_range

torch.set_num_threads(1)


def test_to_unit_range_maps_0_and_255_to_the_ends() -> None:
    """0 -> -1, 255 -> 1, 51 -> -0.6, as float32, for uint8 and float input alike."""
    frames = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1)
    out = to_unit_range(frames)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor([-1.0, -0.6, 1.0]))
    torch.testing.assert_close(to_unit_range(frames.double()), out)


def column_pattern(values: torch.Tensor) -> torch.Tensor:
    """A ``(1, 1, 2, W)`` float32 image whose two rows are both ``values``."""
    return values.float().expand(1, 1, 2, values.numel()).clone()


def test_resize_is_antialiased_bicubic_without_aligned_corners() -> None:
    """48 -> 16 columns (factor 3); output column i is centred on input pixel 3 i + 1 (``align_corners=False``).

    A ramp keeps its value at the centres away from the borders (symmetric weights): 3 i + 1. Stripes with
    ones on pixels 0, 3, 6, ... are 0 at every centre: without antialiasing the result is all 0, with it the
    stripes average to 1/3.
    """
    interior = slice(2, 14)
    ramp = resize(column_pattern(torch.arange(48)), (2, 16))
    torch.testing.assert_close(ramp[0, 0, :, interior], (3 * torch.arange(16) + 1).float()[interior].expand(2, 12))
    stripes = resize(column_pattern(torch.arange(48) % 3 == 0), (2, 16))
    torch.testing.assert_close(stripes[0, 0, :, interior], torch.full((2, 12), 1 / 3))


def test_object_boxes_edge_cases() -> None:
    """Two foreground pixels: whole frame; three: their box. A tiny frame first does not end the list.
    A box on the left and top edges starts at 0 after expansion (clamped, not shifted)."""
    foreground = torch.zeros(4, 10, 20, dtype=torch.bool)
    foreground[0, 4, 4:6] = True  # two pixels: too small
    foreground[1, 4, 4:7] = True  # three pixels in a row: box rows [4, 5), columns [4, 7)
    foreground[2, 0:5, 0:10] = True  # on the top-left corner; expand 0.2: dy = 1, dx = 2
    foreground[3, 2:4, 3:5] = True  # 2 x 2: dy = dx = round(0.4) = 0
    assert object_boxes(foreground, expand=0.2) == [(0, 0, 10, 20), (4, 3, 5, 8), (0, 0, 6, 12), (2, 3, 4, 5)]


def test_scaled_span_keeps_at_least_one_cell() -> None:
    """``[10, 11)`` at scale 0.1 rounds to ``[1, 1)``: widened to one cell; wider spans just scale."""
    assert scaled_span(10, 11, 0.1) == (1, 2)
    assert scaled_span(10, 30, 0.2) == (2, 6)
    assert scaled_span(0, 80, 0.2) == (0, 16)


def test_resize_scores_is_bilinear_without_aligned_corners() -> None:
    """Columns (0, 1) to 4: samples at -0.25, 0.25, 0.75, 1.25 (clamped) give 0, 0.25, 0.75, 1; an int is a square."""
    scores = torch.tensor([[0.0, 1.0], [0.0, 1.0]])[None, None]
    torch.testing.assert_close(resize_scores(scores, 4)[0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]).expand(4, 4))
    torch.testing.assert_close(resize_scores(scores, (1, 4))[0, 0], torch.tensor([[0.0, 0.25, 0.75, 1.0]]))
