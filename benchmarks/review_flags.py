"""How well the review flags (:mod:`pipeline.report.review`) find the frames that are really wrong.

For each video, the committed masks are scored and flagged by :func:`pipeline.report.review.review_video`, and each
frame's mIoU against the dense ground truth (mean over the classes present in the frame's ground truth or
prediction, in %) says which frames are bad: more than ``--margin`` points below the video's median frame
(a frame clearly worse than the rest of its video). Printed per kind (markdown):

* frames, bad frames, the fraction of frames flagged;
* precision and recall of the flags at the default threshold;
* average precision (AP) of the review score as a ranking of bad frames, next to the bad-frame rate (the AP
  of a random order), and the recall of the worst 10 % of frames (by mIoU) among the flagged;
* the same for the old rule (whole-frame mean confidence, background included), for comparison.

Predictions come from either

* the nearest-colour baseline (default): fitted on each dataset's references, its class frequencies go
  through the pipeline's softmax (:func:`pipeline.batch.stitch.native_probabilities`) and mask sink
  (:class:`pipeline.sinks.masks.VideoMaskWriter`) in this process; or
* ``--run OUT --data DATASET``: a committed run (e.g. the demo's ``runs/car_coarse``) and its dataset.

Run::

    .venv/bin/python -m benchmarks.review_flags [--bench /tmp/review_bench] [--size 96] [--frames 48] [--videos 3]
    .venv/bin/python -m benchmarks.review_flags --run demo_out/runs/car_coarse --data demo_out/data/car_coarse

The synthetic benchmark is generated first when missing. The defaults of :class:`pipeline.report.review.ReviewSettings`
were set on the demo's car_00 (tiny model) and the baseline's car videos; rows of other kinds and videos are
held out (``--tuning-videos`` names the tuning videos of a ``--run``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.batch.stitch import native_probabilities
from pipeline.evaluation.smite50 import read_ground_truth
from pipeline.io.references import load_reference_set
from pipeline.io.video import read_frames
from pipeline.report.review import ReviewSettings, review_video
from pipeline.sinks.masks import VideoMaskWriter
from pipeline.sinks.run_outputs import flag_low_confidence, frame_confidence, label_maps
from pipeline.synth import generate_benchmark
from smite_ops.baselines import NearestColourSegmenter

TUNED_ON = ("car",)


@dataclass(frozen=True)
class FrameRows:
    """Per-frame values of a set of videos, concatenated: ``score``/``old_score`` higher = more suspicious."""

    miou: np.ndarray
    bad: np.ndarray
    worst: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    old_score: np.ndarray
    old_flagged: np.ndarray


def frame_miou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(K,)`` per-frame mIoU in % over the classes present in each frame's ground truth or prediction."""
    values = np.empty(len(gt))
    for index, (p, g) in enumerate(zip(pred, gt, strict=True)):
        classes = np.union1d(np.unique(p), np.unique(g))
        values[index] = 100.0 * np.mean([((p == c) & (g == c)).sum() / ((p == c) | (g == c)).sum() for c in classes])
    return values


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ranking frames by ``score`` (descending) for the ``positive`` ones (NaN if none)."""
    if not positive.any():
        return float("nan")
    order = np.argsort(-score, kind="stable")
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def baseline_run(dataset: Path, out: Path) -> None:
    """Label every video of ``dataset`` with the nearest-colour baseline into the masks dataset under ``out``."""
    references = load_reference_set(str(dataset / "references"))
    classifier = NearestColourSegmenter(references.images, references.masks, references.num_parts)
    for video in json.loads((dataset / "dataset.json").read_text())["videos"]:
        frames = read_frames(str(dataset / "videos" / f"{video}.mp4"))
        scores = classifier(torch.from_numpy(frames).permute(0, 3, 1, 2))
        with VideoMaskWriter(str(out), video, references.part_names, "nearest-colour") as writer:
            for index, frame_scores in enumerate(scores):
                probabilities = native_probabilities(frame_scores, *frames.shape[1:3])
                writer.write_frame(index, index / 24.0, probabilities.argmax(0).numpy(), probabilities.numpy())
            writer.commit()


def video_rows(out: Path, dataset: Path, video: str, settings: ReviewSettings, margin: float) -> FrameRows:
    """One video's per-frame truth (mIoU, bad, worst 10 %) and both rules' scores and flags."""
    parts = len((dataset / "references" / "parts.txt").read_text().split())
    gt = read_ground_truth(dataset / "gt" / video, parts)
    frames, pred = label_maps(str(out), video)
    keep = np.isin(frames, gt.frame_indices)
    miou = frame_miou(pred[keep], gt.labels[np.searchsorted(gt.frame_indices, frames[keep])])
    review = review_video(str(out), video, settings, parts)
    _, confidence = frame_confidence(str(out), video)
    worst = miou <= np.quantile(miou, 0.1)
    return FrameRows(miou, miou < np.median(miou) - margin, worst, review.score[keep], review.flagged[keep],
                     1.0 - confidence[keep], flag_low_confidence(confidence)[keep])


def summary(rows: list[FrameRows]) -> dict[str, float]:
    """Counts, precision/recall at the threshold, AP and worst-10 % recall, for the new and the old rule."""
    cat = {name: np.concatenate([getattr(row, name) for row in rows]) for name in FrameRows.__dataclass_fields__}
    bad, result = cat["bad"], {"frames": len(cat["bad"]), "bad": int(cat["bad"].sum())}
    for prefix, score, flagged in (("", cat["score"], cat["flagged"]), ("old_", cat["old_score"], cat["old_flagged"])):
        hits = int((flagged & bad).sum())
        result |= {
            f"{prefix}flagged": float(flagged.mean()),
            f"{prefix}precision": hits / flagged.sum() if flagged.any() else float("nan"),
            f"{prefix}recall": hits / bad.sum() if bad.any() else float("nan"),
            f"{prefix}ap": average_precision(score, bad),
            f"{prefix}worst_recall": float(flagged[cat["worst"]].mean()),
        }
    result["base_rate"] = float(bad.mean())
    return result


def markdown(table: dict[str, dict[str, float]]) -> str:
    """The per-kind table."""
    lines = [
        "| kind | frames | bad | flagged | precision | recall | AP (random) | worst-10% recall "
        "| old rule: flagged / precision / recall / AP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for kind, s in table.items():
        lines.append(
            f"| {kind} | {s['frames']} | {s['bad']} | {100 * s['flagged']:.0f} % | {s['precision']:.2f} | "
            f"{s['recall']:.2f} | {s['ap']:.2f} ({s['base_rate']:.2f}) | {s['worst_recall']:.2f} | "
            f"{100 * s['old_flagged']:.0f} % / {s['old_precision']:.2f} / {s['old_recall']:.2f} / {s['old_ap']:.2f} |"
        )
    return "\n".join(lines)


def _tuning(dataset: str, video: str, tuning_videos: list[str]) -> bool:
    """Whether a video was used to tune the defaults: cars of the synthetic benchmark, or ``--tuning-videos``."""
    return video in tuning_videos or (not tuning_videos and dataset.split("_")[0] in TUNED_ON)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("/tmp/review_bench"), help="synthetic benchmark folder")
    parser.add_argument("--size", type=int, default=96, help="frame side of a generated benchmark (pixels)")
    parser.add_argument("--frames", type=int, default=48, help="frames per generated video")
    parser.add_argument("--videos", type=int, default=3, help="videos per kind of a generated benchmark")
    parser.add_argument("--margin", type=float, default=5.0, help="bad frame: this many mIoU points below median")
    parser.add_argument("--run", type=Path, help="score a committed run instead of the baseline")
    parser.add_argument("--data", type=Path, help="the dataset of --run (ground truth)")
    parser.add_argument("--tuning-videos", nargs="*", default=[], help="videos used for tuning (default: cars)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = ReviewSettings()
    if args.run is not None:
        if args.data is None:
            parser.error("--run needs --data")
        videos = json.loads((args.data / "dataset.json").read_text())["videos"]
        runs = {args.data.name: (args.run, args.data, videos)}
    else:
        if not args.bench.exists():
            generate_benchmark(args.bench, size=args.size, num_frames=args.frames, videos_per_kind=args.videos,
                               num_references=4)
        runs = {}
        for dataset in sorted(path for path in args.bench.iterdir() if (path / "dataset.json").is_file()):
            out = args.bench / "_runs" / dataset.name
            if not (out / "masks").is_dir():
                baseline_run(dataset, out)
            runs[dataset.name] = (out, dataset, json.loads((dataset / "dataset.json").read_text())["videos"])
    table: dict[str, dict[str, float]] = {}
    tuned: list[FrameRows] = []
    held_out: list[FrameRows] = []
    held_out_groups = 0
    for name, (out, dataset, videos) in runs.items():
        for split in (True, False):
            chosen = [video for video in videos if _tuning(name, video, args.tuning_videos) == split]
            if not chosen:
                continue
            rows = [video_rows(out, dataset, video, settings, args.margin) for video in chosen]
            label = f"{name} {', '.join(chosen)}" if args.run is not None else name
            table[label + (" (tuning)" if split else "")] = summary(rows)
            (tuned if split else held_out).extend(rows)
            held_out_groups += not split
    if held_out_groups > 1:
        table["all held out"] = summary(held_out)
    print(f"review flags: threshold {settings.threshold}, window {settings.window}, bad = frame mIoU more than "
          f"{args.margin:g} points below its video's median")
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
