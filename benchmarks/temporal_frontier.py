"""Cost/quality frontier of temporal consistency on the synthetic benchmark (prints a table and draws a PNG).

Every candidate runs the pipeline's two phases (ARCHITECTURE.md §4): phase A segments windows of 16 frames
unguided and stitches them into ``S_ref``; phase B refines each window against ``S_ref`` and the shared point
tracks with a :class:`smite_ops.temporal.TemporalRefiner` mode, and the refined windows are stitched again.
Candidates differ in the phase-B mode (``filter``: zero-UNet track-vote filter; ``fast``: filter, then a few
guided latent updates toward the filtered scores, then the filter; ``full``: the reference's guided loop), the
window overlap (phase A and B share windows), the guidance schedule, the filter's spread, and the tracks: a
point per score cell seeded every 8 frames (today's pattern) unless the row says otherwise.

Columns, per kind (mean over its videos): mIoU (%, background included), DAVIS boundary F, flicker (ground-
truth-consistent label flicker, lower is better), flicker vs unguided (ratio to the unguided row's), share of
the flicker reduction of today's guided default (``full (today)``), UNet frame-forward equivalents per output
frame (counted while running: frames through the UNet, a backward counting two) and, in brackets, on long
videos (the same per window frame, times the ``window / (window - overlap)`` window frames of each output
frame), tracker point-frames per output frame (``VideoTracks.point_frames``: points x frames of every tracker
call) with the reference's dense per-frame pattern for scale (one tracker run per frame of every 16-frame
window at stride 8, a point per map cell), and wall seconds (tracking + both phases, 1 thread).

Models: the tiny preset trained on 8 references of each kind's coarse parts (``ablation.prepare``; 128 px
references, 64 px working resolution so that today's guided default fits a shared CPU), cached under ``--cache``
so reruns skip training. The candidates were designed and tuned on ``car`` only; ``face``, ``horse`` and the
procedural kinds ``generic-7001`` and ``generic-7002`` (outside the tiny backbone's pretraining layouts) are held
out. Test videos have 16 frames, one window: every candidate sees the same window, and overlap only shows in the
long-video cost. The last table pairs every row with today's guided default on the same videos: mean
differences of mIoU and F with 95 % Student-t intervals, and whether the row holds issue 16's bar on the kind.

Run from the repository root (about 13 minutes of one core per kind, training included)::

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.temporal_frontier --cache /tmp/frontier

``--kinds car --videos 1 --only filter`` iterates on one video; ``--json`` keeps the rows, and ``--merge`` prints
and plots the rows of several runs (e.g. one process per kind) without running anything.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.stats
import torch

from benchmarks.ablation import TRACK_WEIGHT, WINDOW, VideoCase, load_cases, prepare, video_tracks
from pipeline.batch.stitch import ScoreStitcher, native_labels
from pipeline.batch.windows import Window, plan_windows
from pipeline.config import load_config
from pipeline.method.backbone_source import load_job_backbone
from pipeline.method.settings import map_options
from pipeline.synth.generate import generate_benchmark
from smite_ops.guidance import GuidanceSettings, GuidedSegmenter
from smite_ops.metrics import davis_f, gt_consistent_flicker, miou
from smite_ops.part_model import load_part_model
from smite_ops.segmentation import SegmentSettings, WindowSegmenter
from smite_ops.temporal import TemporalMode, TemporalRefiner
from smite_ops.tracking.long_video import VideoTracks, slice_tracks

TODAY = GuidanceSettings(track_weight=TRACK_WEIGHT, track_loss="soft")  # the shipped guided default before issue 16
REFERENCE_RUNS_PER_OUTPUT_FRAME = 16 * 16 / 8  # per 16-frame window at stride 8: 16 runs x 16 frames, 8 new frames


@dataclass(frozen=True)
class Candidate:
    """One point of the frontier.

    Attributes:
        name: row label.
        mode: phase-B mode, None for the unguided row (phase A only).
        overlap: window overlap of both phases (frames).
        tracks: ``(grid, every)``: a point every ``grid`` score cells (per axis), a new grid every ``every`` frames.
        settings: guidance settings of the ``fast`` and ``full`` modes.
        radius: the filter's spread in score cells.
        flips_only: the filter corrects only the cells whose label the vote changes.
        refilter: ``fast`` mode filters the guided scores again.
    """

    name: str
    mode: TemporalMode | None
    overlap: int
    tracks: tuple[int, int] = (1, 16)
    settings: GuidanceSettings | None = None
    radius: int = 0
    flips_only: bool = False
    refilter: bool = True


def candidates() -> list[Candidate]:
    """The frontier's candidates: the unguided baseline first, then cheapest first, today's guided default before
    the costliest new point (so that an interrupted run still has its reference rows)."""
    fast = replace(TODAY, timesteps=(104, 103), iterations=3)
    return [
        Candidate("unguided", None, 8, tracks=(1, 8)),
        Candidate("filter", "filter", 0, tracks=(1, 8)),
        Candidate("filter, tracks every 16", "filter", 0),
        Candidate("filter, tracks every 16, radius 1", "filter", 0, radius=1),
        Candidate("filter, half grid, radius 1", "filter", 0, tracks=(2, 8), radius=1),
        Candidate("fast: filter + 1 step x 3", "fast", 0, tracks=(1, 8), settings=fast),
        Candidate("fast, half grid, radius 1", "fast", 0, tracks=(2, 8), settings=fast, radius=1),
        Candidate("filter, flips only", "filter", 0, tracks=(1, 8), flips_only=True),
        Candidate("fast, flips only", "fast", 0, tracks=(1, 8), settings=fast, flips_only=True),
        Candidate("fast, no refilter", "fast", 0, tracks=(1, 8), settings=fast, refilter=False),
        Candidate("fast 1 step x 5, no refilter", "fast", 0, tracks=(1, 8), settings=replace(fast, iterations=5),
                  refilter=False),
        Candidate("guided loop 1 step x 3", "full", 0, tracks=(1, 8), settings=fast),
        Candidate("full (today)", "full", 8, tracks=(1, 8), settings=TODAY),
        Candidate("fast: filter + 3 steps x 5", "fast", 0, tracks=(1, 8), settings=replace(TODAY, iterations=5)),
    ]


@dataclass
class Case:
    """A test video with its tracks of each ``(grid, every)`` pattern and their tracking seconds."""

    video: VideoCase
    spacing: int  # pixels per score cell
    tracks: dict[tuple[int, int], VideoTracks] = field(default_factory=dict)
    track_seconds: dict[tuple[int, int], float] = field(default_factory=dict)

    def tracks_for(self, pattern: tuple[int, int]) -> VideoTracks:
        """Lucas-Kanade tracks of ``pattern`` (computed on first use)."""
        if pattern not in self.tracks:
            started = time.perf_counter()
            grid, every = pattern
            self.tracks[pattern] = video_tracks(self.video.frames, self.spacing * grid, every)
            self.track_seconds[pattern] = time.perf_counter() - started
        return self.tracks[pattern]


@dataclass
class PhaseA:
    """Stitched unguided scores ``(T, P, s, s)`` of one video and what they cost."""

    scores: torch.Tensor
    forwards: int
    seconds: float


def stitch(windows: list[Window], num_frames: int, window_scores: list[torch.Tensor]) -> torch.Tensor:
    """Blend per-window scores into ``(T, P, s, s)`` float32 (``pipeline.batch.stitch``)."""
    stitcher = ScoreStitcher(windows, num_frames)
    frames: dict[int, torch.Tensor] = {}
    for window, scores in zip(windows, window_scores, strict=True):
        frames.update(stitcher.add(window, scores))
    return torch.stack([frames[index] for index in range(num_frames)])


def phase_a(video: VideoCase, windows: list[Window], segmenter: WindowSegmenter, seed: int) -> PhaseA:
    """Unguided scores of every window, stitched."""
    started, before = time.perf_counter(), segmenter.runner.frame_forwards
    scores = [segmenter(video.frames[w.start : w.stop], seed=seed + w.start) for w in windows]
    stitched = stitch(windows, len(video.frames), scores)
    return PhaseA(stitched, segmenter.runner.frame_forwards - before, time.perf_counter() - started)


def phase_b(
    case: Case, candidate: Candidate, windows: list[Window], reference: torch.Tensor, segmenter: WindowSegmenter,
    seed: int,
) -> torch.Tensor:
    """The candidate's refined, stitched scores ``(T, P, s, s)``."""
    frames = case.video.frames
    count, _, height, width = frames.shape
    tracks = case.tracks_for(candidate.tracks)
    guided = GuidedSegmenter(segmenter, candidate.settings) if candidate.settings is not None else None
    voting_window = (candidate.settings or TODAY).voting_window
    refiner = TemporalRefiner(candidate.mode or "filter", guided, voting_window, candidate.radius,
                              candidate.flips_only, candidate.refilter)
    refined = [
        refiner(frames[w.start : w.stop], reference[w.start : w.stop], slice_tracks(tracks, w.start, w.stop),
                (height, width), seed + w.start)
        for w in windows
    ]
    return stitch(windows, count, refined)


