"""Expand the inputs of a segmentation job (paths, globs, folders, fsspec URLs) into video URIs with ids.

Each input is one of: a video file (local path or any fsspec URL such as ``memory://clip.mp4``,
``s3://bucket/a.mp4``), a folder, which stands for the video files directly inside it (by extension, see
:data:`VIDEO_SUFFIXES`), or a glob (``videos/*.mp4``, ``s3://bucket/**/*.mov``). An input that exists as a file
or folder is taken literally, so ``clip[1].mp4`` is a file, not a pattern; the names a folder or glob yields are
never parsed again (no globbing, no ``::`` URL chaining, no percent-decoding). A file named explicitly is kept
whatever its extension, so that a damaged or mislabelled file still reaches the batch and is reported in
``failures.parquet``.

Video ids name the output partitions and files (``masks/video_id=<id>/``, ``overlays/<id>.mp4``,
``_manifest/<id>.json``). A video's id is its path relative to the *input root*, the deepest folder holding
every input (one file's root is its folder, a folder's is itself, a glob's is the folder before its first
pattern character), escaped by :func:`video_id_for`: unique, stable for the same inputs, reversible
(:func:`relative_path_of`), and safe as a file name and a Parquet hive partition value whatever the name holds.
"""

from __future__ import annotations

import posixpath
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec

