"""Quality benchmark on the synthetic part benchmark: SMITE with the tiny backbone against two baselines.

For every dataset (kind x granularity) of a benchmark folder written by
:func:`pipeline.synth.generate_benchmark`, the harness

1. trains a part model on the dataset's references (:func:`pipeline.training.train.train_part_model`);
2. segments its test videos with :func:`pipeline.batch.sequential.segment_video_file` (label PNGs);
3. labels the same videos with the all-background and the nearest-colour baselines
   (:mod:`smite_ops.baselines`, the latter fitted on the same references);
4. evaluates all three with :func:`pipeline.evaluation.evaluate.evaluate_predictions` at the videos' native size,

and prints a markdown table of mIoU (reference convention, %), DAVIS J and F, and flicker (lower is better)
per dataset, with means per kind and overall. ``--probe`` adds, per dataset, the linear-probe ceiling of the
backbone's features at the job's working resolution (:mod:`benchmarks.feature_probe`) and a table per kind:
smite, the two baselines, the probe and smite's flicker. Run::

    .venv/bin/python -m benchmarks.quality --bench /tmp/synth/a [--quick] [--config tiny] [--set KEY=VALUE ...]
    .venv/bin/python -m benchmarks.quality --bench /tmp/synth/heldout --kinds heldout --size 128 --probe

The benchmark folder is generated first when it does not exist (:mod:`benchmarks.synth_bench`: by default seed
0, the car, face and horse kinds; ``--kinds heldout`` gives the four held-out procedural kinds). ``--quick``
segments only the first video of each dataset (training is as configured).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmarks.feature_probe import PROBE_TIMESTEP, probe_dataset, probe_runner
from benchmarks.synth_bench import add_bench_arguments, dataset_names, ensure_bench_or_exit
from pipeline.batch.sequential import segment_video_file
from pipeline.config import JobConfig, load_config
from pipeline.evaluation.evaluate import EvaluationReport, GroupScores, evaluate_predictions, save_label_maps
from pipeline.io.references import load_reference_set
from pipeline.io.video import read_frames
from pipeline.training.train import train_part_model
from smite_ops.baselines import AllBackgroundSegmenter, NearestColourSegmenter

METHODS = ("smite", "nearest-colour", "all-background")


def _videos(dataset: Path, quick: bool) -> list[str]:
    """The video ids of a dataset (only the first one in quick mode)."""
    ids = json.loads((dataset / "dataset.json").read_text())["videos"]
    return ids[:1] if quick else ids


def _label_with(segmenter: Callable[[Tensor], Tensor], video: Path, out_dir: Path) -> None:
    """Label every frame of ``video`` with a baseline segmenter into the predictions layout."""
    frames = read_frames(str(video))
    scores = segmenter(torch.from_numpy(frames).permute(0, 3, 1, 2))
    save_label_maps(out_dir, video.stem, range(len(frames)), scores.argmax(1).numpy().astype(np.uint8))


def _evaluate(pred_dir: Path, dataset: Path, video_ids: list[str], size: int) -> GroupScores:
    """Mean scores over the given videos of one dataset."""
    rows = []
    for video_id in video_ids:
        report = evaluate_predictions(pred_dir, dataset / "gt" / video_id, num_parts=None, size=size)
        rows += report.videos
    return EvaluationReport(videos=rows, size=size).overall


def run_dataset(dataset: Path, work: Path, config: JobConfig, quick: bool) -> dict[str, GroupScores]:
    """Train, segment and evaluate one dataset; returns the scores of every method."""
    references = load_reference_set(str(dataset / "references"))
    video_ids = _videos(dataset, quick)
    size = int(json.loads((dataset / "dataset.json").read_text())["size"])
    model_dir = work / "models" / dataset.name
    train_part_model(str(dataset / "references"), model_dir, config, progress=False)
    baselines: dict[str, Callable[[Tensor], Tensor]] = {
        "nearest-colour": NearestColourSegmenter(references.images, references.masks, references.num_parts),
        "all-background": AllBackgroundSegmenter(references.num_parts),
    }
    results = {}
    for method in METHODS:
        pred_dir = work / "predictions" / method / dataset.name
        for video_id in video_ids:
            video = dataset / "videos" / f"{video_id}.mp4"
            if method == "smite":
                segment_video_file(str(video), str(model_dir), pred_dir, config, progress=False)
            else:
                _label_with(baselines[method], video, pred_dir)
        results[method] = _evaluate(pred_dir, dataset, video_ids, size)
    return results


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _row(name: str, method: str, scores: GroupScores) -> str:
    cells = [
        _cell(scores.miou_ref, "{:.1f}"), _cell(scores.j, "{:.3f}"), _cell(scores.f, "{:.3f}"),
        _cell(scores.flicker, "{:.4f}"),
    ]
    return f"| {name} | {method} | {scores.videos} | " + " | ".join(cells) + " |"


def _mean(groups: list[GroupScores]) -> GroupScores:
    """Plain mean of group scores (datasets weigh equally)."""
    means = {}
    for name in ("miou_ref", "miou_present", "j", "f", "flicker"):
        values = [getattr(g, name) for g in groups if getattr(g, name) is not None]
        means[name] = float(np.mean(values)) if values else None
    return GroupScores(videos=sum(g.videos for g in groups), frames=sum(g.frames for g in groups), **means)


def _datasets_by_kind(results: dict[str, dict[str, GroupScores]]) -> dict[str, list[str]]:
    """Dataset names grouped by kind (the part of ``<kind>_<granularity>`` before the underscore), in result order."""
    groups: dict[str, list[str]] = {}
    for name in results:
        groups.setdefault(name.split("_")[0], []).append(name)
    return groups


def markdown_table(results: dict[str, dict[str, GroupScores]]) -> str:
    """Rows per dataset and method, then per-kind and overall means over datasets."""
    lines = [
        "| dataset | method | videos | mIoU (%) | J | F | flicker |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for dataset, scores in results.items():
        lines += [_row(dataset, method, scores[method]) for method in METHODS]
    for kind, names in {**_datasets_by_kind(results), "all": list(results)}.items():
        lines += [_row(f"**{kind}**", method, _mean([results[n][method] for n in names])) for method in METHODS]
    return "\n".join(lines)


def kind_table(results: dict[str, dict[str, GroupScores]], probe: dict[str, float]) -> str:
    """Per kind (means over its datasets): mIoU of smite, the baselines and the linear probe; smite's flicker."""
    lines = [
        "| kind | smite mIoU | nearest-colour | all-background | linear probe (ceiling) | smite flicker |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, names in _datasets_by_kind(results).items():
        scores = {method: _mean([results[n][method] for n in names]) for method in METHODS}
        cells = [_cell(scores[method].miou_ref, "{:.1f}") for method in METHODS]
        lines.append(f"| {kind} | {' | '.join(cells)} | {np.mean([probe[n] for n in names]):.1f} | "
                     f"{_cell(scores['smite'].flicker, '{:.4f}')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_bench_arguments(parser)
    parser.add_argument("--work", type=Path, default=Path("/tmp/smite-quality"), help="models and predictions")
    parser.add_argument("--config", default="tiny", help="job configuration preset or YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--datasets", nargs="*", help="dataset folder names (default: all)")
    parser.add_argument("--quick", action="store_true", help="one video per dataset")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--probe", action="store_true", help="add the linear-probe ceiling and a table per kind")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, "-m", "benchmarks.quality", *sys.argv[1:]]))
    ensure_bench_or_exit(parser, args)
    overrides = [*args.overrides, "output.overlays=false"]
    config = load_config(args.config, overrides)
    names = dataset_names(args)
    results, started = {}, time.perf_counter()
    for name in names:
        began = time.perf_counter()
        results[name] = run_dataset(args.bench / name, args.work, config, args.quick)
        print(f"{name}: smite mIoU {results[name]['smite'].miou_ref:.1f} ({time.perf_counter() - began:.0f} s)")
    print(f"\nconfig {args.config} (digest {config.digest()}), total {time.perf_counter() - started:.0f} s\n")
    print(markdown_table(results))
    if args.probe:
        runner = probe_runner(config.model.base)
        resolution = config.model.resolution
        try:
            probe = {name: probe_dataset(args.bench / name, runner, [resolution], PROBE_TIMESTEP)[resolution]["test"]
                     for name in names}
        finally:
            runner.close()
        print(f"\nlinear probe at {resolution} px, timestep {PROBE_TIMESTEP}, on the first video of each dataset\n")
        print(kind_table(results, probe))


if __name__ == "__main__":
    main()
