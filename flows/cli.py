"""The `smite` command line.

Every command has ``--help``. Exit codes: 0 when everything was done; 2 for bad input (one line on stderr naming
the file and the problem, no traceback); 3 when ``segment`` or ``evaluate`` finished but some videos failed
(listed, and recorded in ``OUT/failures.parquet``). Commands that start Prefect or Ray first start a watchdog
(:mod:`flows.lifeline`) so that those child processes end with the CLI, even after a ``kill -9``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
import yaml

from pipeline.config import load_config
from pipeline.synth import KNOWN_KIND_NAMES, UnknownKindError, expand_kind_names, find_kinds
from smite_ops.errors import InputError

app = typer.Typer(
    name="smite",
    help="Few-shot video part segmentation (SMITE): learn parts from a few images, label whole videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_INPUT_ERROR = 2
EXIT_SOME_VIDEOS_FAILED = 3

P = ParamSpec("P")
R = TypeVar("R")

ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML file or preset (car, horse, face, tiny)")
]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="override one key, e.g. --set train.epochs=10")]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="part model folder written by `smite train` (path or URL)")
]
OutOption = Annotated[str, typer.Option("--out", "-o", help="output root (local folder or fsspec URL)")]
BaselineOption = Annotated[
    str | None,
    typer.Option(help="use the nearest-colour baseline fitted on this reference set instead of a part model"),
]
ThresholdOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="flag frames whose review score (part shrink) reaches this")
]


def reports_input_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn input errors into one line on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except InputError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=EXIT_INPUT_ERROR) from None

    return wrapper


@app.command("config")
@reports_input_errors
def show_config(config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Print the fully resolved job configuration (defaults, preset and --set overrides) as YAML."""
    job = load_config(config, overrides or [])
    typer.echo(f"# config digest {job.digest()}")
    typer.echo(yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False).rstrip())


KINDS_HELP = f"comma-separated kinds: {KNOWN_KIND_NAMES}"


def _kind_names(kinds: str) -> list[str]:
    """The kind names of a comma-separated ``--kinds`` value, ``heldout`` expanded.

    Raises:
        InputError: a name that is no kind (the one-line message names them all and the known names).
    """
    names = expand_kind_names([kind.strip() for kind in kinds.split(",") if kind.strip()])
    try:
        find_kinds(names)
    except UnknownKindError as err:
        raise InputError(f"--kinds {kinds}: {err}") from None
    return names


@app.command("synth")
@reports_input_errors
def synth(
    out: Annotated[Path, typer.Argument(help="output folder for the synthetic benchmark")],
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same data")] = 0,
    size: Annotated[int, typer.Option(help="frame and image size in pixels (square)")] = 256,
    frames: Annotated[int, typer.Option(help="frames per test video")] = 48,
    videos: Annotated[int, typer.Option(help="test videos per object kind")] = 3,
    kinds: Annotated[str, typer.Option(help=KINDS_HELP)] = "car,face,horse",
) -> None:
    """Generate the synthetic part-segmentation benchmark (references, videos, dense ground truth)."""
    from pipeline.synth import generate_benchmark

    start = time.perf_counter()
    names = _kind_names(kinds)
    datasets = generate_benchmark(out, seed=seed, size=size, num_frames=frames, videos_per_kind=videos, kinds=names)
    typer.echo(f"wrote {len(datasets)} datasets in {time.perf_counter() - start:.1f} s:")
    for folder in datasets:
        typer.echo(f"  {folder}")


@app.command("evaluate-masks")
@reports_input_errors
def evaluate_masks(
    pred: Annotated[Path, typer.Argument(help="predictions: PRED/<video_id>/<frame:05d>.png label maps")],
    gt: Annotated[Path, typer.Argument(help="SMITE-50-layout ground truth: a dataset, a folder of them, or gt/")],
    size: Annotated[int, typer.Option(help="evaluation size in pixels (the reference uses 512)")] = 512,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON here")] = None,
) -> None:
    """Compare predicted label maps with ground truth: mIoU, J, F and flicker per video and per kind."""
    from pipeline.evaluation.evaluate import evaluate_predictions

    report = evaluate_predictions(pred, gt, size=size)
    typer.echo(report.to_markdown())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(report.to_json())
        typer.echo(f"JSON report: {json_out}")


