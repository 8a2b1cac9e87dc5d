"""The commit key: what a committed video's outputs depend on, so that a rerun relabels exactly when they change.

A video is committed under a key built from the segmenter's content (the part model's files and the backbone
content hash it was trained on, or the baseline's reference set), the tracker checkpoint's content when the
job computes tracks with CoTracker3, and the output-affecting configuration: every section but ``runtime``
(where and how wide the job runs) and ``train`` (read only by ``smite train``). A different model or
``--baseline`` into a committed output root relabels; ``runtime.num_actors=4`` does not.
"""

from __future__ import annotations

import errno
import hashlib
import json
from typing import TYPE_CHECKING, Any

import fsspec

from pipeline.batch.shared_tracks import needs_tracks
from pipeline.config import ConfigError, JobConfig

if TYPE_CHECKING:
    from pipeline.batch.segmenters import SegmenterFactory

NOT_OUTPUT_AFFECTING = ("runtime", "train")
"""Configuration sections that do not change a segmentation's outputs."""

_CHUNK = 1 << 20


def content_hash(uri: str) -> str:
    """SHA-256 (hex) of a file's bytes, or of a folder's files (relative path and bytes of each, in path order).

    Raises:
        FileNotFoundError: nothing at ``uri``.
    """
    fs, base = fsspec.core.url_to_fs(str(uri))
    base = base.rstrip("/")
    if not fs.exists(base):
        raise FileNotFoundError(errno.ENOENT, "not found", uri)
    files = [base] if fs.isfile(base) else sorted(fs.find(base))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path[len(base):].encode() + b"\0")
        with fs.open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def output_settings(config: JobConfig) -> dict[str, Any]:
    """The configuration minus the sections in :data:`NOT_OUTPUT_AFFECTING`, as plain JSON values."""
    return {k: v for k, v in config.model_dump(mode="json").items() if k not in NOT_OUTPUT_AFFECTING}


def segmenter_fingerprint(factory: SegmenterFactory) -> Any:
    """The factory's ``fingerprint()`` (content hashes of what it loads); its ``repr`` for factories without one.

    Raises:
        ConfigError: a file the segmenter loads cannot be read (e.g. no part model at its path).
    """
    fingerprint = getattr(factory, "fingerprint", None)
    try:
        return fingerprint() if callable(fingerprint) else repr(factory)
    except OSError as error:
        raise ConfigError(f"{error.filename}: cannot read the segmenter's files ({error.strerror})") from None


def tracker_fingerprint(config: JobConfig) -> str | None:
    """Content hash of the CoTracker3 checkpoint when the job computes tracks with it, else None.

    Raises:
        ConfigError: the checkpoint file cannot be read.
    """
    tracker = config.tracker
    if not needs_tracks(config) or tracker.kind != "cotracker3" or tracker.checkpoint is None:
        return None
    try:
        return content_hash(tracker.checkpoint)
    except OSError as error:
        raise ConfigError(
            f"tracker.checkpoint: {tracker.checkpoint}: cannot read ({error.strerror or 'not found'})"
        ) from None


def commit_key(config: JobConfig, factory: SegmenterFactory) -> str:
    """The commit key of a job (see the module docstring): 32 hex digits of a SHA-256."""
    key = {
        "segmenter": segmenter_fingerprint(factory),
        "tracker_checkpoint": tracker_fingerprint(config),
        "config": output_settings(config),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
