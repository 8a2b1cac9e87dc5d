"""The ``evaluate`` flow: a SMITE-50-layout dataset + a part model -> metrics per video and per kind.

The dataset's ``videos/`` are segmented by the ``segment`` flow (as a subflow, so committed videos are not
redone), the Parquet masks are decoded into label-map PNGs (``<out>/predictions/<video_id>/``, mapped per
video), and :func:`pipeline.evaluation.evaluate.evaluate_predictions` scores them against ``gt/``. Writes
``<out>/metrics.json``, ``<out>/metrics.md`` and the HTML report ``<out>/reports/evaluate-<UTC time>.html``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import fsspec
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retry import retry_unless_bad_input
from flows.segment import (
    SegmentRun,
    check_segment_job,
    model_id_of,
    report_uri,
    run_facts,
    run_of,
    segment_flow,
    summarise_video,
)
from pipeline.batch.results import VideoResult
from pipeline.config import JobConfig, resolve_config
from pipeline.evaluation.evaluate import EvaluationReport, evaluate_predictions, find_videos, save_label_maps
from pipeline.report.html import RunReport, VideoSection, committed_video_ids, write_report
from pipeline.sinks.run_outputs import label_maps


@dataclass(frozen=True)
class EvaluationRun:
    """The outcome of one ``evaluate`` flow run: the scores, the segment run, every video's report section
    (in ground-truth order) and where the files went."""

    evaluation: EvaluationReport
    segment: SegmentRun
    sections: tuple[VideoSection, ...]
    metrics_json: str
    metrics_markdown: str
    report: str


def dataset_videos(dataset: str) -> str:
    """The folder of a dataset's test videos, ``<dataset>/videos``."""
    return f"{dataset.rstrip('/')}/videos"


def check_evaluate_job(
    dataset: str, model: str | None, config: str | None, overrides: list[str], baseline: str | None, out: str
) -> JobConfig:
    """Validate an evaluation job before anything starts (ground truth, videos, model, configuration).

    Raises:
        InputError (or a subclass): one line naming the file or key and the problem.
    """
    find_videos(dataset)
    return check_segment_job([dataset_videos(dataset)], model, config, overrides, baseline, out)


@task(name="write-predictions", retries=1, retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE)
def write_predictions(video_id: str, out: str, predictions: str) -> int:
    """Decode one video's masks into ``predictions/<video_id>/<frame:05d>.png``; returns the frame count."""
    frames, labels = label_maps(out, video_id)
    save_label_maps(predictions, video_id, frames.tolist(), labels)
    return len(frames)


@task(name="score", cache_policy=NO_CACHE)
def score(predictions: str, dataset: str, size: int) -> EvaluationReport:
    """mIoU, J, F and flicker of the predictions against the dataset's ground truth."""
    return evaluate_predictions(predictions, dataset, size=size)


def _write_text(uri: str, text: str) -> str:
    """Write a UTF-8 text file (local path or fsspec URL), creating its folder; returns ``uri``."""
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as file:
        file.write(text)
    return uri


@flow(name="evaluate")
def evaluate_flow(
    dataset: str,
    out: str,
    model: str | None = None,
    config: str | JobConfig | None = None,
    overrides: list[str] | None = None,
    baseline: str | None = None,
    size: int = 512,
    threshold: float = 0.5,
    progress: bool = False,
) -> EvaluationRun:
    """Segment a SMITE-50-layout dataset's videos with ``model`` and score them against its ground truth.

    Args:
        dataset: dataset folder (``videos/``, ``gt/``, ``references/parts.txt``), local path or fsspec URL.
        out: output root for the segmentation outputs, predictions, metrics and report.
        model: part model folder written by ``smite train``.
        config, overrides: job configuration (preset or YAML file, ``key=value`` overrides), or a
            :class:`JobConfig` already resolved by the caller (then without overrides).
        baseline: score the nearest-colour baseline fitted on this reference set instead of ``model``.
        size: evaluation resolution in pixels (both maps nearest-resized to ``size x size``; 512 in the paper).
        threshold: confidence floor for flagging frames in the report, in [0, 1].
        progress: show progress bars on the console.
    """
    started = time.perf_counter()
    root = out.rstrip("/")
    job = resolve_config(config, list(overrides or []))
    segmented = run_of(segment_flow(  # a failed video scores as all background: the evaluation goes on
        [dataset_videos(dataset)], out, model=model, config=job, baseline=baseline,
        threshold=threshold, report=False, progress=progress, return_state=True,
    ))
    video_ids = [video.video_id for video in find_videos(dataset)]
    committed = set(committed_video_ids(out))  # a failed video has no masks: it scores as all background
    predictions = f"{root}/predictions"
    fs, path = fsspec.core.url_to_fs(predictions)
    fs.makedirs(path, exist_ok=True)
    write_predictions.map([v for v in video_ids if v in committed], unmapped(out), unmapped(predictions)).result()
    evaluation = score(predictions, dataset, size)
    markdown = evaluation.to_markdown()
    metrics_json = _write_text(f"{root}/metrics.json", evaluation.to_json())
    metrics_markdown = _write_text(f"{root}/metrics.md", markdown)

    done = {section.video_id for section in segmented.sections}
    earlier = [VideoResult(v, "", "skipped") for v in video_ids if v in committed and v not in done]
    sections = [*segmented.sections, *summarise_video.map(earlier, unmapped(out), unmapped(threshold)).result()]
    order = {video_id: position for position, video_id in enumerate(video_ids)}
    sections.sort(key=lambda section: order.get(section.video_id, len(order)))
    facts = {
        "dataset": dataset,
        **run_facts(segmented, [dataset_videos(dataset)]),
        "evaluation size": f"{size}x{size}",
        "model id": model_id_of(out, video_ids) or "n/a",
        "run time": f"{time.perf_counter() - started:.1f} s",
    }
    report = write_report(
        RunReport("SMITE evaluation run", facts, tuple(sections), evaluation, threshold), report_uri(out, "evaluate")
    )
    create_markdown_artifact(markdown, key="evaluation-metrics", description=f"metrics of {dataset}")
    get_run_logger().info("metrics: %s, %s; report: %s", metrics_json, metrics_markdown, report)
    return EvaluationRun(evaluation, segmented, tuple(sections), metrics_json, metrics_markdown, report)
