"""Segmentation quality metrics on integer label maps: mIoU (METHOD.md §8), DAVIS J and F, and temporal flicker.

Label maps are integer arrays ``(K, H, W)`` (``K`` frames); numpy arrays and CPU torch tensors are both accepted.
Every function compares frame ``k`` of the prediction with frame ``k`` of the ground truth and loops at most over
frames and classes; pixel work is vectorised.

The reference implementation has no temporal-consistency metric; the flicker measures below are this project's
own (see :func:`temporal_flicker` and :func:`gt_consistent_flicker`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike

IOU_EPS = 1e-7
"""Added to the union in the reference mIoU (METHOD.md §8)."""

VOID_LABEL = 255
"""DAVIS "void" label: never an object for J and F."""


@dataclass(frozen=True)
class MiouResult:
    """mIoU of one video under both conventions, in percent.

    Attributes:
        reference: mean over all classes, a class never present in the ground truth counting 0 (the number the
            reference reports as mIoU, METHOD.md §8).
        present: mean over the classes present in the ground truth of at least one frame.
        per_class: ``(P,)`` float64, per-class IoU in percent (mean over the frames where the class is present in
            the ground truth); NaN for classes never present.
    """

    reference: float
    present: float
    per_class: np.ndarray


def _label_pair(pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction / ground-truth pair of integer label maps ``(K, H, W)`` with ``K, H, W > 0``."""
    p, g = np.asarray(pred), np.asarray(gt)
    for name, a in (("pred", p), ("gt", g)):
        if a.ndim != 3:
            raise ValueError(f"{name} must be (K, H, W) label maps, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
        if 0 in a.shape:
            raise ValueError(f"{name} is empty: shape {a.shape}")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    return p, g


def _overlaps(pred: np.ndarray, gt: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame intersection, union and ground-truth pixel counts, each ``(K, len(classes))`` int64."""
    inter = np.empty((pred.shape[0], len(classes)), dtype=np.int64)
    union, gt_area = np.empty_like(inter), np.empty_like(inter)
    for i, c in enumerate(classes):
        p, g = pred == c, gt == c
        inter[:, i] = np.count_nonzero(p & g, axis=(1, 2))
        union[:, i] = np.count_nonzero(p | g, axis=(1, 2))
        gt_area[:, i] = np.count_nonzero(g, axis=(1, 2))
    return inter, union, gt_area


def _objects(gt: np.ndarray) -> list[int]:
    """DAVIS object ids: labels present anywhere in ``gt`` other than 0 (background) and 255 (void)."""
    return [int(v) for v in np.unique(gt) if v not in (0, VOID_LABEL)]


def miou(pred: ArrayLike, gt: ArrayLike, num_classes: int) -> MiouResult:
    """Mean IoU over classes, background included (METHOD.md §8), under both conventions.

    For each class ``c`` and each frame where ``c`` is present in ``gt``:
    ``IoU = 100 * |pred==c & gt==c| / (|pred==c | gt==c| + 1e-7)``; the class score is the mean over those frames.
    Frames where ``c`` is absent from ``gt`` are ignored for ``c`` (even if ``c`` is predicted there).

    Args:
        pred: ``(K, H, W)`` integer predicted labels in ``[0, num_classes)``.
        gt: ``(K, H, W)`` integer ground-truth labels in ``[0, num_classes)``.
        num_classes: ``P``, number of classes including background.

    Returns:
        The reference (absent classes count 0) and present-only means, in percent, and per-class IoU.
    """
    p, g = _label_pair(pred, gt)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, a in (("pred", p), ("gt", g)):
        low, high = int(a.min()), int(a.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"{name} labels must be in [0, {num_classes}), found range [{low}, {high}]")
    inter, union, gt_area = _overlaps(p, g, range(num_classes))
    present = gt_area > 0
    iou = 100.0 * inter / (union + IOU_EPS)
    frames = present.sum(axis=0)
    per_class = np.where(frames > 0, np.where(present, iou, 0.0).sum(axis=0) / np.maximum(frames, 1), np.nan)
    return MiouResult(
        reference=float(np.nan_to_num(per_class, nan=0.0).mean()),
        present=float(np.nanmean(per_class)),
        per_class=per_class,
    )


def davis_j(pred: ArrayLike, gt: ArrayLike) -> float:
    """DAVIS region similarity J (Jaccard index) in ``[0, 1]``, background excluded.

    Objects are the labels present anywhere in ``gt`` except 0 and 255. For each frame and object, J is the IoU of
    the two binary masks, 1.0 when both are empty; J is averaged over objects per frame, then over frames.
    Pixels labelled 255 are not treated specially otherwise.

    Args:
        pred: ``(K, H, W)`` integer predicted labels.
        gt: ``(K, H, W)`` integer ground-truth labels.

    Returns:
        J, or NaN when ``gt`` has no object.
    """
    p, g = _label_pair(pred, gt)
    objects = _objects(g)
    if not objects:
        return math.nan
    inter, union, _ = _overlaps(p, g, objects)
    j = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(j.mean(axis=1).mean())


def boundary_tolerance(height: int, width: int) -> int:
    """DAVIS boundary tolerance in pixels: ``ceil(0.008 * image diagonal)`` (6 at 512x512)."""
    return math.ceil(0.008 * math.hypot(height, width))


def _boundaries(masks: np.ndarray) -> np.ndarray:
    """1-px boundaries of binary masks ``(K, H, W)`` bool: a pixel that differs from its right, lower or
    lower-right neighbour (neighbours outside the image are ignored, as in DAVIS ``seg2bmap``)."""
    b = np.zeros_like(masks)
    b[:, :, :-1] |= masks[:, :, :-1] != masks[:, :, 1:]
    b[:, :-1, :] |= masks[:, :-1, :] != masks[:, 1:, :]
    b[:, :-1, :-1] |= masks[:, :-1, :-1] != masks[:, 1:, 1:]
    return b


def _dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    """Dilate binary masks ``(K, H, W)`` bool with a disk ``x² + y² <= radius²``."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = (xx**2 + yy**2 <= radius**2).astype(np.uint8)
    return np.stack([cv2.dilate(m.view(np.uint8), disk).astype(bool) for m in masks])


def _boundary_f(pred_b: np.ndarray, gt_b: np.ndarray, radius: int) -> np.ndarray:
    """Per-frame boundary F-measure ``(K,)`` of boundary maps ``(K, H, W)`` with the DAVIS conventions."""
    n_pred = np.count_nonzero(pred_b, axis=(1, 2))
    n_gt = np.count_nonzero(gt_b, axis=(1, 2))
    pred_hits = np.count_nonzero(pred_b & _dilate(gt_b, radius), axis=(1, 2))
    gt_hits = np.count_nonzero(gt_b & _dilate(pred_b, radius), axis=(1, 2))
    has_pred, has_gt = n_pred > 0, n_gt > 0
    # DAVIS conventions: no predicted boundary -> P=1; no gt boundary -> R=1; only one of them empty -> the
    # other ratio is 0 (so F=0); both empty -> P=R=1 (F=1).
    precision = np.where(has_pred, np.where(has_gt, pred_hits / np.maximum(n_pred, 1), 0.0), 1.0)
    recall = np.where(has_gt, np.where(has_pred, gt_hits / np.maximum(n_gt, 1), 0.0), 1.0)
    total = precision + recall
    return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1.0), 0.0)


