"""SMITE-50 ground-truth layout: read, write, and pick the frames that are evaluated (METHOD.md §1.6, §1.7).

A ground-truth folder (local path or fsspec URL) for one video::

    frames_numbers.txt      first line: the annotated 0-based frame indices, e.g. ``[0, 12, 24]``
                            (text around the brackets and further lines are ignored)
    <frame folder>/         one per annotated frame, natural-sort order; the i-th folder that contains
        01.png 02.png ...   masks belongs to the i-th index. Inside: one binary PNG per foreground part,
                            natural-sorted; the n-th PNG (1-based) is class n; pixel > 127.5 is "on".
                            One extra nesting level is allowed (the first entry, natural-sorted, is used).

Label maps are returned at the PNGs' native size. The reference resizes them (nearest) to 512x512 right
here; we do not, because the working resolution is a model setting: callers resize (nearest) to whatever
their predictions use. Every problem raises :class:`GroundTruthError` with one line naming the file or folder.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

from smite_ops.errors import InputError

FRAMES_FILE = "frames_numbers.txt"
_DIGITS = re.compile(r"(\d+)")


class GroundTruthError(InputError):
    """A ground-truth folder is malformed; the message names the file or folder and the problem."""


@dataclass(frozen=True)
class GroundTruth:
    """Annotated frames of one video.

    Attributes:
        video_id: name of the ground-truth folder.
        frame_indices: annotated 0-based frame indices in file order (from ``frames_numbers.txt``).
        labels: ``(K, H, W)`` uint8 label maps at native size, ``K == len(frame_indices)``;
            0 = background, n = the n-th part PNG.
    """

    video_id: str
    frame_indices: list[int]
    labels: np.ndarray


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that orders digit runs by value: ``frame9`` < ``frame10`` (case-sensitive otherwise)."""
    return tuple(int(token) if index % 2 else token for index, token in enumerate(_DIGITS.split(name)))


def _parse_indices(fs: fsspec.AbstractFileSystem, path: str) -> list[int]:
    try:
        text = fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
        raise GroundTruthError(f"{path}: {FRAMES_FILE} not found") from None
    except UnicodeDecodeError:
        raise GroundTruthError(f"{path}: not UTF-8 text") from None
    first = text.splitlines()[0].strip() if text.strip() else ""
    match = re.search(r"\[([^\]]*)\]", first)
    try:
        if match is None:
            raise ValueError(first)
        indices = [int(token) for token in match.group(1).split(",") if token.strip()]
    except ValueError:
        raise GroundTruthError(f"{path}: first line {first!r} is not a bracketed list of frame indices") from None
    if any(index < 0 for index in indices):
        raise GroundTruthError(f"{path}: negative frame index in {first!r}")
    if len(set(indices)) != len(indices):
        raise GroundTruthError(f"{path}: duplicate frame index in {first!r}")
    return indices


def _entries(fs: fsspec.AbstractFileSystem, folder: str) -> list[dict]:
    return sorted(fs.ls(folder, detail=True), key=lambda entry: natural_key(PurePosixPath(entry["name"]).name))