from smite_ops.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
_GLOB_CHARS = ("*", "?", "[")
_ID_SAFE = frozenset(string.ascii_letters + string.digits + "-_.")
_ESCAPE = "~"
_WHOLE_NAME = "~"  # ends the id of a path not ending in .mp4 (a lone "~" never starts an escape)
_CHAINED_URL = re.compile(r"::[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, order=True)
class VideoInput:
    """One video of a job: its id (output partition name) and the URI it is read from."""

    video_id: str
    uri: str


def _escape(text: str) -> str:
    """``text`` with every byte outside ``[A-Za-z0-9._-]`` (and a leading ``.``) as ``~XX`` (UTF-8, hex)."""
    out = []
    for index, char in enumerate(text):
        if char in _ID_SAFE and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"{_ESCAPE}{byte:02X}" for byte in char.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _unescape(text: str) -> str:
    raw = re.sub(rb"~([0-9A-F]{2})", lambda match: bytes([int(match[1], 16)]), text.encode("ascii"))
    return raw.decode("utf-8", "surrogateescape")


def video_id_for(relative_path: str) -> str:
    """The id of a video at ``relative_path`` (``/``-separated, relative to the input root).

    ``cam1/clip.mp4`` -> ``cam1~2Fclip``; ``clip.mp4`` -> ``clip``; a path not ending in ``.mp4`` keeps its
    extension and ends in ``~`` (``clip.mov`` -> ``clip.mov~``). Every character outside ``[A-Za-z0-9._-]``
    and a leading ``.`` become ``~XX`` per UTF-8 byte, so the id is a valid file name and hive partition value.
    """
    stem = relative_path[: -len(".mp4")]
    if relative_path.endswith(".mp4") and stem:
        return _escape(stem)
    return _escape(relative_path) + _WHOLE_NAME


def relative_path_of(video_id: str) -> str:
    """The relative path a video id was made from: the inverse of :func:`video_id_for`."""
    if video_id.endswith(_WHOLE_NAME):  # an escape ends in a hex digit, never in "~"
        return _unescape(video_id[:-1])
    return _unescape(video_id) + ".mp4"


def video_id_of(uri: str) -> str:
    """The id of a single video given on its own: its file name, escaped (``s3://b/x/clip.mp4`` -> ``clip``)."""
    return video_id_for(posixpath.basename(uri.partition("://")[2] or uri))


def fs_and_path(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """:func:`fsspec.core.url_to_fs`, except that ``::`` chains URLs only where a URL follows it.

    A path such as ``/videos/a::b.mp4`` or ``memory://x/a::b.mp4`` is a path on one filesystem, as fsspec's
    listing returned it; ``simplecache::s3://b/k`` still chains. fsspec's errors (``ValueError`` for an unknown
    protocol, ``ImportError`` for a missing package) pass through; :func:`url_to_fs` turns them into one line.
    """
    if "::" in uri and not _CHAINED_URL.search(uri):
        protocol, sep, _ = uri.partition("://")
        fs = fsspec.filesystem(protocol if sep else "file")
        return fs, fs._strip_protocol(uri)
    return fsspec.core.url_to_fs(uri)


def url_to_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """:func:`fs_and_path`, raising :class:`InputError` for an unknown protocol or one whose package is missing."""
    try:
        return fs_and_path(uri)
    except (ValueError, ImportError) as error:
        raise InputError(f"{uri}: cannot open this URL ({' '.join(str(error).split())})") from None


@dataclass(frozen=True)
class _Expanded:
    """What one input stands for: its filesystem, its root folder and its files (filesystem paths)."""

    fs: fsspec.AbstractFileSystem
    root: str
    paths: list[str]
    url_style: bool


def _glob_root(path: str) -> str:
    """The folder before the first path component with a pattern character."""
    parts = path.split("/")
    first = next(i for i, part in enumerate(parts) if any(char in part for char in _GLOB_CHARS))
    return "/".join(parts[:first]) or "/"


def _expand_one(text: str) -> _Expanded:
    """The files one input stands for, sorted; raises :class:`InputError` when there are none."""
    fs, path = url_to_fs(text)
    path = path.rstrip("/") or "/"
    url_style = "://" in text
    if fs.isfile(path):
        return _Expanded(fs, posixpath.dirname(path), [path], url_style)
    if fs.isdir(path):
        listing = fs.ls(path, detail=True)
        found = [e["name"] for e in listing if e["type"] != "directory" and e["name"].lower().endswith(VIDEO_SUFFIXES)]
        if not found:
            raise InputError(f"{text}: the folder holds no video file ({', '.join(VIDEO_SUFFIXES)})")
        return _Expanded(fs, path, sorted(found), url_style)
    if any(char in path for char in _GLOB_CHARS):
        found = [name for name, entry in fs.glob(path, detail=True).items() if entry["type"] != "directory"]
        if not found:
            raise InputError(f"{text}: the pattern matches no file")
        return _Expanded(fs, _glob_root(path), sorted(found), url_style)
    raise InputError(f"{text}: no such file or folder")


def _common_root(roots: list[str]) -> str:
    """The deepest folder holding every root (``/``-separated paths of one filesystem)."""
    split = [root.rstrip("/").split("/") for root in roots]
    common = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    return "/".join(common) if "".join(common) else "/"


def _relative(path: str, root: str) -> str:
    return path[len(root.rstrip("/")) + 1 :] if root != "/" else path.lstrip("/")


def as_videos(inputs: Sequence[str] | Sequence[VideoInput]) -> list[VideoInput]:
    """The videos of a job: :class:`VideoInput` items as given (already expanded, their ids kept), strings
    expanded together by :func:`expand_inputs`.

    Ids depend on every input of a job (they are relative to the inputs' common root), so a subset of a job's
    videos is passed on as :class:`VideoInput` items, never re-expanded from its URIs.
    """
    if inputs and all(isinstance(item, VideoInput) for item in inputs):
        return list(inputs)
    return expand_inputs(list(inputs))


def expand_inputs(inputs: list[str]) -> list[VideoInput]:
    """Expand paths, globs, folders and fsspec URLs into the job's videos, in input order, duplicates removed.

    Ids are relative to the input root of each filesystem (see the module docstring).

    Raises:
        InputError: no inputs, an input that matches nothing, an unknown URL protocol, or two videos on
            different filesystems whose paths below their roots are the same.
    """
    if not inputs:
        raise InputError("no inputs given: pass video files, folders, globs or URLs")
    expanded = [_expand_one(text) for text in inputs]
    roots: dict[fsspec.AbstractFileSystem, list[str]] = {}  # fsspec filesystems compare by protocol and options
    for item in expanded:
        roots.setdefault(item.fs, []).append(item.root)
    common = {fs: _common_root(folders) for fs, folders in roots.items()}
    videos: dict[str, VideoInput] = {}
    for item in expanded:
        root = common[item.fs]
        for path in item.paths:
            uri = item.fs.unstrip_protocol(path) if item.url_style else path
            video = VideoInput(video_id_for(_relative(path, root)), uri)
            known = videos.get(video.video_id)
            if known is not None and known.uri != uri:
                raise InputError(f"{uri}: video id {video.video_id!r} is also the id of {known.uri}; rename one")
            videos[video.video_id] = video
    return list(videos.values())
