"""Metrics: hand-computed known answers and property tests (identical -> perfect, disjoint -> 0)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from smite_ops.metrics import (
    boundary_tolerance,
    davis_f,
    davis_j,
    gt_consistent_flicker,
    miou,
    temporal_flicker,
    temporal_flicker_excess,
)


def grid(*rows: str) -> np.ndarray:
    """A label map from rows of digits, e.g. grid("0011", "0011")."""
    return np.array([[int(ch) for ch in row] for row in rows], dtype=np.uint8)


def square(top: int, left: int, size: int = 6) -> np.ndarray:
    """A size x size map with a 2x2 square of label 1 at (top, left)."""
    m = np.zeros((size, size), dtype=np.uint8)
    m[top : top + 2, left : left + 2] = 1
    return m


# ---------------------------------------------------------------- mIoU


def test_miou_both_conventions_known_answer() -> None:
    gt = np.stack([grid("0011", "0011", "0000", "0000"), grid("1000", "0000", "0000", "0000")])
    pred = np.stack([grid("0011", "0010", "0000", "3300"), grid("0000", "0000", "0000", "0000")])
    result = miou(pred, gt, num_classes=4)
    # class 0: frame 0 |P∩G|=10, |P∪G|=13; frame 1 15/16.  class 1: 3/4, then an empty prediction -> 0.
    eps = 1e-7  # added to the union, as in the reference
    class0 = (100 * 10 / (13 + eps) + 100 * 15 / (16 + eps)) / 2
    class1 = (100 * 3 / (4 + eps) + 0.0) / 2
    # class 2: absent in both; class 3: predicted but never in the gt -> NaN per class, 0 in the reference mean
    np.testing.assert_allclose(result.per_class[:2], [class0, class1], rtol=1e-12)
    assert np.isnan(result.per_class[2:]).all()
    assert result.reference == pytest.approx((class0 + class1) / 4)
    assert result.present == pytest.approx((class0 + class1) / 2)


def test_miou_ignores_frames_where_the_class_is_absent_from_gt() -> None:
    gt = np.stack([grid("11", "00"), grid("00", "00")])
    pred = np.stack([grid("11", "00"), grid("11", "11")])  # class 1 predicted everywhere in frame 1
    result = miou(pred, gt, num_classes=2)
    assert result.per_class[1] == pytest.approx(100.0)
    # class 0: frame 0 perfect, frame 1 predicted nowhere -> 0
    assert result.per_class[0] == pytest.approx(50.0)
    assert result.reference == result.present == pytest.approx(75.0)


def test_miou_accepts_torch_tensors() -> None:
    gt = torch.tensor([[[0, 1], [1, 1]]])
    assert miou(gt, gt, 2).present == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (np.zeros((1, 4, 4), int), np.zeros((1, 4, 5), int), "shapes differ"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), r"\(K, H, W\)"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4), int), "integer"),
        (np.full((1, 4, 4), 3), np.zeros((1, 4, 4), int), r"pred labels must be in \[0, 3\)"),
        (np.zeros((0, 4, 4), int), np.zeros((0, 4, 4), int), "empty"),
    ],
)
def test_miou_rejects_bad_input(pred: np.ndarray, gt: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        miou(pred, gt, num_classes=3)


# ---------------------------------------------------------------- J


def test_davis_j_known_answer_with_both_empty_frame_and_void() -> None:
    gt = np.stack([grid("1100", "1100", "0000", "0055"), grid("1100", "1100", "2200", "2200")])
    gt[gt == 5] = 255  # void: never an object
    pred = np.stack([grid("0110", "0110", "0000", "0000"), grid("1100", "1100", "0000", "0000")])
    # frame 0: object 1 IoU 2/6, object 2 absent in both -> 1; frame 1: object 1 -> 1, object 2 missed -> 0
    assert davis_j(pred, gt) == pytest.approx(((1 / 3 + 1) / 2 + (1 + 0) / 2) / 2)


def test_davis_j_and_f_are_nan_without_objects() -> None:
    gt = np.zeros((2, 4, 4), dtype=np.uint8)
    assert math.isnan(davis_j(gt + 1, gt))
    assert math.isnan(davis_f(gt + 1, gt))


# ---------------------------------------------------------------- F


def test_boundary_tolerance_formula() -> None:
    assert boundary_tolerance(512, 512) == 6
    assert boundary_tolerance(480, 854) == 8  # ceil(0.008 * 979.65)
    assert boundary_tolerance(6, 6) == 1


@pytest.mark.parametrize(
    ("pred_left", "tolerance", "expected"),
    [
        (2, 0, 0.5),  # shifted by 1: 4 of the 8 boundary pixels coincide
        (2, 1, 1.0),  # ... and all lie within 1 px
        (3, 0, 3 / 8),  # shifted by 2
        (3, 1, 5 / 8),
        (3, None, 5 / 8),  # default tolerance at 6x6 is 1
    ],
)
def test_davis_f_known_answers(pred_left: int, tolerance: int | None, expected: float) -> None:
    gt = square(1, 1)[None]
    pred = square(1, pred_left)[None]
    assert davis_f(pred, gt, tolerance) == pytest.approx(expected)


def test_davis_f_dilates_with_a_disk_not_a_square() -> None:
    # diagonal shift by (1, 1): one boundary pixel each way is only diagonally adjacent, outside a radius-1 disk
    assert davis_f(square(2, 2)[None], square(1, 1)[None], tolerance=1) == pytest.approx(7 / 8)


@pytest.mark.parametrize(
    ("pred_second", "gt_second", "expected_second"),
    [
        (np.zeros((6, 6), np.uint8), np.zeros((6, 6), np.uint8), 1.0),  # both boundaries empty -> F=1
        (np.zeros((6, 6), np.uint8), square(3, 3), 0.0),  # no predicted boundary: P=1, R=0
        (square(3, 3), np.zeros((6, 6), np.uint8), 0.0),  # no gt boundary: P=0, R=1
        (square(3, 3), square(3, 3), 1.0),  # both present and equal
        (np.ones((6, 6), np.uint8), np.ones((6, 6), np.uint8), 1.0),  # full-frame object has no boundary
    ],
)
def test_davis_f_empty_boundary_conventions(
    pred_second: np.ndarray, gt_second: np.ndarray, expected_second: float
) -> None:
    # frame 0 is a perfect match (F=1) so that object 1 exists in the gt whatever frame 1 holds
    pred = np.stack([square(0, 0), pred_second])
    gt = np.stack([square(0, 0), gt_second])
    assert davis_f(pred, gt, tolerance=1) == pytest.approx((1.0 + expected_second) / 2)


def test_davis_f_rejects_negative_tolerance() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        davis_f(square(0, 0)[None], square(0, 0)[None], tolerance=-1)


# ---------------------------------------------------------------- flicker

PRED_3 = np.stack(
    [grid("0001", "0001", "0001", "0001"), grid("0011", "0011", "0011", "0011"), np.zeros((4, 4), np.uint8)]
)
GT_3 = np.stack([grid("0001", "0001", "0001", "0001")] * 3)
TRACKS = np.array(
    [  # (T=3, N=5, 2) pixel (x, y)
        [[3, 0], [2, 1], [0, 0], [1, 2], [2.4, 3.4]],
        [[3, 0], [2, 1], [0, 0], [4.6, 2], [2.6, 3.0]],
        [[3, 0], [2, 1], [0, 0], [1.4, 2.4], [3, 3]],
    ]
)
VISIBLE = np.array([[True, True, True, True, True], [True, True, False, True, True], [True] * 5])


def test_temporal_flicker_known_answer() -> None:
    # point 0: labels 1,1,0 (1 change); point 1: 0,1,0 (2); point 2: hidden in frame 1 (no step);
    # point 3: outside the frame in frame 1 (no step); point 4 at (2,3),(3,3),(3,3): 0,1,0 (2) -> 5 of 6 steps
    assert temporal_flicker(PRED_3, TRACKS, VISIBLE) == pytest.approx(5 / 6)
    # the static gt changes only for point 4 entering column 3: 1 of 6 steps
    assert temporal_flicker(GT_3, TRACKS, VISIBLE) == pytest.approx(1 / 6)
    assert temporal_flicker_excess(PRED_3, GT_3, torch.tensor(TRACKS), torch.tensor(VISIBLE)) == pytest.approx(4 / 6)


def test_temporal_flicker_nan_without_steps_and_validates_shapes() -> None:
    assert math.isnan(temporal_flicker(PRED_3, TRACKS, np.zeros((3, 5), bool)))
    with pytest.raises(ValueError, match="tracks_xy"):
        temporal_flicker(PRED_3, TRACKS[:2], VISIBLE[:2])
    with pytest.raises(ValueError, match="visible"):
        temporal_flicker(PRED_3, TRACKS, VISIBLE.astype(int))


@pytest.mark.parametrize(
    ("indices", "expected"),
    [
        (None, (4 + 8) / 32),  # pair 0-1: column 2 flips (4 px); pair 1-2: columns 2 and 3 (8 px)
        ([0, 1, 5], 4 / 16),  # only the first pair is consecutive
        ([0, 2, 3], 8 / 16),
        ([0, 2, 4], math.nan),  # no consecutive pair
    ],
)
def test_gt_consistent_flicker_known_answers(indices: list[int] | None, expected: float) -> None:
    value = gt_consistent_flicker(PRED_3, GT_3, indices)
    assert math.isnan(value) if math.isnan(expected) else value == pytest.approx(expected)


# ---------------------------------------------------------------- properties

label_maps = st.integers(1, 3).flatmap(
    lambda k: st.tuples(st.integers(2, 7), st.integers(2, 7)).flatmap(
        lambda hw: arrays(np.int64, (k, *hw), elements=st.integers(0, 4))
    )
)


@settings(max_examples=60, deadline=None)
@given(label_maps)
def test_identical_masks_are_perfect(gt: np.ndarray) -> None:
    assert miou(gt, gt, 5).present == pytest.approx(100.0)
    if (gt > 0).any():
        assert davis_j(gt, gt) == 1.0
        assert davis_f(gt, gt) == 1.0
    assert not gt_consistent_flicker(gt, gt) > 0  # 0, or NaN when no pixel is gt-stable across a frame pair


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, st.tuples(st.just(1), st.integers(2, 7), st.integers(2, 7)), elements=st.integers(0, 4)))
def test_disjoint_labels_score_zero(gt: np.ndarray) -> None:
    gt[0, 0, 0] = 0  # background and at least one object in the (single) frame, so every object has a boundary
    gt[0, -1, -1] = 1
    shifted = gt + 5  # the same regions under labels the gt never uses
    result = miou(shifted, gt, 10)
    assert result.reference == result.present == 0.0
    assert davis_j(shifted, gt) == 0.0
    assert davis_f(shifted, gt) == 0.0
