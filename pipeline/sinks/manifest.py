"""Per-video manifests (the commit record), committed-video detection, and ``failures.parquet``.

``_manifest/<video_id>.json`` is written last, after every other output of the video is in place, so its
presence marks a committed video: a rerun with the same commit key (:mod:`pipeline.batch.commit_key`) skips it, and a
video without one, or committed under another key, is redone from scratch. ``failures.parquet`` holds one row
per video whose last attempt failed (``video_id, uri, error_type, message``, sorted by video id); each run
replaces the rows of the videos it processed and keeps the others.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.inputs import url_to_fs
from smite_ops.errors import InputError

MANIFEST_DIR = "_manifest"
FAILURES_FILE = "failures.parquet"
FAILURES_SCHEMA = pa.schema(
    [("video_id", pa.string()), ("uri", pa.string()), ("error_type", pa.string()), ("message", pa.string())]
)
_VERSIONED = ("smite", "torch", "ray", "pyarrow", "av", "pycocotools", "diffusers")


@dataclass(frozen=True)
class VideoManifest:
    """What a committed video's manifest records.

    Attributes:
        video_id, uri: the video.
        num_frames, fps, height, width: its probe result (frames, frames/s, pixels).
        model_id, part_names: the segmenter that labelled it.
        config_digest: :meth:`JobConfig.digest` of the job.
        commit_key: what the outputs depend on (:func:`pipeline.batch.commit_key.commit_key`); a rerun skips the video
            only under the same key (never under the empty default).
        outputs: output kind (``masks``, ``overlay``, ``tracks``) -> path or URL.
        timings: seconds spent: ``total`` (first shard to commit), ``model`` (inside segmenter calls, summed) and
            ``write`` (in the segment writer tasks: blending, labelling, mask rows and overlay parts, summed; the
            commit itself counts in ``total`` only).
        mask_rows: rows written to the mask dataset.
        versions: package versions of the run.
        cost: per output frame: ``unet_frame_forwards`` (UNet frame-forward equivalents of both phases, a backward
            counting two) and ``tracker_point_frames`` (points x frames of every tracker call).
    """

    video_id: str
    uri: str
    num_frames: int
    fps: float
    height: int
    width: int
    model_id: str
    part_names: list[str]
    config_digest: str
    outputs: dict[str, str]
    timings: dict[str, float]
    mask_rows: int
    commit_key: str = ""
    versions: dict[str, str] = field(default_factory=lambda: package_versions())
    cost: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """One failed video: its id, URI, the error's class name and one-line message."""

    video_id: str
    uri: str
    error_type: str
    message: str


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the outputs (``unknown`` when not installed)."""
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def _join(root: str, *names: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, base = url_to_fs(str(root))
    return fs, "/".join([base.rstrip("/"), *names])


def _write_atomically(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` beside ``path`` under a hidden name, then rename it into place."""
    folder, _, name = path.rpartition("/")
    fs.makedirs(folder, exist_ok=True)
    pending = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.pending"
    with fs.open(pending, "wb") as file:
        file.write(data)
    fs.mv(pending, path)


def manifest_path(root: str, video_id: str) -> str:
    """Path (or URL path) of a video's manifest under the output root."""
    return _join(root, MANIFEST_DIR, f"{video_id}.json")[1]


def write_manifest(root: str, manifest: VideoManifest) -> str:
    """Commit a video: write its manifest atomically; returns its path."""
    fs, path = _join(root, MANIFEST_DIR, f"{manifest.video_id}.json")
    _write_atomically(fs, path, (json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n").encode())
    return path


def read_manifest(root: str, video_id: str) -> dict[str, Any] | None:
    """A video's manifest as a dict, or None when the video is not committed (or the file is unreadable)."""
    fs, path = _join(root, MANIFEST_DIR, f"{video_id}.json")
    try:
        with fs.open(path, "rb") as file:
            data = json.loads(file.read())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def remove_manifest(root: str, video_id: str) -> None:
    """Withdraw a video's commit (no-op when it has none)."""
    fs, path = _join(root, MANIFEST_DIR, f"{video_id}.json")
    if fs.exists(path):
        fs.rm(path)


def is_committed(root: str, video_id: str, commit_key: str) -> bool:
    """Whether ``video_id`` was committed under ``commit_key`` (same segmenter, tracker and output settings)."""
    manifest = read_manifest(root, video_id)
    return bool(commit_key) and manifest is not None and manifest.get("commit_key") == commit_key


class OutputRootError(InputError):
    """An output root cannot be used: an unknown URL protocol, a missing fsspec package, a damaged file in it."""


def read_failures(root: str) -> list[Failure]:
    """The rows of ``failures.parquet`` (empty when there is none).

    Raises:
        OutputRootError: the file is not a Parquet file with the failures schema.
    """
    fs, path = _join(root, FAILURES_FILE)
    if not fs.exists(path):
        return []
    try:
        with fs.open(path, "rb") as file:
            table = pq.read_table(file)
        if not FAILURES_SCHEMA.equals(table.schema, check_metadata=False):
            raise ValueError(f"columns {table.schema.names}")
        return [Failure(**row) for row in table.to_pylist()]
    except (pa.ArrowException, OSError, ValueError) as err:
        problem = " ".join(str(err).split())[:200]
        where = f"{str(root).rstrip('/')}/{FAILURES_FILE}"
        raise OutputRootError(f"{where}: damaged failures file ({problem}); move it away") from None


def update_failures(root: str, processed: set[str], failures: list[Failure]) -> str:
    """Replace the rows of the ``processed`` videos by ``failures`` and rewrite the file atomically.

    Returns:
        The path of ``failures.parquet`` (written even when empty, so a job always leaves one).
    """
    kept = [row for row in read_failures(root) if row.video_id not in processed]
    rows = sorted([*kept, *failures], key=lambda row: row.video_id)
    table = pa.Table.from_pylist([asdict(row) for row in rows], schema=FAILURES_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    fs, path = _join(root, FAILURES_FILE)
    _write_atomically(fs, path, sink.getvalue().to_pybytes())
    return path
