"""Write the synthetic part-segmentation benchmark: one self-contained dataset per (kind, granularity).

Layout of ``<out_dir>/<kind>_<granularity>/``::

    references/images/000.png ...   RGB reference images (different instances than the videos)
    references/masks/000.png ...    single-channel uint8 label maps 0..P-1, same stem as the image
    references/parts.txt            part names, one per line, background first
    videos/<kind>_00.mp4 ...        the test videos (identical files for both granularities of a kind)
    gt/<kind>_00/                   SMITE-50 ground truth (pipeline.evaluation.smite50), DENSE: every frame annotated
    dataset.json                    kind, granularity, parts, videos, seed, size, num_frames, fps, instances

Every image, mask and ground-truth PNG is a pure function of ``seed`` (and the other arguments): two runs
with the same library versions write identical bytes (other NumPy/libm builds may round a boundary pixel
differently). The MP4 bytes also depend on the encoder build (libx264 version) used by
:func:`pipeline.io.video.write_video`. Each reference and each video draws its instance, pose and scene from its
own random stream keyed by (seed, kind, role, index), so references and test videos never share an instance,
and a kind's data do not depend on which other kinds are generated.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.smite50 import write_ground_truth
from pipeline.io.references import write_reference_set
from pipeline.io.video import write_video
from pipeline.synth.procedural import find_kinds
from pipeline.synth.scene import background_texture, random_pose, random_scene, render, render_video
from pipeline.synth.shapes import KINDS, ObjectKind
from smite_ops.errors import InputError

GRANULARITIES = ("fine", "coarse")
FPS = 24.0
_REFERENCE, _VIDEO = 0, 1


class SynthError(InputError):
    """Arguments the synthetic benchmark cannot be generated with (a count or size out of range)."""


def stream(seed: int, kind: str, role: int, index: int) -> np.random.Generator:
    """The random stream of one reference (``role=0``) or video (``role=1``) of ``kind``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(kind.encode()), role, index)))


def _reference(kind: ObjectKind, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """One reference: ``(rgb (S, S, 3) uint8, fine labels (S, S) uint8, instance)``; no occluder."""
    instance = kind.sample_instance(rng)
    rgb, labels = render(kind, instance, random_pose(kind, rng), background_texture(rng, size)[:size, :size])
    return rgb, labels, instance


def _write_dataset(
    folder: Path,
    kind: ObjectKind,
    granularity: str,
    references: list[tuple[np.ndarray, np.ndarray, Any]],
    videos: dict[str, tuple[Path, np.ndarray, Any]],
    meta: dict[str, Any],
) -> None:
    """Write one (kind, granularity) dataset; ``videos`` maps id -> (encoded mp4, fine labels, instance)."""
    parts = kind.fine_parts if granularity == "fine" else kind.coarse_parts
    mapping = (
        np.arange(len(parts), dtype=np.uint8) if granularity == "fine" else np.asarray(kind.fine_to_coarse, np.uint8)
    )
    write_reference_set(
        str(folder / "references"),
        list(parts),
        [rgb for rgb, _, _ in references],
        [mapping[lab] for _, lab, _ in references],
    )
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    for video_id, (mp4, labels, _) in videos.items():
        target = folder / "videos" / f"{video_id}.mp4"
        if mp4 != target:
            shutil.copyfile(mp4, target)
        write_ground_truth(folder / "gt" / video_id, range(len(labels)), mapping[labels], len(parts))
    dataset = {
        "kind": kind.name,
        "granularity": granularity,
        "parts": list(parts),
        "videos": list(videos),
        **meta,
        "instances": {
            "references": [asdict(instance) for _, _, instance in references],
            "videos": {video_id: asdict(instance) for video_id, (_, _, instance) in videos.items()},
        },
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")


def generate_benchmark(
    out_dir: str | Path,
    seed: int = 0,
    size: int = 256,
    num_references: int = 10,
    videos_per_kind: int = 3,
    num_frames: int = 48,
    kinds: Sequence[str] | None = None,
) -> list[Path]:
    """Generate the synthetic benchmark (see the module docstring for the layout).

    Args:
        out_dir: local folder; created if missing. Dataset folders of the same names are deleted first.
        seed: master seed; everything but the MP4 bytes is a pure function of the arguments.
        size: image and video side S in pixels (square, >= 32).
        num_references: reference images per kind (>= 1).
        videos_per_kind: test videos per kind (>= 1), ids ``<kind>_00``, ``<kind>_01``, ...
        num_frames: frames per video T (>= 2); every frame has ground truth.
        kinds: names of :func:`pipeline.synth.procedural.find_kind`: ``car``, ``face``, ``horse`` (the default,
            in that order), the held-out kinds ``heldout-a`` .. ``heldout-d`` or ``generic-<index>``.

    Returns:
        The dataset folders written, ``<out_dir>/<kind>_<granularity>``, fine before coarse per kind.

    Raises:
        UnknownKindError: an unknown kind.
        SynthError: an out-of-range count or size.
    """
    by_name = find_kinds(list(KINDS) if kinds is None else list(kinds))
    if size < 32 or num_references < 1 or videos_per_kind < 1 or num_frames < 2:
        raise SynthError(
            f"generate_benchmark: need size >= 32, num_references >= 1, videos_per_kind >= 1, num_frames >= 2; got "
            f"size={size}, num_references={num_references}, videos_per_kind={videos_per_kind}, num_frames={num_frames}"
        )
    meta = {"seed": seed, "size": size, "num_frames": num_frames, "fps": FPS}
    written = []
    for name, kind in by_name.items():
        references = [_reference(kind, stream(seed, name, _REFERENCE, index), size) for index in range(num_references)]
        for granularity in GRANULARITIES:
            shutil.rmtree(Path(out_dir) / f"{name}_{granularity}", ignore_errors=True)
        first = Path(out_dir) / f"{name}_{GRANULARITIES[0]}"
        (first / "videos").mkdir(parents=True, exist_ok=True)
        videos: dict[str, tuple[Path, np.ndarray, Any]] = {}
        for index in range(videos_per_kind):
            rng = stream(seed, name, _VIDEO, index)
            instance = kind.sample_instance(rng)
            frames, labels = render_video(kind, instance, random_scene(kind, rng, size), num_frames)
            video_id = f"{name}_{index:02d}"
            mp4 = first / "videos" / f"{video_id}.mp4"
            write_video(str(mp4), frames, FPS)
            videos[video_id] = (mp4, labels, instance)
        for granularity in GRANULARITIES:
            folder = Path(out_dir) / f"{name}_{granularity}"
            _write_dataset(folder, kind, granularity, references, videos, meta)
            written.append(folder)
    return written