@dataclass
class Result:
    """One candidate on one kind (means over its videos; ``per_video`` holds each video's ``(mIoU, F, flicker)``
    in the kind's video order, the same for every candidate, for paired comparisons)."""

    candidate: str
    kind: str
    miou: float
    f: float
    flicker: float
    forwards_per_frame: float
    long_video_forwards_per_frame: float
    point_frames_per_frame: float
    reference_point_frames_per_frame: float
    seconds: float
    per_video: list[tuple[float, float, float]]


def run_kind(kind: str, args: argparse.Namespace, rows: list[Candidate]) -> list[Result]:
    """Every candidate on the videos of one kind."""
    dataset, model_dir = cached_model(kind, args)
    config = load_config("tiny")
    backbone = load_job_backbone(config.model, config.runtime)
    part_model = load_part_model(str(model_dir), expect_base_hash=backbone.content_hash)
    classes = len(part_model.part_names)
    settings = SegmentSettings(resolution=part_model.resolution, hierarchical=False)
    segmenter = WindowSegmenter(backbone, part_model, settings, options=map_options(config))
    spacing = max(1, args.size * 8 // part_model.resolution)  # one point per map cell, as the reference
    cases = [Case(video, spacing) for video in load_cases(dataset, classes, spacing)[: args.videos]]
    cache: dict[tuple[int, int], PhaseA] = {}
    results = []
    for candidate in rows:
        scores, forwards, point_frames, reference_work, seconds, frames_total, window_frames = [], 0, 0, 0.0, 0.0, 0, 0
        for index, case in enumerate(cases):
            count, _, height, width = case.video.frames.shape
            windows = plan_windows(count, WINDOW, candidate.overlap)
            if (index, candidate.overlap) not in cache:
                cache[index, candidate.overlap] = phase_a(case.video, windows, segmenter, args.seed)
            first = cache[index, candidate.overlap]
            started, before = time.perf_counter(), segmenter.runner.frame_forwards
            refined = first.scores
            if candidate.mode is not None:
                refined = phase_b(case, candidate, windows, first.scores, segmenter, args.seed)
                point_frames += case.tracks_for(candidate.tracks).point_frames
                seconds += case.track_seconds[candidate.tracks]
            seconds += first.seconds + time.perf_counter() - started
            forwards += first.forwards + segmenter.runner.frame_forwards - before
            cells = (height // spacing) * (width // spacing)
            reference_work += cells * REFERENCE_RUNS_PER_OUTPUT_FRAME * count
            frames_total += count
            window_frames += sum(w.length for w in windows)
            labels = native_labels(refined, height, width).numpy()
            truth = case.video.gt
            result = miou(labels, truth, classes)
            scores.append((result.reference, davis_f(labels, truth), gt_consistent_flicker(labels, truth)))
        m, f, flicker = np.mean(scores, axis=0)
        long_video = forwards / window_frames * WINDOW / (WINDOW - candidate.overlap)  # window frames per frame
        results.append(Result(candidate.name, kind, float(m), float(f), float(flicker), forwards / frames_total,
                              long_video, point_frames / frames_total, reference_work / frames_total, seconds,
                              [tuple(map(float, video)) for video in scores]))
        print_row(results[-1], unguided_row(results, kind), row_named(results, kind, "full (today)"))
    return results


def cached_model(kind: str, args: argparse.Namespace) -> tuple[Path, Path]:
    """The kind's 32-frame test set and trained model under ``args.cache/<kind>`` (trained on first use)."""
    folder = Path(args.cache) / kind
    marker = folder / "DONE"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        options = argparse.Namespace(data=None, model=None, kind=kind, videos=args.videos, frames=args.frames,
                                     size=args.size, resolution=args.resolution, epochs=args.epochs)
        dataset, model = prepare(options, folder)
        marker.write_text(f"{dataset}\n{model}\n")
    dataset, model = marker.read_text().split()
    videos = folder / f"videos-{args.frames}"
    if not (videos / "DONE").exists():  # references do not depend on the frame count: the model stays valid
        generate_benchmark(videos, seed=0, size=args.size, num_references=8, videos_per_kind=args.videos,
                           num_frames=args.frames, kinds=[kind])
        (videos / "DONE").write_text("")
    return videos / Path(dataset).name, Path(model)


def row_named(results: list[Result], kind: str, candidate: str) -> Result | None:
    """The row of ``candidate`` on ``kind``, or None when it was not run."""
    return next((r for r in results if r.kind == kind and r.candidate == candidate), None)


def unguided_row(results: list[Result], kind: str) -> Result:
    """The unguided row of ``kind``, the baseline of its ratios (every run has one; :func:`merged_rows` checks)."""
    row = row_named(results, kind, "unguided")
    if row is None:
        raise ValueError(f"kind {kind!r} has no unguided row")
    return row


def merged_rows(paths: list[str], kinds: list[str]) -> list[Result]:
    """The rows of several ``--json`` files in ``kinds`` order (others last), keeping the first file's copy of a
    repeated (kind, candidate); exits with a one-line error on a file that is not such a file or on a kind
    without its unguided row (the baseline of its ratios)."""
    first: dict[tuple[str, str], Result] = {}
    for path in paths:
        try:
            rows = [Result(**row) for row in json.loads(Path(path).read_text())]
        except (OSError, ValueError, TypeError) as error:
            raise SystemExit(f"{path}: cannot read temporal_frontier rows from it ({error})") from None
        for row in rows:
            first.setdefault((row.kind, row.candidate), row)
    results = sorted(first.values(), key=lambda r: kinds.index(r.kind) if r.kind in kinds else len(kinds))
    for kind in dict.fromkeys(r.kind for r in results):
        try:
            unguided_row(results, kind)
        except ValueError as error:
            raise SystemExit(f"{' '.join(paths)}: {error} (the baseline of its ratios)") from None
    return results


HEADER = ("| candidate | kind | mIoU | F | flicker | flicker vs unguided | share of today's reduction | "
          "UNet frame-fwd / frame (long videos) | tracker pt-frames / frame (reference) | s |")


def share_of_today(row: Result, unguided: Result, today: Result | None) -> float | None:
    """The fraction of today's flicker reduction (unguided -> ``full (today)``) that ``row`` keeps; None without
    today's row or when today's guidance did not lower flicker."""
    if today is None or unguided.flicker <= today.flicker:
        return None
    return (unguided.flicker - row.flicker) / (unguided.flicker - today.flicker)


def print_row(row: Result, unguided: Result, today: Result | None) -> None:
    """One table row; the share column needs today's row (printed last, so rows before it show n/a)."""
    ratio = row.flicker / unguided.flicker if unguided.flicker else float("nan")
    share = share_of_today(row, unguided, today)
    print(f"| {row.candidate} | {row.kind} | {row.miou:.2f} | {row.f:.3f} | {row.flicker:.4f} | {ratio:.2f} | "
          f"{'n/a' if share is None else f'{share:.0%}'} | "
          f"{row.forwards_per_frame:.1f} ({row.long_video_forwards_per_frame:.0f}) | "
          f"{row.point_frames_per_frame:.0f} "
          f"({row.reference_point_frames_per_frame:.0f}) | {row.seconds:.0f} |", flush=True)


PAIRED_HEADER = ("| candidate | kind | videos | mIoU - today's (95% CI) | F - today's (95% CI) | "
                 "share of today's reduction | holds the bar |")
BAR_SHARE = 0.8  # issue 16: keep >= 80 % of today's flicker reduction at equal or better mIoU and F


def paired_difference(differences: np.ndarray, digits: int) -> tuple[str, float]:
    """Mean of per-video differences with its 95 % Student-t interval as text, and the interval's upper end
    (the mean itself for a single video)."""
    mean = float(differences.mean())
    if len(differences) < 2:
        return f"{mean:+.{digits}f}", mean
    half = float(scipy.stats.t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / np.sqrt(len(differences)))
    return f"{mean:+.{digits}f} [{mean - half:+.{digits}f}, {mean + half:+.{digits}f}]", mean + half


def print_paired(results: list[Result]) -> None:
    """Every row against ``full (today)`` on the same videos of its kind. A row holds the bar on a kind when it
    keeps >= 80 % of today's flicker reduction and neither its mIoU nor its F is significantly lower (the 95 %
    interval of the paired difference reaches 0)."""
    print("\n## paired with today's guided default on the same videos\n" + PAIRED_HEADER)
    print("|---" * (PAIRED_HEADER.count("|") - 1) + "|")
    for row in results:
        today = row_named(results, row.kind, "full (today)")
        if today is None or row is today or row.candidate == "unguided":
            continue
        differences = np.array(row.per_video) - np.array(today.per_video)
        miou_text, miou_upper = paired_difference(differences[:, 0], 2)
        f_text, f_upper = paired_difference(differences[:, 1], 3)
        share = share_of_today(row, unguided_row(results, row.kind), today)
        holds = share is not None and share >= BAR_SHARE and miou_upper >= 0 and f_upper >= 0
        print(f"| {row.candidate} | {row.kind} | {len(differences)} | {miou_text} | {f_text} | "
              f"{'n/a' if share is None else f'{share:.0%}'} | {'yes' if holds else 'no'} |")


def plot(results: list[Result], path: Path) -> None:
    """Flicker reduction vs UNet cost, one series per kind (log cost axis; unguided drawn at cost 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for kind in sorted({r.kind for r in results}):
        rows = [r for r in results if r.kind == kind]
        unguided = unguided_row(results, kind).flicker
        costs = [r.forwards_per_frame for r in rows]
        reductions = [100 * (1 - r.flicker / unguided) for r in rows]
        axes.scatter(costs, reductions, label=kind)
        for row, x, y in zip(rows, costs, reductions, strict=True):
            axes.annotate(row.candidate.split(":")[0].split(",")[0], (x, y), fontsize=6, alpha=0.7)
    axes.set_xscale("log")
    axes.set_xlabel("UNet frame-forward equivalents per output frame")
    axes.set_ylabel("flicker reduction vs unguided (%)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".cache/temporal_frontier", help="datasets and trained models")
    parser.add_argument("--kinds", nargs="+", default=["car", "face", "horse", "generic-7001", "generic-7002"])
    parser.add_argument("--videos", type=int, default=6, help="test videos per kind")
    parser.add_argument("--frames", type=int, default=16, help="frames per test video")
    parser.add_argument("--size", type=int, default=128, help="video size in pixels")
    parser.add_argument("--resolution", type=int, default=64, help="the model's working resolution")
    parser.add_argument("--epochs", type=int, help="training epochs on first use (default: the tiny preset's)")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--only", nargs="*", help="run the unguided row and rows whose name contains a word")
    parser.add_argument("--plot", help="PNG path (default: temporal_frontier.png under --cache)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--merge", nargs="+", help="run nothing: print and plot the rows of these --json files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [c for c in candidates() if c.mode is None or not args.only or any(w in c.name for w in args.only)]
    results: list[Result] = []
    if args.merge:
        results = merged_rows(args.merge, args.kinds)
    else:
        print(HEADER)
        print("|---" * (HEADER.count("|") - 1) + "|")
    for kind in [] if args.merge else args.kinds:
        results += run_kind(kind, args, rows)
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    print("\n## all rows, with the share of today's reduction\n" + HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    for row in results:
        print_row(row, unguided_row(results, row.kind), row_named(results, row.kind, "full (today)"))
    print_paired(results)
    plot_path = Path(args.plot) if args.plot else Path(args.cache) / "temporal_frontier.png"
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot(results, plot_path)
    print(f"plot: {plot_path}")


if __name__ == "__main__":
    main()
