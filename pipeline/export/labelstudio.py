"""Label Studio tasks (JSON import) with the masks as ``brushlabels`` predictions, and the labeling config.

One task per exported frame: ``data.image`` is the frame's image URL (``data.video_id``/``data.frame_index``
say where it comes from); its one prediction holds a ``brushlabels`` result per part present, in Label
Studio's brush RLE (the bit-packed run-length code of an RGBA image, as Label Studio's converter writes it:
a 32-bit value count, 5 bits word size - 1, four 4-bit run-length field sizes - 1, then runs of
``1, size index (2 bits), length - 1, value (word size bits)``). The masks can be corrected in Label Studio
and exported back.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from pipeline.export.coco import category_ids
from pipeline.export.select import ExportVideo
from pipeline.sinks.overlay import part_palette

FROM_NAME = "label"
TO_NAME = "image"
_RUN_BITS = (3, 4, 8, 16)  # the four run-length field sizes, as Label Studio's encoder uses


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE bytes of an ``(H, W)`` bool mask (RGBA, 255 where the mask is)."""
    flat = np.repeat(mask.ravel().astype(np.uint8) * 255, 4)
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    header = f"{flat.size:032b}{8 - 1:05b}" + "".join(f"{bits - 1:04b}" for bits in _RUN_BITS)
    chunks = [header]
    for start, stop in itertools.pairwise(bounds):
        value, remaining = int(flat[start]), int(stop - start)
        while remaining > 0:
            length = min(remaining, 1 << _RUN_BITS[-1])
            index = next(i for i, bits in enumerate(_RUN_BITS) if length <= 1 << bits)
            chunks.append(f"1{index:02b}{length - 1:0{_RUN_BITS[index]}b}{value:08b}")
            remaining -= length
    bits = "".join(chunks)
    bits += "0" * (-len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def labeling_config(videos: list[ExportVideo]) -> str:
    """The Label Studio labeling config: an image and one brush label per part name (with its overlay colour)."""
    colours: dict[str, str] = {}
    for video in videos:
        palette = part_palette(len(video.part_names))
        for part_id, name in enumerate(video.part_names[1:], start=1):
            colours.setdefault(name, "#" + bytes(palette[part_id]).hex())
    labels = "".join(f"\n    <Label value={quoteattr(name)} background={quoteattr(colours[name])}/>"
                     for name in category_ids(videos))
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}\n  </BrushLabels>\n</View>\n')


def labelstudio_tasks(videos: list[ExportVideo], image_url: Callable[[str, int], str]) -> list[dict[str, Any]]:
    """The tasks of ``videos``; ``image_url(video_id, frame_index)`` is the URL Label Studio loads."""
    tasks = []
    for video in videos:
        for frame_index, masks in video.frames.items():
            results = [
                {
                    "id": f"{video.video_id}-{frame_index}-{mask.part_id}", "type": "brushlabels",
                    "from_name": FROM_NAME, "to_name": TO_NAME, "original_width": video.width,
                    "original_height": video.height, "image_rotation": 0,
                    "value": {"format": "rle", "rle": brush_rle(mask.decode()),
                              "brushlabels": [video.part_names[mask.part_id]]},
                    "score": mask.score,
                }
                for mask in masks
            ]
            score = float(np.mean([mask.score for mask in masks])) if masks else 0.0
            tasks.append({
                "data": {"image": image_url(video.video_id, frame_index), "video_id": video.video_id,
                         "frame_index": frame_index},
                "predictions": [{"model_version": video.model_id, "score": score, "result": results}],
            })
    return tasks
