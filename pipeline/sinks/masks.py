"""The Parquet mask dataset (ARCHITECTURE.md "Outputs"): one row per (frame, part present), RLE-encoded.

Layout under the output root (local path or fsspec URL)::

    masks/video_id=<id>/part-00000.parquet    hive-partitioned by video_id; one file per segment of
    masks/video_id=<id>/part-00001.parquet    consecutive frames (pipeline.batch.plan.Segment), in frame order

A video's partition is written in the run's staging folder (``<root>/_staging/<run_id>/``, outside ``masks/``;
see :mod:`pipeline.sinks.out_root`), each file by its own :class:`VideoMaskWriter` (possibly on different
machines), and moved into place only by :func:`publish_masks`, so readers of ``masks/`` (``masks/*/*.parquet``,
``pyarrow.dataset``) never see half a video or an in-progress file. Rows are written in frame order with
fixed writer settings: the same frames give byte-identical files.
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from types import TracebackType

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pycocotools import mask as coco_mask

from pipeline.sinks.out_root import published_path, staging_path

RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.binary())])

MASK_SCHEMA = pa.schema(
    [
        ("frame_index", pa.int32()),
        ("pts_seconds", pa.float64()),
        ("part_id", pa.int16()),
        ("part_name", pa.dictionary(pa.int16(), pa.string())),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("rle", RLE_TYPE),
        ("area", pa.int64()),
        ("bbox", pa.list_(pa.float32(), 4)),
        ("score", pa.float32()),
        ("model_id", pa.string()),
    ]
)
"""Columns of each file; ``video_id`` comes from the partition folder name."""


def frame_rows(
    labels: np.ndarray, probabilities: np.ndarray, part_names: list[str]
) -> dict[str, list]:
    """Encode one frame's label map as rows, one per part present (background included).

    Args:
        labels: ``(H, W)`` integer label map.
        probabilities: ``(P, H, W)`` float class probabilities at the same size.
        part_names: the ``P`` class names.

    Returns:
        Columns ``part_id, part_name, rle, area, bbox, score`` as lists (parts in increasing id).
    """
    columns: dict[str, list] = {"part_id": [], "part_name": [], "rle": [], "area": [], "bbox": [], "score": []}
    for part in np.unique(labels):
        binary = labels == part
        rle = coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))
        columns["part_id"].append(int(part))
        columns["part_name"].append(part_names[part])
        columns["rle"].append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"]})
        columns["area"].append(int(binary.sum()))
        columns["bbox"].append([float(v) for v in coco_mask.toBbox(rle)])
        columns["score"].append(float(probabilities[part][binary].mean()))
    return columns


def mask_partition(root: str, video_id: str) -> str:
    """Where one video's published mask partition lives: ``<root>/masks/video_id=<id>``, a path of ``root``'s
    filesystem."""
    return published_path(root, "masks", f"video_id={video_id}")


def _partition_dirs(root: str, run_id: str, video_id: str) -> tuple[str, str]:
    """``(staging, final)`` paths of a video's mask partition (paths of ``root``'s filesystem)."""
    return staging_path(root, run_id, "masks", f"video_id={video_id}"), mask_partition(root, video_id)


def publish_masks(root: str, run_id: str, video_id: str) -> str:
    """Move a video's staged partition (every file of run ``run_id``) into ``masks/``; returns the folder.

    An earlier partition of the video is replaced.
    """
    fs, _ = fsspec.core.url_to_fs(str(root))
    pending_dir, final_dir = _partition_dirs(root, run_id, video_id)
    if fs.exists(final_dir):
        fs.rm(final_dir, recursive=True)
    fs.mv(pending_dir, final_dir, recursive=True)
    return final_dir


class VideoMaskWriter:
    """Streams masks of one video (all its frames, or one segment of them) into one file of its staged partition.

    Use as a context manager: leaving the block without :meth:`close` or :meth:`commit` (e.g. on an exception)
    removes the pending file, so a failed video leaves nothing visible behind.

    Args:
        root: the output root.
        video_id, part_names, model_id: what the rows say.
        frames_per_row_group: frames per Parquet row group.
        run_id: names the staging folder (default: a fresh one).
        part: the file's number, ``part-<part:05d>.parquet`` (files are read in this order).
    """

    def __init__(
        self, root: str, video_id: str, part_names: list[str], model_id: str, frames_per_row_group: int = 64,
        run_id: str | None = None, part: int = 0,
    ) -> None:
        self.fs, _ = fsspec.core.url_to_fs(str(root))
        self.root, self.video_id, self.run_id = root, video_id, run_id or uuid.uuid4().hex
        self.pending_dir, self.final_dir = _partition_dirs(root, self.run_id, video_id)
        self.pending_file = f"{self.pending_dir}/part-{part:05d}.parquet"
        self.part_names = part_names
        self.model_id = model_id
        self.frames_per_row_group = frames_per_row_group
        self.fs.makedirs(self.pending_dir, exist_ok=True)
        self._file = self.fs.open(self.pending_file, "wb")
        self._writer = pq.ParquetWriter(self._file, MASK_SCHEMA, compression="zstd")
        self._batch: dict[str, list] = {name: [] for name in MASK_SCHEMA.names}
        self._frames_in_batch = 0
        self.rows_written = 0

    def write_frame(
        self, frame_index: int, pts_seconds: float, labels: np.ndarray, probabilities: np.ndarray
    ) -> None:
        """Add one frame: ``labels`` ``(H, W)`` ints, ``probabilities`` ``(P, H, W)`` floats."""
        rows = frame_rows(labels, probabilities, self.part_names)
        count = len(rows["part_id"])
        height, width = labels.shape
        for name, value in (
            ("frame_index", frame_index), ("pts_seconds", pts_seconds), ("height", height),
            ("width", width), ("model_id", self.model_id),
        ):
            self._batch[name].extend([value] * count)
        for name, values in rows.items():
            self._batch[name].extend(values)
        self._frames_in_batch += 1
        if self._frames_in_batch >= self.frames_per_row_group:
            self._flush()

    def _flush(self) -> None:
        if self._batch["frame_index"]:
            self._writer.write_table(pa.Table.from_pydict(self._batch, schema=MASK_SCHEMA))
            self.rows_written += len(self._batch["frame_index"])
        self._batch = {name: [] for name in MASK_SCHEMA.names}
        self._frames_in_batch = 0

    def close(self) -> int:
        """Finish the file (it stays staged until :func:`publish_masks`); returns the rows written."""
        self._flush()
        self._writer.close()
        self._file.close()
        return self.rows_written

    def commit(self) -> str:
        """Finish the file and move the partition into place; returns the partition folder."""
        self.close()
        return publish_masks(self.root, self.run_id, self.video_id)

    def abort(self) -> None:
        """Drop this writer's file (also after a write error such as a full disk)."""
        with suppress(OSError):  # closing flushes, which fails again on a full disk
            if self._writer.is_open:
                self._writer.close()
        with suppress(OSError):
            self._file.close()
        if self.fs.exists(self.pending_file):
            self.fs.rm(self.pending_file)

    def __enter__(self) -> VideoMaskWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self.abort()
