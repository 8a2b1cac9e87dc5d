"""Evaluate predicted label maps against SMITE-50-layout ground truth: mIoU, DAVIS J/F and flicker per video.

Predictions layout (written by :func:`save_label_maps`)::

    PRED/<video_id>/<frame_index:05d>.png     single-channel 8-bit label maps (PIL mode "L" or "P"), any size

When several datasets share video ids (e.g. ``car_coarse`` and ``car_fine`` hold the same videos), the
predictions of dataset ``D`` go to ``PRED/D/<video_id>/``; that folder is looked up first, then
``PRED/<video_id>/``. Prediction files for frames without ground truth are ignored.

Ground truth (``gt_root``) may be one dataset folder (``references/parts.txt``, ``gt/<video_id>/``, ...), a
folder of such datasets, a folder of per-video ground-truth folders, or one per-video folder. A video's kind is
its dataset's folder name when there is one, else its id without trailing digits and underscores
(``car_07`` -> ``car``). Every annotated frame is evaluated (METHOD.md §1.7, mode "all"): ground truth and
predictions are both nearest-resized to ``size x size`` (512 in the reference), and an annotated frame without a
prediction counts as all background and is reported in the warnings. Paths may be local or fsspec URLs.

Dataset-level numbers are plain means over videos (as in the reference), per kind and overall; a metric that is
undefined for a video (J/F without foreground objects, flicker without two consecutive annotated frames) is
left out of the means.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.evaluation.smite50 import FRAMES_FILE, natural_key, read_ground_truth
from smite_ops.errors import InputError
from smite_ops.metrics import davis_f, davis_j, gt_consistent_flicker, miou

PARTS_FILE = "references/parts.txt"


class EvaluationError(InputError):
    """Predictions or ground truth cannot be evaluated; the message names the file or folder and the problem."""


@dataclass(frozen=True, kw_only=True)
class Scores:
    """Metric values; ``None`` where undefined.

    Attributes:
        frames: number of evaluated frames.
        miou_ref: mIoU in percent, reference convention (classes absent from the gt count 0).
        miou_present: mIoU in percent over the classes present in the gt.
        j: DAVIS region similarity in [0, 1].
        f: DAVIS boundary F-measure in [0, 1].
        flicker: gt-consistent flicker in [0, 1], lower is better (:func:`smite_ops.metrics.gt_consistent_flicker`).
    """

    frames: int
    miou_ref: float | None
    miou_present: float | None
    j: float | None
    f: float | None
    flicker: float | None


@dataclass(frozen=True, kw_only=True)
class VideoScores(Scores):
    """The scores of one video."""

    video_id: str
    kind: str


@dataclass(frozen=True, kw_only=True)
class GroupScores(Scores):
    """Means over a group of videos (``frames`` is the total)."""

    videos: int

    @classmethod
    def of(cls, rows: Sequence[VideoScores]) -> GroupScores:
        """Plain means over ``rows`` of every metric, skipping undefined (``None``) values."""
        means: dict[str, float | None] = {}
        for name in _METRICS:
            values = [getattr(row, name) for row in rows if getattr(row, name) is not None]
            means[name] = float(np.mean(values)) if values else None
        return cls(videos=len(rows), frames=sum(row.frames for row in rows), **means)


_METRICS = ("miou_ref", "miou_present", "j", "f", "flicker")
_COLUMNS = ("mIoU ref (%)", "mIoU present (%)", "J", "F", "flicker")
_FORMATS = ("{:.2f}", "{:.2f}", "{:.3f}", "{:.3f}", "{:.4f}")


@dataclass
class EvaluationReport:
    """Evaluation of a predictions folder: one row per video, means per kind and overall.

    Attributes:
        videos: per-video scores, in ground-truth discovery order.
        size: evaluation resolution in pixels (square).
        warnings: one line per video with annotated frames that had no prediction.
    """

    videos: list[VideoScores]
    size: int
    warnings: list[str] = field(default_factory=list)

    @property
    def per_kind(self) -> dict[str, GroupScores]:
        """Means per kind, kinds in order of first appearance."""
        kinds = dict.fromkeys(row.kind for row in self.videos)
        return {kind: GroupScores.of([row for row in self.videos if row.kind == kind]) for kind in kinds}

    @property
    def overall(self) -> GroupScores:
        """Means over all videos."""
        return GroupScores.of(self.videos)

    def to_json(self) -> str:
        """JSON with ``size``, ``videos`` (rows), ``per_kind``, ``overall`` and ``warnings``; undefined -> null."""
        return json.dumps(
            {
                "size": self.size,
                "videos": [{"video_id": row.video_id, "kind": row.kind, **asdict(row)} for row in self.videos],
                "per_kind": {kind: asdict(scores) for kind, scores in self.per_kind.items()},
                "overall": asdict(self.overall),
                "warnings": self.warnings,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> EvaluationReport:
        """Inverse of :meth:`to_json` (the means are recomputed from the rows)."""
        data = json.loads(text)
        return cls(videos=[VideoScores(**row) for row in data["videos"]], size=data["size"], warnings=data["warnings"])

    def to_markdown(self) -> str:
        """Markdown: a per-video table, a per-kind table ending with an ``all`` row, and the warnings."""
        header = " | ".join(_COLUMNS)
        lines = [
            f"### Per video ({self.size}x{self.size})",
            "",
            f"| video | kind | frames | {header} |",
            "|---|---|---:|" + "---:|" * len(_COLUMNS),
            *(f"| {row.video_id} | {row.kind} | {row.frames} | {_cells(row)} |" for row in self.videos),
            "",
            "### Per kind",
            "",
            f"| kind | videos | frames | {header} |",
            "|---|---:|---:|" + "---:|" * len(_COLUMNS),
            *(f"| {kind} | {s.videos} | {s.frames} | {_cells(s)} |" for kind, s in self.per_kind.items()),
            f"| **all** | {self.overall.videos} | {self.overall.frames} | {_cells(self.overall)} |",
        ]
        if self.warnings:
            lines += ["", "### Warnings", "", *(f"- {warning}" for warning in self.warnings)]
        return "\n".join(lines) + "\n"


def _cells(scores: Scores) -> str:
    values = (getattr(scores, name) for name in _METRICS)
    return " | ".join("n/a" if v is None else fmt.format(v) for v, fmt in zip(values, _FORMATS, strict=True))


@dataclass(frozen=True)
class GroundTruthVideo:
    """One video found under a ground-truth root.

    Attributes:
        video_id: the ground-truth folder name.
        kind: dataset folder name, else the id without trailing digits/underscores.
        gt_dir: URL or path of its SMITE-50 ground-truth folder.
        dataset: URL or path of its dataset folder, or ``None`` for bare per-video folders.
    """

    video_id: str
    kind: str
    gt_dir: str
    dataset: str | None


def _join(url: str, *names: str) -> str:
    return "/".join([url.rstrip("/"), *names])


def _name(url: str) -> str:
    """Last path component of a local path or URL (``.`` resolved to the folder's name)."""
    return PurePosixPath(fsspec.core.url_to_fs(url)[1]).name


def _subfolders(fs: fsspec.AbstractFileSystem, url: str) -> list[str]:
    """Names of the sub-folders of ``url``, natural-sorted."""
    names = [PurePosixPath(e["name"]).name for e in fs.ls(url, detail=True) if e["type"] == "directory"]
    return sorted(names, key=natural_key)


def kind_of(video_id: str) -> str:
    """Kind from a bare video id: the id without trailing digits and underscores (``car_07`` -> ``car``)."""
    return re.sub(r"[\d_]+$", "", video_id) or video_id


def find_videos(gt_root: str | Path) -> list[GroundTruthVideo]:
    """Videos under ``gt_root`` (a dataset, a folder of datasets, a folder of per-video folders, or one video).

    Raises:
        EvaluationError: ``gt_root`` is missing or holds none of these.
    """
    root = str(gt_root)
    fs, _ = fsspec.core.url_to_fs(root)
    if not fs.isdir(root):
        raise EvaluationError(f"{root}: ground-truth folder not found")
    if fs.isfile(_join(root, FRAMES_FILE)):
        return [GroundTruthVideo(_name(root), kind_of(_name(root)), root, None)]
    if fs.isdir(_join(root, "gt")):
        datasets = [root]
    else:
        datasets = [_join(root, name) for name in _subfolders(fs, root) if fs.isdir(_join(root, name, "gt"))]
    if datasets:
        videos = [
            GroundTruthVideo(name, _name(dataset), _join(dataset, "gt", name), dataset)
            for dataset in datasets
            for name in _subfolders(fs, _join(dataset, "gt"))
        ]
    else:
        videos = [
            GroundTruthVideo(name, kind_of(name), _join(root, name), None)
            for name in _subfolders(fs, root)
            if fs.isfile(_join(root, name, FRAMES_FILE))
        ]
    if not videos:
        raise EvaluationError(
            f"{root}: no ground truth found (expected gt/, dataset folders with gt/, or folders with {FRAMES_FILE})"
        )
    return videos


def _parts_count(dataset: str) -> int | None:
    """Class count P from the dataset's ``references/parts.txt`` (one name per line, background first)."""
    url = _join(dataset, PARTS_FILE)
    fs, _ = fsspec.core.url_to_fs(url)
    if not fs.isfile(url):
        return None
    names = [line for line in fs.cat_file(url).decode("utf-8").splitlines() if line.strip()]
    if len(names) < 2:
        raise EvaluationError(f"{url}: needs background plus at least one part name, found {len(names)} lines")
    return len(names)


def _resize_nearest(label_map: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` uint8 labels -> ``(size, size)`` uint8, nearest neighbour."""
    if label_map.shape == (size, size):
        return label_map
    return np.asarray(Image.fromarray(label_map).resize((size, size), Image.Resampling.NEAREST))


def _read_label_map(fs: fsspec.AbstractFileSystem, url: str, size: int) -> np.ndarray:
    """One predicted label map, nearest-resized to ``(size, size)`` uint8."""
    try:
        with Image.open(io.BytesIO(fs.cat_file(url))) as image:
            if image.mode not in ("L", "P"):
                raise EvaluationError(f"{url}: expected a single-channel 8-bit label map, got PIL mode {image.mode}")
            label_map = np.asarray(image)
    except (UnidentifiedImageError, OSError) as err:
        raise EvaluationError(f"{url}: unreadable image ({err.__class__.__name__})") from None
    return _resize_nearest(label_map, size)


def _prediction_folder(pred_dir: str, video: GroundTruthVideo) -> str:
    """``PRED/<dataset>/<video_id>`` when it exists, else ``PRED/<video_id>``."""
    fs, _ = fsspec.core.url_to_fs(pred_dir)
    if video.dataset is not None:
        nested = _join(pred_dir, _name(video.dataset), video.video_id)
        if fs.isdir(nested):
            return nested
    return _join(pred_dir, video.video_id)


def _read_predictions(folder: str, frame_indices: Sequence[int], size: int) -> tuple[np.ndarray, list[int]]:
    """Predicted maps ``(K, size, size)`` uint8 for ``frame_indices`` (zeros where missing) and the missing ones."""
    fs, _ = fsspec.core.url_to_fs(folder)
    present = {PurePosixPath(name).name for name in fs.ls(folder, detail=False)} if fs.isdir(folder) else set()
    maps = np.zeros((len(frame_indices), size, size), dtype=np.uint8)
    missing = []
    for position, index in enumerate(frame_indices):
        name = f"{index:05d}.png"
        if name in present:
            maps[position] = _read_label_map(fs, _join(folder, name), size)
        else:
            missing.append(index)
    return maps, missing


def _evaluate_video(
    video: GroundTruthVideo, pred_dir: str, num_parts: int | None, size: int
) -> tuple[VideoScores, str | None]:
    """Scores of one video and its missing-frames warning (``None`` when every frame was predicted)."""
    parts = num_parts
    if parts is None and video.dataset is not None:
        parts = _parts_count(video.dataset)
    gt = read_ground_truth(video.gt_dir, parts)
    gt_maps = np.stack([_resize_nearest(frame, size) for frame in gt.labels])
    folder = _prediction_folder(pred_dir, video)
    pred_maps, missing = _read_predictions(folder, gt.frame_indices, size)
    classes = parts if parts is not None else max(int(gt_maps.max()), int(pred_maps.max())) + 1
    too_high = np.flatnonzero(pred_maps.reshape(len(pred_maps), -1).max(axis=1) >= classes)
    if too_high.size:
        path = _join(folder, f"{gt.frame_indices[too_high[0]]:05d}.png")
        raise EvaluationError(f"{path}: label {int(pred_maps[too_high[0]].max())} >= number of classes {classes}")
    iou = miou(pred_maps, gt_maps, classes)
    scores = VideoScores(
        video_id=video.video_id,
        kind=video.kind,
        frames=len(gt.frame_indices),
        miou_ref=iou.reference,
        miou_present=iou.present,
        j=_defined(davis_j(pred_maps, gt_maps)),
        f=_defined(davis_f(pred_maps, gt_maps)),
        flicker=_defined(gt_consistent_flicker(pred_maps, gt_maps, gt.frame_indices)),
    )
    warning = None
    if missing:
        listed = ", ".join(str(i) for i in missing) if len(missing) < len(gt.frame_indices) else "all"
        warning = (
            f"{video.kind}/{video.video_id}: {len(missing)} of {len(gt.frame_indices)} annotated frames have no "
            f"prediction in {folder} (counted as all background): {listed}"
        )
    return scores, warning


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else value


def evaluate_predictions(
    pred_dir: str | Path, gt_root: str | Path, num_parts: int | None = None, size: int = 512
) -> EvaluationReport:
    """Evaluate a predictions folder (layout in the module docstring) against SMITE-50-layout ground truth.

    Args:
        pred_dir: predictions root, local path or fsspec URL.
        gt_root: a dataset folder, a folder of datasets, a folder of per-video ground-truth folders, or one
            per-video folder.
        num_parts: class count P including background; default: the line count of the dataset's
            ``references/parts.txt``, else the largest label in ground truth and predictions + 1.
        size: evaluation resolution; both label maps are nearest-resized to ``size x size``.

    Returns:
        The per-video, per-kind and overall scores, with a warning per video that lacks predicted frames.

    Raises:
        EvaluationError: missing folders, unreadable or non-label-map predictions, labels >= P.
        GroundTruthError: malformed ground truth.
    """
    if size < 1:
        raise EvaluationError(f"size must be a positive number of pixels, got {size}")
    if num_parts is not None and num_parts < 2:
        raise EvaluationError(f"num_parts counts background plus at least one part, got {num_parts}")
    pred_url = str(pred_dir)
    fs, _ = fsspec.core.url_to_fs(pred_url)
    if not fs.isdir(pred_url):
        raise EvaluationError(f"{pred_url}: predictions folder not found")
    rows, warnings = [], []
    for video in find_videos(gt_root):
        scores, warning = _evaluate_video(video, pred_url, num_parts, size)
        rows.append(scores)
        if warning is not None:
            warnings.append(warning)
    return EvaluationReport(videos=rows, size=size, warnings=warnings)


def save_label_maps(out_dir: str | Path, video_id: str, frame_indices: Sequence[int], labels: np.ndarray) -> None:
    """Write label maps in the predictions layout: ``out_dir/<video_id>/<frame_index:05d>.png`` (mode "L").

    Args:
        out_dir: predictions root (local path or fsspec URL); created if missing.
        video_id: the video's ground-truth folder name.
        frame_indices: the K 0-based native frame indices, distinct and >= 0.
        labels: ``(K, H, W)`` integer label maps with values in ``0..255`` (numpy or CPU torch).

    Raises:
        EvaluationError: inconsistent shapes, indices or label values.
    """
    maps = np.asarray(labels)
    folder = _join(str(out_dir), video_id)
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.integer) or len(maps) != len(frame_indices):
        raise EvaluationError(
            f"{folder}: labels must be (K, H, W) integers with K={len(frame_indices)}, got {maps.dtype} {maps.shape}"
        )
    if maps.size and (maps.min() < 0 or maps.max() > 255):
        raise EvaluationError(f"{folder}: labels must lie in 0..255 to fit an 8-bit PNG")
    if len(set(frame_indices)) != len(frame_indices) or any(index < 0 for index in frame_indices):
        raise EvaluationError(f"{folder}: frame indices must be distinct and >= 0")
    fs, _ = fsspec.core.url_to_fs(folder)
    fs.makedirs(folder, exist_ok=True)
    for index, label_map in zip(frame_indices, maps, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(label_map.astype(np.uint8)).save(buffer, format="PNG")
        fs.pipe_file(_join(folder, f"{int(index):05d}.png"), buffer.getvalue())
