"""Read back what a segmentation run wrote, for reports and evaluation.

A run's output root (local path or fsspec URL) holds ``masks/video_id=<id>/*.parquet`` (one row per frame and
part present, see :mod:`pipeline.sinks.masks`) and ``overlays/<id>.mp4``. This module turns those into the
per-frame mean mask confidence, dense label maps (for
:func:`pipeline.evaluation.evaluate.evaluate_predictions`) and small PNG thumbnails.

Mean mask confidence of a frame: the area-weighted mean of the rows' ``score`` (mean class probability inside
each part's mask, background included), i.e. the mean over all pixels of the probability of the label chosen
there; 1.0 is certain, ``1 / P`` is a uniform guess over ``P`` classes.
"""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from pycocotools import mask as coco_mask

from pipeline.io.video import probe_video, read_frames
from pipeline.sinks.manifest import MANIFEST_DIR
from pipeline.sinks.masks import mask_partition
from smite_ops.errors import InputError


class RunOutputError(InputError):
    """A run's outputs are missing or unreadable; the message names the folder or file."""


def committed_video_ids(out_uri: str) -> list[str]:
    """Ids of the videos committed under ``out_uri`` (one ``_manifest/<id>.json`` each), sorted."""
    fs, base = fsspec.core.url_to_fs(str(out_uri))
    folder = f"{base.rstrip('/')}/{MANIFEST_DIR}"
    names = fs.ls(folder, detail=False) if fs.isdir(folder) else []
    return sorted(name.rpartition("/")[2][: -len(".json")] for name in names if name.endswith(".json"))


def masks_partition(out_uri: str, video_id: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of one video's mask partition, ``<out>/masks/video_id=<id>``."""
    fs, _ = fsspec.core.url_to_fs(str(out_uri))
    return fs, mask_partition(out_uri, video_id)


def read_video_masks(out_uri: str, video_id: str, columns: list[str]) -> pa.Table:
    """The ``columns`` of one video's mask rows, in the order written (frame order).

    Raises:
        RunOutputError: the video has no committed mask partition.
    """
    fs, folder = masks_partition(out_uri, video_id)
    listing = fs.ls(folder, detail=False) if fs.isdir(folder) else []
    files = sorted(path for path in listing if path.endswith(".parquet"))
    if not files:
        raise RunOutputError(f"{folder}: no mask files for video {video_id!r} (not segmented or not committed)")
    tables = []
    for path in files:
        with fs.open(path, "rb") as file:
            tables.append(pq.read_table(file, columns=columns))
    return pa.concat_tables(tables)


def frame_confidence(out_uri: str, video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mean mask confidence of one video (definition in the module docstring).

    Returns:
        ``(frame_indices (K,) int64 ascending, confidence (K,) float64 in [0, 1])`` over the frames with rows.
    """
    table = read_video_masks(out_uri, video_id, ["frame_index", "area", "score"])
    frames = table["frame_index"].to_numpy().astype(np.int64)
    area = table["area"].to_numpy().astype(np.float64)
    weighted = area * pc.fill_null(table["score"], 0.0).to_numpy().astype(np.float64)
    indices, inverse = np.unique(frames, return_inverse=True)
    totals = np.bincount(inverse, weights=area)
    confidence = np.bincount(inverse, weights=weighted) / np.maximum(totals, 1.0)
    return indices, confidence


def label_maps(out_uri: str, video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Dense label maps of one video, decoded from the RLE rows.

    Returns:
        ``(frame_indices (K,) int64 ascending, labels (K, H, W) uint8 part ids)`` at the video's native size.
    """
    table = read_video_masks(out_uri, video_id, ["frame_index", "part_id", "height", "width", "rle"])
    frames = table["frame_index"].to_numpy().astype(np.int64)
    indices = np.unique(frames)
    height, width = int(table["height"][0].as_py()), int(table["width"][0].as_py())
    labels = np.zeros((len(indices), height, width), dtype=np.uint8)
    positions = np.searchsorted(indices, frames)
    part_ids = table["part_id"].to_numpy()
    for row, rle in enumerate(table["rle"].to_pylist()):
        mask = coco_mask.decode({"size": rle["size"], "counts": rle["counts"]}).astype(bool)
        labels[positions[row]][mask] = part_ids[row]
    return indices, labels


def frame_thumbnails(video_uri: str, frame_indices: list[int], width: int = 192) -> list[bytes]:
    """PNG bytes of the given frames of a video, scaled to ``width`` pixels wide, in the order given.

    Raises:
        pipeline.io.video.VideoError: the video is missing or unreadable, or a frame is out of range.
    """
    info = probe_video(video_uri)
    height = max(1, round(info.height * width / info.width))
    images = []
    for index in frame_indices:
        frame = read_frames(video_uri, int(index), int(index) + 1, size=(height, width))[0]
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG", optimize=True)
        images.append(buffer.getvalue())
    return images


def flag_low_confidence(confidence: np.ndarray, threshold: float = 0.5, drop: float = 0.15) -> np.ndarray:
    """Which frames need human review: confidence below ``threshold``, or more than ``drop`` below the median.

    Args:
        confidence: ``(K,)`` per-frame mean mask confidence in [0, 1].
        threshold: absolute floor.
        drop: tolerated fall below the video's median confidence (catches sudden dips in a confident video).

    Returns:
        ``(K,)`` bool, True for frames to review.
    """
    values = np.asarray(confidence, dtype=np.float64)
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    return (values < threshold) | (values < np.median(values) - drop)
