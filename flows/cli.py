"""The `smite` command line.

Every command has ``--help``. Bad input ends the command with exit code 2 and one line on stderr naming the
file and the problem; no traceback is shown for input errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
import yaml

from pipeline.config import load_config
from smite_ops.errors import InputError

app = typer.Typer(
    name="smite",
    help="Few-shot video part segmentation (SMITE): learn parts from a few images, label whole videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

P = ParamSpec("P")
R = TypeVar("R")

ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML file or preset (car, horse, face, tiny)")
]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="override one key, e.g. --set train.epochs=10")]


def reports_input_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn input errors into one line on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except InputError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


@app.command("config")
@reports_input_errors
def show_config(config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Print the fully resolved job configuration (defaults, preset and --set overrides) as YAML."""
    job = load_config(config, overrides or [])
    typer.echo(f"# config digest {job.digest()}")
    typer.echo(yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False).rstrip())


@app.command("synth")
@reports_input_errors
def synth(
    out: Annotated[Path, typer.Argument(help="output folder for the synthetic benchmark")],
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same data")] = 0,
    size: Annotated[int, typer.Option(help="frame and image size in pixels (square)")] = 256,
    frames: Annotated[int, typer.Option(help="frames per test video")] = 48,
    videos: Annotated[int, typer.Option(help="test videos per object kind")] = 3,
) -> None:
    """Generate the synthetic part-segmentation benchmark (references, videos, dense ground truth)."""
    from pipeline.synth import generate_benchmark

    start = time.perf_counter()
    datasets = generate_benchmark(out, seed=seed, size=size, num_frames=frames, videos_per_kind=videos)
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
    from pipeline.evaluate import evaluate_predictions

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
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the learned part model")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    validation: Annotated[str | None, typer.Option(help="separate reference set for model selection")] = None,
) -> None:
    """Learn a part model from a few annotated reference images (resumes from OUT if interrupted)."""
    from pipeline.train import train_part_model

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
    """Segment one video in this process, window after window (development and small jobs)."""
    from pipeline.segment_video import segment_video_file

    job = load_config(config, overrides or [])
    result = segment_video_file(video, model, out, job)
    typer.echo(f"labels: {result.labels_dir} ({result.num_frames} frames, {result.seconds:.1f} s)")
    if result.overlay is not None:
        typer.echo(f"overlay: {result.overlay}")


def main() -> None:
    """Console-script entry point."""
    app()
