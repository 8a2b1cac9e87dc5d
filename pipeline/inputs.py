"""Expand the inputs of a segmentation job (paths, globs, folders, fsspec URLs) into video URIs with ids.

Each input is one of: a video file (local path or any fsspec URL such as ``memory://clip.mp4``,
``s3://bucket/a.mp4``), a glob (``videos/*.mp4``, ``s3://bucket/**/*.mov``), or a folder, which stands for the
video files directly inside it (by extension, see :data:`VIDEO_SUFFIXES`). A file named explicitly is kept
whatever its extension, so that a damaged or mislabelled file still reaches the batch and is reported in
``failures.parquet``. A video's id is its file name without the extension; ids must be unique in a job
because they name the output partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import fsspec

from smite_ops.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True, order=True)
class VideoInput:
    """One video of a job: its id (output partition name) and the URI it is read from."""

    video_id: str
    uri: str


def video_id_of(uri: str) -> str:
    """The id of a video: its file name without the extension (``s3://b/x/clip.mp4`` -> ``clip``)."""
    return PurePosixPath(uri.split("://")[-1]).stem


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, original: str) -> str:
    """Turn a filesystem path back into a URI of the same kind as the user's input."""
    return fs.unstrip_protocol(path) if "://" in original else path


def _expand_one(text: str) -> list[str]:
    """The video URIs one input stands for, sorted; raises :class:`InputError` when there are none."""
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ValueError, ImportError) as error:
        raise InputError(f"{text}: cannot open this URL ({error})") from None
    if any(char in path for char in _GLOB_CHARS):
        found = [p for p in fs.glob(path) if not fs.isdir(p)]
        if not found:
            raise InputError(f"{text}: the pattern matches no file")
        return sorted(_unstrip(fs, p, text) for p in found)
    if fs.isdir(path):
        found = [p for p in fs.ls(path, detail=False) if p.lower().endswith(VIDEO_SUFFIXES) and not fs.isdir(p)]
        if not found:
            raise InputError(f"{text}: the folder holds no video file ({', '.join(VIDEO_SUFFIXES)})")
        return sorted(_unstrip(fs, p, text) for p in found)
    if not fs.exists(path):
        raise InputError(f"{text}: no such file or folder")
    return [text]


def expand_inputs(inputs: list[str]) -> list[VideoInput]:
    """Expand paths, globs, folders and fsspec URLs into the job's videos, in input order, duplicates removed.

    Raises:
        InputError: no inputs, an input that matches nothing, or two different files with the same id.
    """
    if not inputs:
        raise InputError("no inputs given: pass video files, folders, globs or URLs")
    videos: dict[str, VideoInput] = {}
    for text in inputs:
        for uri in _expand_one(text):
            video = VideoInput(video_id_of(uri), uri)
            known = videos.get(video.video_id)
            if known is not None and known.uri != uri:
                raise InputError(f"{uri}: video id {video.video_id!r} is also the id of {known.uri}; rename one")
            videos[video.video_id] = video
    return list(videos.values())