@app.command("train")
@reports_input_errors
def train(
    references: Annotated[str, typer.Argument(help="reference set folder: images/, masks/, parts.txt")],
    out: Annotated[str, typer.Option("--out", "-o", help="local folder for the learned part model")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    validation: Annotated[str | None, typer.Option(help="separate reference set for model selection")] = None,
) -> None:
    """Learn a part model from a few annotated reference images (resumes from OUT if interrupted)."""
    from pipeline.sinks.out_root import check_local_folder
    from pipeline.training.train import train_part_model

    check_local_folder(out)
    job = load_config(config, overrides or [])
    result = train_part_model(references, out, job, validation_dir=validation)
    typer.echo(
        f"part model: {result.model_dir} (best validation mIoU {result.best_miou:.1f} at epoch {result.best_epoch}, "
        f"{result.seconds:.0f} s)"
    )


@app.command("segment-video")
@reports_input_errors
def segment_video(
    video: Annotated[str, typer.Argument(help="video file (path or fsspec URL)")],
    model: Annotated[str, typer.Option("--model", "-m", help="part model folder written by `smite train`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder for label PNGs and the overlay")],
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Segment one video in this process, window after window, without guidance (development and small jobs)."""
    from pipeline.batch.sequential import segment_video_file

    job = load_config(config, overrides or [])
    result = segment_video_file(video, model, out, job)
    typer.echo(f"labels: {result.labels_dir} ({result.num_frames} frames, {result.seconds:.1f} s)")
    if result.overlay is not None:
        typer.echo(f"overlay: {result.overlay}")
    if job.guidance.enabled:
        typer.echo("note: segment-video ran unguided; `smite segment` runs guidance with whole-video tracks", err=True)


@app.command("segment")
@reports_input_errors
def segment(
    inputs: Annotated[list[str], typer.Argument(help="video files, folders, globs or fsspec URLs")],
    out: OutOption,
    model: ModelOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    baseline: BaselineOption = None,
    threshold: ThresholdOption = 0.5,
) -> None:
    """Segment videos on Ray under the Prefect `segment` flow; videos already committed in OUT are skipped."""
    from flows.lifeline import guard_children
    from flows.segment import check_segment_job, run_of, segment_flow

    job = check_segment_job(inputs, model, config, overrides or [], baseline, out)
    guard_children()
    run = run_of(segment_flow(inputs, out, model=model, config=job, baseline=baseline, threshold=threshold,
                              progress=True, return_state=True))
    if run.batch is None:
        typer.echo(f"nothing to do: every input video is already committed in {out}")
        return
    counts = {status: len(run.batch.with_status(status)) for status in ("done", "skipped", "failed")}
    typer.echo(
        f"{counts['done']} segmented, {counts['skipped']} skipped, {counts['failed']} failed in "
        f"{run.batch.seconds:.1f} s; masks: {out.rstrip('/')}/masks/  overlays: {out.rstrip('/')}/overlays/"
    )
    for video in run.batch.with_status("failed"):
        typer.echo(f"  failed {video.video_id}: {video.error}")
    typer.echo(f"report: {run.report}")
    if run.batch.with_status("failed"):
        raise typer.Exit(code=EXIT_SOME_VIDEOS_FAILED)


@app.command("evaluate")
@reports_input_errors
def evaluate(
    dataset: Annotated[str, typer.Argument(help="SMITE-50-layout dataset folder (videos/, gt/, references/)")],
    out: OutOption,
    model: ModelOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    baseline: BaselineOption = None,
    size: Annotated[int, typer.Option(min=1, help="evaluation size in pixels (the reference uses 512)")] = 512,
) -> None:
    """Segment a dataset's videos with a part model and score them: metrics per video and per kind."""
    from flows.evaluate import check_evaluate_job, evaluate_flow
    from flows.lifeline import guard_children

    job = check_evaluate_job(dataset, model, config, overrides or [], baseline, out)
    guard_children()
    run = evaluate_flow(dataset, out, model=model, config=job, baseline=baseline, size=size, progress=True)
    typer.echo(run.evaluation.to_markdown())
    typer.echo(f"metrics: {run.metrics_json} {run.metrics_markdown}\nreport: {run.report}")
    if failed := run.segment.batch.with_status("failed") if run.segment.batch else []:
        typer.echo(f"{len(failed)} video(s) failed (scored as background): {' '.join(v.video_id for v in failed)}")
        raise typer.Exit(code=EXIT_SOME_VIDEOS_FAILED)


@app.command("demo")
@reports_input_errors
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="folder for data, models, outputs, report")] = "demo_out",
    kinds: Annotated[str, typer.Option(help=KINDS_HELP)] = "car",
    config: Annotated[str, typer.Option("--config", "-c", help="YAML file or preset")] = "tiny",
    overrides: SetOption = None,
    size: Annotated[int, typer.Option(min=32, help="synthetic frame size in pixels")] = 128,
    frames: Annotated[int, typer.Option(min=2, help="frames per synthetic video")] = 24,
    videos: Annotated[int, typer.Option(min=1, help="test videos per kind")] = 2,
    references: Annotated[int, typer.Option(min=1, help="reference images per kind")] = 4,
) -> None:
    """Synthetic data -> train the tiny model -> segment on Ray -> evaluate -> HTML report (CPU, offline)."""
    from flows.demo import demo_flow
    from flows.lifeline import guard_children

    job_kinds = _kind_names(kinds)
    load_config(config, overrides or [])
    guard_children()
    run = demo_flow(out, job_kinds, config=config, overrides=overrides, size=size, frames=frames, videos=videos,
                    references=references, progress=True)
    typer.echo(run.summary())


