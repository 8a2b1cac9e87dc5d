"""COCO JSON (object instances, RLE masks) of exported videos; loads with ``pycocotools.coco.COCO``.

One image per exported frame (``file_name`` from ``image_path``, plus ``video_id`` and ``frame_index``), one
category per part name (ids from 1, in order of first appearance over the videos), one annotation per part
present in a frame with its compressed RLE mask. RLE segmentations carry ``iscrowd: 1`` as the COCO format
description prescribes for RLE; ``score`` is the part's mean class probability.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipeline.export.select import ExportVideo


def category_ids(videos: list[ExportVideo]) -> dict[str, int]:
    """Part name -> category id (from 1) over every video's non-background parts, first appearance first."""
    names: dict[str, int] = {}
    for video in videos:
        for name in video.part_names[1:]:
            names.setdefault(name, len(names) + 1)
    return names


def coco_document(videos: list[ExportVideo], image_path: Callable[[str, int], str]) -> dict[str, Any]:
    """The COCO document of ``videos``; ``image_path(video_id, frame_index)`` names each frame's image file."""
    categories = category_ids(videos)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for video in videos:
        for frame_index, masks in video.frames.items():
            image_id = len(images) + 1
            images.append({
                "id": image_id, "file_name": image_path(video.video_id, frame_index), "width": video.width,
                "height": video.height, "video_id": video.video_id, "frame_index": frame_index,
            })
            for mask in masks:
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": categories[video.part_names[mask.part_id]],
                    "segmentation": {"size": mask.rle["size"], "counts": mask.rle["counts"].decode("ascii")},
                    "area": mask.area, "bbox": [float(v) for v in mask.bbox], "iscrowd": 1, "score": mask.score,
                })
    return {
        "info": {"description": "SMITE part masks", "version": "1.0",
                 "date_created": datetime.now(UTC).isoformat(timespec="seconds")},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "part"} for name, cid in categories.items()],
    }