def _mask_files(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """Natural-sorted part PNGs of one frame folder, looking one level down when the folder has none."""
    entries = _entries(fs, folder)
    pngs = [e["name"] for e in entries if e["type"] == "file" and e["name"].lower().endswith(".png")]
    if not pngs and entries and entries[0]["type"] == "directory":
        nested = _entries(fs, entries[0]["name"])
        pngs = [e["name"] for e in nested if e["type"] == "file" and e["name"].lower().endswith(".png")]
    return pngs


def _read_binary(fs: fsspec.AbstractFileSystem, path: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(fs.cat_file(path))) as image:
            return np.asarray(image.convert("L")) > 127.5
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise GroundTruthError(f"{path}: unreadable PNG ({err.__class__.__name__})") from None


def _label_map(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool part masks -> ``(H, W)`` uint8 labels; overlaps go to the smaller-area mask.

    Masks are visited by increasing area (ties: lower class first) and a pixel claimed by an earlier mask
    is removed from later ones; uncovered pixels are background (0).
    """
    claimed = np.zeros(masks.shape[1:], dtype=bool)
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for part in np.argsort(masks.sum(axis=(1, 2)), kind="stable"):
        own = masks[part] & ~claimed
        labels[own] = part + 1
        claimed |= own
    return labels


def read_ground_truth(gt_dir: str | Path, num_parts: int | None = None) -> GroundTruth:
    """Read one video's SMITE-50 ground-truth folder (see the module docstring for the layout).

    Args:
        gt_dir: the folder (local path or fsspec URL); its name is the ``video_id``.
        num_parts: when given, the class count P including background; every frame folder must then hold
            exactly ``P - 1`` part PNGs.

    Returns:
        :class:`GroundTruth` with ``(K, H, W)`` uint8 labels at the PNGs' native size (no resize).

    Raises:
        GroundTruthError: missing or unparsable ``frames_numbers.txt``, index count != number of frame folders
            with masks, frame folders with different numbers of PNGs, PNG count != ``num_parts - 1``,
            an unreadable PNG, or PNGs of different sizes.
    """
    fs, base = fsspec.core.url_to_fs(str(gt_dir))
    base = base.rstrip("/")
    if not fs.isdir(base):
        raise GroundTruthError(f"{gt_dir}: ground-truth folder not found")
    indices = _parse_indices(fs, f"{base}/{FRAMES_FILE}")
    folders = [(e["name"], _mask_files(fs, e["name"])) for e in _entries(fs, base) if e["type"] == "directory"]
    folders = [(folder, pngs) for folder, pngs in folders if pngs]
    if not folders:
        raise GroundTruthError(f"{gt_dir}: no frame folder holds part PNGs")
    if len(folders) != len(indices):
        raise GroundTruthError(
            f"{gt_dir}: {FRAMES_FILE} lists {len(indices)} frames but {len(folders)} frame folders hold masks"
        )
    expected = len(folders[0][1]) if num_parts is None else num_parts - 1
    shape: tuple[int, ...] | None = None
    labels = []
    reason = f"{folders[0][0]} has {expected}" if num_parts is None else f"num_parts={num_parts} needs {expected}"
    for folder, pngs in folders:
        if len(pngs) != expected:
            raise GroundTruthError(f"{folder}: {len(pngs)} part PNGs, but {reason}")
        masks = []
        for png in pngs:
            mask = _read_binary(fs, png)
            shape = shape or mask.shape
            if mask.shape != shape:
                raise GroundTruthError(
                    f"{png}: size {mask.shape[1]}x{mask.shape[0]} differs from {shape[1]}x{shape[0]} of the first PNG"
                )
            masks.append(mask)
        labels.append(_label_map(np.stack(masks)))
    return GroundTruth(video_id=PurePosixPath(base).name, frame_indices=indices, labels=np.stack(labels))


def write_ground_truth(gt_dir: str | Path, frame_indices: Sequence[int], labels: np.ndarray, num_parts: int) -> None:
    """Write label maps in the SMITE-50 layout; :func:`read_ground_truth` reads them back identically.

    Frame folders are ``00000``, ``00001``, ... (natural sort == numeric order) and each holds the full set
    ``01.png`` .. ``{num_parts-1:02d}.png`` of 0/255 greyscale PNGs, empty masks included, so class indices
    never shift.

    Args:
        gt_dir: destination folder (local path or fsspec URL); created if missing. Write into a new or empty
            folder: frame folders already there are not removed and would be read back too.
        frame_indices: the K annotated 0-based frame indices, distinct.
        labels: ``(K, H, W)`` integer label maps with values in ``0..num_parts-1``.
        num_parts: class count P including background (>= 2).

    Raises:
        GroundTruthError: inconsistent shapes, counts or label values.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(frame_indices):
        raise GroundTruthError(
            f"{gt_dir}: labels must be (K, H, W) integers with K={len(frame_indices)}, "
            f"got {labels.dtype} {labels.shape}"
        )
    if num_parts < 2 or (labels.size and (labels.min() < 0 or labels.max() >= num_parts)):
        raise GroundTruthError(f"{gt_dir}: labels must lie in 0..{num_parts - 1} with num_parts >= 2")
    if len(set(frame_indices)) != len(frame_indices) or any(index < 0 for index in frame_indices):
        raise GroundTruthError(f"{gt_dir}: frame indices must be distinct and >= 0")
    fs, base = fsspec.core.url_to_fs(str(gt_dir))
    base = base.rstrip("/")
    fs.makedirs(base, exist_ok=True)
    fs.pipe_file(f"{base}/{FRAMES_FILE}", f"[{', '.join(str(int(i)) for i in frame_indices)}]\n".encode())
    for position, frame in enumerate(labels):
        folder = f"{base}/{position:05d}"
        fs.makedirs(folder, exist_ok=True)
        for part in range(1, num_parts):
            buffer = io.BytesIO()
            Image.fromarray(np.where(frame == part, 255, 0).astype(np.uint8), mode="L").save(
                buffer, format="PNG", compress_level=1
            )
            fs.pipe_file(f"{folder}/{part:02d}.png", buffer.getvalue())


def reference_kept_frames(loaded: Sequence[int], annotated: Sequence[int]) -> list[int]:
    """The loaded frame indices the reference keeps after its truncation to a multiple of 4 (METHOD.md §1.7).

    With ``m = max(annotated)`` and ``cand`` the sorted loaded indices ``> m``: when more than 3 exist, try
    ``cand[3], cand[2], cand[1], cand[0]`` and cut after the first ``c`` whose frame count is a multiple of 4.
    The reference counts frames as the native index ``c + 1``, which equals the number of kept frames only
    when every frame from 0 is loaded. With sub-sampled or offset loading no candidate may pass; the
    reference then still filters its index list to ``<= cand[0]`` but leaves the frames uncut (a latent bug),
    and this function returns that filtered index list.
    """
    if not annotated:
        return list(loaded)
    last = max(annotated)
    cand = sorted(index for index in loaded if index > last)
    if len(cand) <= 3:
        return list(loaded)
    cut = next((c for c in (cand[3], cand[2], cand[1], cand[0]) if (c + 1) % 4 == 0), cand[0])
    return [index for index in loaded if index <= cut]


def evaluation_frames(
    loaded: Sequence[int], annotated: Sequence[int], mode: Literal["all", "reference"] = "all"
) -> list[int]:
    """Annotated frame indices whose metrics count, sorted ascending (METHOD.md §1.7).

    ``"all"`` (our default) evaluates every annotated frame that was loaded. ``"reference"`` first applies
    the reference's truncation (:func:`reference_kept_frames`) and evaluates annotated frames among the kept
    ones. The truncation exists only because the reference's guidance loop slices videos into 4-frame groups;
    our windows handle any length, so we neither cut videos nor inherit its native-index quirk. Since every
    cut lies after the last annotated frame, both modes select the same frames; ``"reference"`` is kept so a
    comparison run states and checks exactly what the reference did.

    Args:
        loaded: 0-based native indices of the frames that were decoded and segmented.
        annotated: 0-based native indices that have ground truth.
        mode: ``"all"`` or ``"reference"``.
    """
    if mode not in ("all", "reference"):
        raise ValueError(f"evaluation_frames: mode must be 'all' or 'reference', got {mode!r}")
    kept = reference_kept_frames(loaded, annotated) if mode == "reference" else loaded
    return sorted(set(kept) & set(annotated))