@app.command("deploy")
@reports_input_errors
def deploy(
    inputs: Annotated[list[str], typer.Argument(help="what each run expands, e.g. 's3://bucket/incoming/*.mp4'")],
    out: OutOption,
    cron: Annotated[str, typer.Option(help="5-field cron schedule, e.g. '*/15 * * * *'")],
    model: ModelOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    baseline: BaselineOption = None,
    name: Annotated[str, typer.Option(help="deployment name")] = "label-new-videos",
    timezone: Annotated[str, typer.Option(help="time zone of the cron schedule")] = "UTC",
) -> None:
    """Schedule the segment flow on a cron (needs PREFECT_API_URL); each run labels only new videos."""
    from flows.deploy import segment_deployment, serve_deployment
    from flows.lifeline import guard_children
    from flows.segment import check_job_settings, check_segmenter
    from pipeline.sinks.out_root import check_persistent

    job = load_config(config, overrides or [])
    check_segmenter(model, baseline)
    check_job_settings(job, baseline)
    check_persistent(out)
    guard_children()
    deployment = segment_deployment(name, inputs, out, cron, model=model, config=config, overrides=overrides,
                                    baseline=baseline, timezone=timezone)
    serve_deployment(deployment)


@app.command("report")
@reports_input_errors
def report(
    out: Annotated[str, typer.Argument(help="output root of segmentation runs")],
    html: Annotated[
        str | None, typer.Option(help="where to write the report (default OUT/reports/outputs-<time>.html)")
    ] = None,
    threshold: ThresholdOption = 0.5,
) -> None:
    """Write an HTML report of every video committed under OUT (overlays, confidence, frames to review)."""
    from flows.segment import report_uri
    from pipeline.report.html import output_report, write_report
    from pipeline.sinks.out_root import check_readable

    check_readable(out)
    path = write_report(output_report(out, threshold=threshold), html or report_uri(out, "outputs"))
    typer.echo(f"report: {path}")


@app.command("export")
@reports_input_errors
def export(
    out: Annotated[str, typer.Argument(help="output root of segmentation runs (masks/, _manifest/)")],
    dest: Annotated[
        str | None, typer.Option("--dest", "-d", help="export folder, path or URL (default OUT/exports/FORMAT)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="coco, cvat or labelstudio")] = "coco",
    videos: Annotated[list[str] | None, typer.Option("--videos", help="video id to export (repeat; default all)")]
    = None,
    frames: Annotated[str, typer.Option(help="all, or flagged: only the frames flagged for review")] = "all",
    images: Annotated[bool, typer.Option(help="also write the exported frames as PNG images")] = True,
    image_url_prefix: Annotated[
        str, typer.Option(help="Label Studio: prefix of image URLs, e.g. /data/local-files/?d=")
    ] = "",
) -> None:
    """Export committed masks to a labeling tool's format (COCO JSON, CVAT for video XML, Label Studio JSON)."""
    from pipeline.export import export_masks

    target = dest or f"{out.rstrip('/')}/exports/{fmt}"
    result = export_masks(out, target, fmt, video_ids=videos, frames=frames, images=images,
                          image_url_prefix=image_url_prefix)
    typer.echo(
        f"{result.format}: {result.videos} video(s), {result.frames} frame(s), {result.masks} mask(s), "
        f"{result.images} image(s) -> {result.dest.rstrip('/')}/ ({', '.join(result.annotation_files)})"
    )


def main() -> None:
    """Console-script entry point. Prefect and Ray usage statistics stay off unless the environment asks."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # The temporary Prefect API creates its database on first use; on a loaded 2-core machine that takes longer
    # than Prefect's 20 s default wait, and the command would fail before doing anything.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    app()
