"""Write an export: the selected frames' images and the format's annotation files, under a folder or URL."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
from PIL import Image

from pipeline.export.coco import coco_document
from pipeline.export.cvat import cvat_document
from pipeline.export.labelstudio import labeling_config, labelstudio_tasks
from pipeline.export.select import ExportError, ExportVideo, FrameSelection, select_videos
from pipeline.io.video import iter_frames

FORMATS: tuple[str, ...] = ("coco", "cvat", "labelstudio")


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        format: ``coco``, ``cvat`` or ``labelstudio``.
        dest: the export folder (path or URL).
        annotation_files: the annotation files written, relative to ``dest``.
        videos, frames, masks: videos, frames and part masks exported.
        images: frame images written.
    """

    format: str
    dest: str
    annotation_files: tuple[str, ...]
    videos: int
    frames: int
    masks: int
    images: int


def frame_image_path(video_id: str, frame_index: int) -> str:
    """Relative path of a frame's image in COCO and Label Studio exports."""
    return f"images/{video_id}/{frame_index:06d}.png"


def cvat_image_path(video_id: str, frame_index: int) -> str:
    """Relative path of a frame's image in a CVAT export (CVAT's own ``images/frame_NNNNNN.png`` per task)."""
    return f"{video_id}/images/frame_{frame_index:06d}.png"


def write_images(
    fs: fsspec.AbstractFileSystem, root: str, video: ExportVideo, path_of: Callable[[str, int], str]
) -> int:
    """Decode ``video``'s selected frames from its source file and write them as PNG; returns how many.

    Raises:
        pipeline.io.video.VideoError: the source video is missing or unreadable.
    """
    if not video.frames:
        return 0
    selected = list(video.frames)
    first, index, written = selected[0], selected[0], 0
    for chunk in iter_frames(video.uri, first, selected[-1] + 1):
        for frame in chunk:
            if index in video.frames:
                buffer = io.BytesIO()
                Image.fromarray(frame).save(buffer, format="PNG")
                path = f"{root}/{path_of(video.video_id, index)}"
                fs.makedirs(path.rpartition("/")[0], exist_ok=True)
                fs.pipe_file(path, buffer.getvalue())
                written += 1
            index += 1
    return written


def export_masks(
    out_uri: str,
    dest: str,
    fmt: str,
    *,
    video_ids: list[str] | None = None,
    frames: FrameSelection = "all",
    images: bool = True,
    image_url_prefix: str = "",
) -> ExportResult:
    """Export the committed masks under ``out_uri`` to ``dest`` in format ``fmt``.

    Args:
        out_uri: output root of segmentation runs (masks dataset and manifests).
        dest: export folder (local path or fsspec URL), created when missing.
        fmt: one of :data:`FORMATS`.
        video_ids: videos to export (default: every committed video).
        frames: ``all`` or ``flagged`` (only the frames flagged for review).
        images: also write the selected frames as PNG images (decoded from each video's source file).
        image_url_prefix: Label Studio only: prefix of each task's image URL (e.g. ``/data/local-files/?d=``
            for Label Studio's local file storage); the image's relative path follows it.

    Raises:
        ExportError: unknown format or frame selection, nothing committed, unknown video.
        pipeline.io.video.VideoError: ``images`` and a source video is unreadable.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: unknown export format; choose one of {', '.join(FORMATS)}")
    videos = select_videos(out_uri, video_ids, frames)
    fs, root = fsspec.core.url_to_fs(str(dest))
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    image_path = cvat_image_path if fmt == "cvat" else frame_image_path
    written = sum(write_images(fs, root, video, image_path) for video in videos) if images else 0
    if fmt == "coco":
        files = {"annotations.json": json.dumps(coco_document(videos, image_path))}
    elif fmt == "cvat":
        files = {f"{video.video_id}/annotations.xml": cvat_document(video) for video in videos}
    else:
        tasks = labelstudio_tasks(videos, lambda video_id, index: image_url_prefix + image_path(video_id, index))
        files = {"tasks.json": json.dumps(tasks), "labeling_config.xml": labeling_config(videos)}
    for name, text in files.items():
        fs.makedirs(f"{root}/{name}".rpartition("/")[0], exist_ok=True)
        fs.pipe_file(f"{root}/{name}", text.encode("utf-8"))
    return ExportResult(
        format=fmt, dest=str(dest), annotation_files=tuple(files), videos=len(videos),
        frames=sum(len(video.frames) for video in videos),
        masks=sum(len(masks) for video in videos for masks in video.frames.values()), images=written,
    )
