"""CVAT for video 1.1 XML of one exported video (CVAT's documented "XML annotation format", interpolation mode).

Masks cannot be interpolated, so every part mask of a frame becomes a single-frame track, as CVAT itself
exports shapes in this format: the mask as a keyframe at its frame and the same mask marked ``outside`` at
the next frame (left out on the video's last frame). A mask is stored as its bounding box (``left``, ``top``,
``width``, ``height``, pixels) and ``rle``: comma-separated run lengths over the box in row-major order,
alternating background and mask and starting with background (a leading 0 when the box starts with mask).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import numpy as np

from pipeline.export.select import ExportVideo
from pipeline.sinks.overlay import part_palette


def box_runs(mask: np.ndarray) -> tuple[tuple[int, int, int, int], list[int]]:
    """CVAT's mask encoding of a non-empty ``(H, W)`` bool mask.

    Returns:
        ``((left, top, width, height), runs)``: the tight box in pixels and the run lengths over it.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    flat = mask[top : top + height, left : left + width].ravel()
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return (left, top, width, height), ([0, *runs] if flat[0] else runs)


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def cvat_document(video: ExportVideo) -> str:
    """The CVAT for video 1.1 XML of ``video`` (one task, frames numbered as in the video)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    root = ET.Element("annotations")
    _text(root, "version", "1.1")
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for tag, value in (("id", "1"), ("name", video.video_id), ("size", str(video.num_frames)),
                       ("mode", "interpolation"), ("overlap", "0"), ("bugtracker", ""), ("created", now),
                       ("updated", now), ("start_frame", "0"), ("stop_frame", str(video.num_frames - 1))):
        _text(task, tag, value)
    labels = ET.SubElement(task, "labels")
    palette = part_palette(len(video.part_names))
    for part_id, name in enumerate(video.part_names[1:], start=1):
        label = ET.SubElement(labels, "label")
        _text(label, "name", name)
        _text(label, "color", "#" + bytes(palette[part_id]).hex())
        _text(label, "type", "mask")
        ET.SubElement(label, "attributes")
    size = ET.SubElement(task, "original_size")
    _text(size, "width", str(video.width))
    _text(size, "height", str(video.height))
    _text(root[1], "dumped", now)
    track_id = 0
    for frame_index, masks in video.frames.items():
        for mask in masks:
            (left, top, width, height), runs = box_runs(mask.decode())
            track = ET.SubElement(root, "track", id=str(track_id), label=video.part_names[mask.part_id], source="auto")
            track_id += 1
            shape = {"keyframe": "1", "occluded": "0", "rle": ", ".join(map(str, runs)), "left": str(left),
                     "top": str(top), "width": str(width), "height": str(height), "z_order": "0"}
            ET.SubElement(track, "mask", frame=str(frame_index), outside="0", **shape)
            if frame_index + 1 < video.num_frames:
                ET.SubElement(track, "mask", frame=str(frame_index + 1), outside="1", **shape)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
