"""The output root of a segmentation job: checks made before any work, the staging area, leftover cleanup.

Every in-progress file of a run lives under ``<out>/_staging/`` (never inside ``masks/`` or ``tracks/``), so
readers of the dataset folders (``masks/*/*.parquet`` from DuckDB, ``pyarrow.dataset``) only ever see committed
partitions. A run holds the root's lock (:mod:`pipeline.sinks.out_lock`), so whatever it finds in ``_staging/`` and
whatever hidden ``*.partial`` / ``*.pending`` file it finds beside the outputs was left by a run that died:
:func:`remove_leftovers` deletes them before the run starts.
"""

from __future__ import annotations

import uuid

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.io.inputs import url_to_fs
from pipeline.sinks.manifest import read_failures
from smite_ops.errors import InputError

STAGING_DIR = "_staging"
"""Folder of the output root that holds the in-progress files of runs."""

_LEFTOVER_FOLDERS = ("masks", "tracks", "overlays", "_manifest", "")
"""Folders (relative to the root; ``""``: the root) where writers stage (or, before ``_staging/``, staged) hidden
files beside their target."""


class OutputError(InputError):
    """The output root cannot hold the job's outputs (not persistent, not writable); one line."""


def output_fs(out: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root path of ``out`` (a local folder or fsspec URL).

    Raises:
        OutputError: an unknown URL scheme, or one whose filesystem package is not installed.
    """
    try:
        fs, base = url_to_fs(str(out))
    except InputError as error:
        raise OutputError(str(error)) from None
    return fs, base.rstrip("/")


def check_persistent(out: str) -> None:
    """Refuse an output root that ends with this process (``memory://``): its outputs would be lost.

    Raises:
        OutputError: one line naming the root.
    """
    fs, _ = output_fs(out)
    if isinstance(fs, MemoryFileSystem):
        raise OutputError(
            f"--out {out}: an in-memory filesystem is gone when this command ends; give a folder or a persistent URL"
        )


def check_writable(out: str) -> None:
    """Prove that ``out`` is writable by creating (with its folder) and deleting a small hidden file in it.

    Raises:
        OutputError: one line naming the root and the operating-system error.
    """
    fs, base = output_fs(out)
    probe = f"{base}/.write-probe-{uuid.uuid4().hex}"
    try:
        fs.makedirs(base, exist_ok=True)
        fs.pipe_file(probe, b"smite")
        fs.rm(probe)
    except OSError as error:
        raise OutputError(f"--out {out}: not writable ({error.strerror or error})") from None


def check_readable(out: str) -> None:
    """Refuse, before any work, a root that does not open or whose ``failures.parquet`` is damaged (one line)."""
    output_fs(out)
    read_failures(out)


def check_output(out: str) -> None:
    """Every check of an output root before a job starts: it opens, its outputs will be kept, its
    ``failures.parquet`` (if any) is readable, and it can be written (the root folder is created)."""
    check_persistent(out)
    read_failures(out)
    check_writable(out)


def check_local_folder(out: str) -> None:
    """Refuse a URL where only a local folder is supported (``smite train --out``).

    Raises:
        OutputError: one line naming the value.
    """
    if "://" in out:
        raise OutputError(f"--out {out}: this command writes to a local folder, not a URL")


def published_path(out: str, *names: str) -> str:
    """A path (filesystem path of ``out``'s filesystem) under the output root, where committed outputs live."""
    _, base = output_fs(out)
    return "/".join([base, *names])


def staging_path(out: str, run_id: str, *names: str) -> str:
    """A path (filesystem path of ``out``'s filesystem) under the run's staging folder ``_staging/<run_id>/``."""
    return published_path(out, STAGING_DIR, run_id, *names)


def remove_leftovers(out: str) -> list[str]:
    """Delete what dead runs left: ``_staging/``, hidden ``*.partial`` / ``*.pending`` files of atomic writers and
    hidden ``.pending-*`` folders (the staging layout of earlier versions).

    Call only while holding the root's lock. Returns the paths removed.
    """
    fs, base = output_fs(out)
    removed = []
    staging = f"{base}/{STAGING_DIR}"
    if fs.isdir(staging):
        removed += fs.ls(staging, detail=False)
        fs.rm(staging, recursive=True)
    for folder in _LEFTOVER_FOLDERS:
        path = f"{base}/{folder}".rstrip("/")
        if not fs.isdir(path):
            continue
        for entry in fs.ls(path, detail=False):
            name = entry.rstrip("/").rpartition("/")[2]
            if name.startswith(".pending-") or (name.startswith(".") and name.endswith((".partial", ".pending"))):
                fs.rm(entry, recursive=True)
                removed.append(entry)
    return removed
