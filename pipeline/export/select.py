"""Which videos and frames an export holds, read from the committed Parquet masks dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pycocotools import mask as coco_mask

from pipeline.sinks.manifest import read_manifest
from pipeline.sinks.run_outputs import committed_video_ids, read_video_masks
from smite_ops.errors import InputError

FrameSelection = Literal["all", "flagged"]
FRAME_SELECTIONS: tuple[str, ...] = ("all", "flagged")


class ExportError(InputError):
    """An export cannot be made: unknown video, unknown format or frame selection, nothing committed."""


@dataclass(frozen=True)
class PartMask:
    """One part's mask in one frame.

    Attributes:
        part_id: index into the video's part names (never 0, the background).
        rle: COCO compressed RLE, ``{"size": [H, W], "counts": bytes}``.
        area: mask pixels.
        bbox: ``(x, y, width, height)`` in pixels (COCO convention).
        score: mean class probability inside the mask, in [0, 1].
    """

    part_id: int
    rle: dict[str, Any]
    area: int
    bbox: tuple[float, float, float, float]
    score: float

    def decode(self) -> np.ndarray:
        """The mask as ``(H, W)`` bool."""
        return coco_mask.decode(self.rle).astype(bool)


@dataclass(frozen=True)
class ExportVideo:
    """One video's selected frames and their part masks.

    Attributes:
        video_id, uri: the video and its source file (from the manifest; empty when unknown).
        model_id: the segmenter that labelled it.
        part_names: all ``P`` class names, index = part id (0 is the background).
        num_frames: frames in the video.
        height, width: frame size in pixels.
        frames: selected frame index -> its part masks (background left out), frames ascending.
    """

    video_id: str
    uri: str
    model_id: str
    part_names: tuple[str, ...]
    num_frames: int
    height: int
    width: int
    frames: dict[int, tuple[PartMask, ...]]


def _frames_to_keep(out_uri: str, video_id: str, frames: FrameSelection) -> set[int] | None:
    if frames == "all":
        return None
    from pipeline.report.review import review_video

    return {int(index) for index in review_video(out_uri, video_id).review_frames}


def read_export_video(out_uri: str, video_id: str, frames: FrameSelection = "all") -> ExportVideo:
    """One committed video's masks for export.

    Raises:
        ExportError: the video is not committed under ``out_uri``.
    """
    manifest = read_manifest(out_uri, video_id)
    if manifest is None:
        raise ExportError(f"{out_uri}: video {video_id!r} is not committed there (no _manifest/{video_id}.json)")
    table = read_video_masks(
        out_uri, video_id, ["frame_index", "part_id", "height", "width", "rle", "area", "bbox", "score"]
    )
    keep = _frames_to_keep(out_uri, video_id, frames)
    rows: dict[int, list[PartMask]] = {}
    for row in table.to_pylist():
        index = int(row["frame_index"])
        if keep is not None and index not in keep:
            continue
        masks = rows.setdefault(index, [])
        if row["part_id"] != 0:
            rle = {"size": [int(v) for v in row["rle"]["size"]], "counts": row["rle"]["counts"]}
            masks.append(PartMask(int(row["part_id"]), rle, int(row["area"]), tuple(row["bbox"]), float(row["score"])))
    return ExportVideo(
        video_id=video_id,
        uri=str(manifest.get("uri", "")),
        model_id=str(manifest.get("model_id", "")),
        part_names=tuple(manifest["part_names"]),
        num_frames=int(manifest.get("num_frames") or table["frame_index"].to_numpy().max() + 1),
        height=int(table["height"][0].as_py()),
        width=int(table["width"][0].as_py()),
        frames={index: tuple(rows[index]) for index in sorted(rows)},
    )


def select_videos(
    out_uri: str, video_ids: list[str] | None = None, frames: FrameSelection = "all"
) -> list[ExportVideo]:
    """The videos to export: ``video_ids`` (default: every committed video), each with its selected frames.

    Raises:
        ExportError: nothing is committed under ``out_uri``, a video id is not committed, or ``frames`` is
            not one of :data:`FRAME_SELECTIONS`.
    """
    if frames not in FRAME_SELECTIONS:
        raise ExportError(f"--frames {frames}: unknown frame selection; choose one of {', '.join(FRAME_SELECTIONS)}")
    committed = committed_video_ids(out_uri)
    if not committed:
        raise ExportError(f"{out_uri}: no committed video (no _manifest/*.json)")
    wanted = list(video_ids) if video_ids else committed
    if missing := [video for video in wanted if video not in committed]:
        raise ExportError(f"{out_uri}: video(s) {', '.join(missing)} not committed there")
    return [read_export_video(out_uri, video, frames) for video in wanted]