def davis_f(pred: ArrayLike, gt: ArrayLike, tolerance: int | None = None) -> float:
    """DAVIS contour accuracy F (boundary F-measure) in ``[0, 1]``, background excluded.

    Per frame and object (as in :func:`davis_j`): 1-px boundary maps of both binary masks (see ``_boundaries``),
    each dilated with a disk of radius ``tolerance``; precision = predicted boundary pixels inside the dilated gt
    boundary / predicted boundary pixels, recall symmetric, ``F = 2PR / (P + R)`` (0 when ``P + R = 0``).
    Conventions: no predicted but some gt boundary -> P=1, R=0; the reverse -> P=0, R=1; both empty -> F=1.
    F is averaged over objects per frame, then over frames.

    Args:
        pred: ``(K, H, W)`` integer predicted labels.
        gt: ``(K, H, W)`` integer ground-truth labels.
        tolerance: dilation radius in pixels; default :func:`boundary_tolerance` of the frame size.

    Returns:
        F, or NaN when ``gt`` has no object.
    """
    p, g = _label_pair(pred, gt)
    radius = boundary_tolerance(*g.shape[1:]) if tolerance is None else tolerance
    if radius < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {radius}")
    objects = _objects(g)
    if not objects:
        return math.nan
    f = np.stack([_boundary_f(_boundaries(p == o), _boundaries(g == o), radius) for o in objects], axis=1)
    return float(f.mean(axis=1).mean())


def _labels_along_tracks(labels: ArrayLike, tracks_xy: ArrayLike, visible: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Sample labels ``(T, H, W)`` at the nearest pixel of each track point.

    Returns the sampled labels ``(T, N)`` and a ``(T, N)`` bool mask of points that are visible and inside the
    frame (pixel centres at integer coordinates).
    """
    lab, xy, vis = np.asarray(labels), np.asarray(tracks_xy, dtype=np.float64), np.asarray(visible)
    if lab.ndim != 3 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be (T, H, W) integer label maps, got shape {lab.shape} dtype {lab.dtype}")
    t, h, w = lab.shape
    if xy.ndim != 3 or xy.shape[0] != t or xy.shape[2] != 2:
        raise ValueError(f"tracks_xy must be (T, N, 2) with T={t}, got shape {xy.shape}")
    if vis.shape != xy.shape[:2] or vis.dtype != bool:
        raise ValueError(f"visible must be bool of shape {xy.shape[:2]}, got {vis.dtype} {vis.shape}")
    with np.errstate(invalid="ignore"):
        col, row = np.rint(xy[..., 0]), np.rint(xy[..., 1])
        valid = vis & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    col, row = np.where(valid, col, 0).astype(np.int64), np.where(valid, row, 0).astype(np.int64)
    sampled = lab[np.arange(t)[:, None], row, col]
    return sampled, valid


def temporal_flicker(labels: ArrayLike, tracks_xy: ArrayLike, visible: ArrayLike) -> float:
    """Label flicker along point tracks: the fraction of tracked point-steps whose label changes. Lower is better.

    A point-step is a point ``n`` and a frame pair ``(t, t+1)`` where the point is visible and inside the frame in
    both frames; the label is read at the nearest pixel. It changes when ``labels[t]`` and ``labels[t+1]`` differ
    there. A point that truly crosses a part boundary also counts, so even the ground truth scores above 0 on
    articulated objects; compare videos with :func:`temporal_flicker_excess`.

    Args:
        labels: ``(T, H, W)`` integer labels of ``T`` consecutive frames.
        tracks_xy: ``(T, N, 2)`` float pixel positions ``(x, y)`` of ``N`` tracked points.
        visible: ``(T, N)`` bool visibility.

    Returns:
        Flicker in ``[0, 1]``, or NaN when there is no tracked point-step.
    """
    sampled, valid = _labels_along_tracks(labels, tracks_xy, visible)
    steps = valid[:-1] & valid[1:]
    n_steps = np.count_nonzero(steps)
    if n_steps == 0:
        return math.nan
    return np.count_nonzero(steps & (sampled[:-1] != sampled[1:])) / n_steps


def temporal_flicker_excess(pred: ArrayLike, gt: ArrayLike, tracks_xy: ArrayLike, visible: ArrayLike) -> float:
    """Ground-truth-normalised flicker: ``temporal_flicker(pred) - temporal_flicker(gt)`` along the same tracks.

    0 means the prediction changes label along the tracks exactly as often as the ground truth does (true part
    crossings removed), which makes videos with different motion comparable; positive means extra flicker,
    negative means the prediction misses true label changes (e.g. over-smoothing). Dense ground truth for the
    same ``T`` frames is required.

    Args:
        pred: ``(T, H, W)`` integer predicted labels.
        gt: ``(T, H, W)`` integer ground-truth labels.
        tracks_xy: ``(T, N, 2)`` float pixel positions ``(x, y)``.
        visible: ``(T, N)`` bool visibility.

    Returns:
        The flicker difference in ``[-1, 1]``, or NaN when there is no tracked point-step.
    """
    _label_pair(pred, gt)
    return temporal_flicker(pred, tracks_xy, visible) - temporal_flicker(gt, tracks_xy, visible)


def gt_consistent_flicker(pred: ArrayLike, gt: ArrayLike, frame_indices: Sequence[int] | None = None) -> float:
    """Flow-free flicker: among pixels whose ground-truth label is the same in frames ``t`` and ``t+1``, the
    fraction whose predicted label changes. Lower is better; a prediction equal to the ground truth scores 0.

    Only pairs of maps that are consecutive video frames are used (``frame_indices[k+1] == frame_indices[k] + 1``).
    Limits: it compares the same pixel location, not the same scene point, so it needs no tracks but only sees
    flicker where the ground truth is locally static; pixels whose gt changes (moving part boundaries) are
    ignored, so lagging or jittery boundaries are under-counted; and a prediction that is wrong in both frames in
    the same way is not counted (that is an accuracy, not a consistency, error). With sparse annotations (no two
    consecutive annotated frames) it is undefined.

    Args:
        pred: ``(K, H, W)`` integer predicted labels.
        gt: ``(K, H, W)`` integer ground-truth labels.
        frame_indices: the ``K`` video frame indices of the maps; default ``0..K-1`` (all consecutive).

    Returns:
        Flicker in ``[0, 1]``, or NaN when there is no consecutive pair or no gt-stable pixel.
    """
    p, g = _label_pair(pred, gt)
    indices = np.arange(len(g)) if frame_indices is None else np.asarray(frame_indices)
    if indices.shape != (len(g),):
        raise ValueError(f"frame_indices must list {len(g)} frames, got {indices.shape[0]}")
    first = np.flatnonzero(np.diff(indices) == 1)
    stable = g[first] == g[first + 1]
    n_stable = np.count_nonzero(stable)
    if n_stable == 0:
        return math.nan
    return np.count_nonzero(stable & (p[first] != p[first + 1])) / n_stable
