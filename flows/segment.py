"""The ``segment`` flow: videos (paths, globs, folders, fsspec URLs) -> masks, overlays, manifests, a report.

Steps, each visible in the Prefect UI:

1. ``find-new-videos``: expand the inputs and keep the videos without an output committed under this job's
   commit key (:mod:`pipeline.batch.commit_key`: model, tracker checkpoint, output settings; so a scheduled run over
   a bucket prefix labels only what is new, and an idle run starts nothing). Retried: listing a bucket can
   fail transiently.
2. ``segment-batch``: :func:`pipeline.batch.driver.segment_videos` on Ray for the new videos (one actor pool shared by
   the whole batch; a bad video is recorded in ``failures.parquet`` and never stops the others). Retried once:
   committed videos are skipped on the retry, so only unfinished work is redone.
3. ``summarise-video``, mapped per video: mean mask confidence per frame, frames to review, thumbnails.
4. The HTML report ``<out>/reports/segment-<UTC time>-<random>.html`` and a table artifact.

A run in which some videos failed ends in a Failed state (see :func:`segment_flow`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.retry import retry_unless_bad_input
from pipeline.batch.commit_key import commit_key
from pipeline.batch.driver import segment_videos
from pipeline.batch.results import BatchResult, VideoResult, describe_video
from pipeline.batch.segmenters import NearestColourFactory, PartModelFactory, SegmenterFactory
from pipeline.batch.shared_tracks import check_tracker
from pipeline.config import ConfigError, JobConfig, load_config, resolve_config
from pipeline.io.inputs import VideoInput, expand_inputs
from pipeline.io.references import load_reference_set
from pipeline.report.html import RunReport, VideoSection, cost_facts, video_section, write_report
from pipeline.sinks.manifest import is_committed, read_manifest
from pipeline.sinks.out_root import check_output
from smite_ops.errors import InputError
from smite_ops.part_model import load_part_model


@dataclass(frozen=True)
class SegmentRun:
    """The outcome of one ``segment`` flow run.

    Attributes:
        out: the output root.
        new_videos: ids of the videos that had no committed output when the run started.
        batch: the batch result, None when nothing was new.
        sections: report sections of the videos processed now, in input order.
        model_id: the segmenter's model id (from a manifest), None when nothing was committed.
        config_digest: :meth:`JobConfig.digest` of the job.
        seconds: wall time of the run, s.
        report: path of the HTML report, None when none was written.
    """

    out: str
    new_videos: tuple[str, ...]
    batch: BatchResult | None
    sections: tuple[VideoSection, ...]
    model_id: str | None
    config_digest: str
    seconds: float
    report: str | None


def check_segment_job(
    inputs: list[str], model: str | None, config: str | None, overrides: list[str], baseline: str | None, out: str
) -> JobConfig:
    """Validate a segment job before anything starts; returns its configuration.

    Raises:
        InputError (or a subclass): a bad configuration key or value, an input that matches no video, a
        missing or unreadable part model (or baseline reference set), or an output root that would not keep
        the outputs (``memory://``) or is not writable. The message is one line.
    """
    job = load_config(config, overrides)
    expand_inputs(inputs)
    check_segmenter(model, baseline)
    check_job_settings(job, baseline)
    check_output(out)
    return job


def check_job_settings(job: JobConfig, baseline: str | None) -> None:
    """Check that a configuration can segment with the chosen segmenter.

    Raises:
        ConfigError: guidance is on for the (unguidable) nearest-colour baseline, or tracks are needed from
            CoTracker3 without a checkpoint. The message is one line.
    """
    if baseline is not None and job.guidance.enabled:
        raise ConfigError(
            "guidance: the nearest-colour baseline cannot be guided; add --set guidance.track_weight=0 "
            "--set guidance.reg_weight=0 (or use -c tiny)"
        )
    check_tracker(job)


def check_segmenter(model: str | None, baseline: str | None) -> None:
    """Check that the part model (or, when given, the baseline's reference set) can be loaded.

    Raises:
        InputError (or a subclass): no model given, or a missing or unreadable model or reference set.
    """
    if baseline is not None:
        load_reference_set(baseline)
    elif model is None:
        raise InputError("no model given: pass --model with a part model folder written by `smite train`")
    else:
        load_part_model(model)


def report_uri(out: str, name: str) -> str:
    """Where a run's report goes: ``<out>/reports/<name>-<UTC time>-<random>.html`` (unique per run)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{out.rstrip('/')}/reports/{name}-{stamp}-{uuid.uuid4().hex[:6]}.html"


class VideosFailed(Exception):
    """The outcome of a segment flow run in which some videos failed: the run's final state is Failed and this
    is its result (raised by a direct call of the flow; ``.run`` holds the :class:`SegmentRun`)."""

    def __init__(self, run: SegmentRun) -> None:
        failed = len(run.batch.with_status("failed")) if run.batch else 0
        super().__init__(f"{failed} of {len(run.new_videos)} video(s) failed; see {run.out}/failures.parquet")
        self.run = run

    def __reduce__(self) -> tuple[type, tuple[SegmentRun]]:
        return VideosFailed, (self.run,)


def segmenter_factory(model: str | None, baseline: str | None, job: JobConfig) -> SegmenterFactory:
    """The part model's factory, or the nearest-colour baseline's when ``baseline`` is given."""
    return NearestColourFactory(baseline) if baseline is not None else PartModelFactory(model or "", job)


def run_of(state: State) -> SegmentRun:
    """The :class:`SegmentRun` of a finished segment flow run's state (Completed, or Failed with some videos
    failed); any other failure is raised."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, VideosFailed):
        return result.run
    if isinstance(result, BaseException):
        raise result
    return result


@task(name="find-new-videos", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE)
def find_new_videos(inputs: list[str], out: str, key: str) -> list[VideoInput]:
    """The input videos (expanded here, once per run) without an output committed under this commit key, in
    input order."""
    videos = expand_inputs(inputs)
    new = [video for video in videos if not is_committed(out, video.video_id, key)]
    get_run_logger().info("%d input video(s), %d without committed output", len(videos), len(new))
    return new


@task(name="segment-batch", retries=1, retry_delay_seconds=10, retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE)
def segment_batch(
    videos: list[VideoInput], model: str | None, out: str, job: JobConfig, baseline: str | None, progress: bool
) -> BatchResult:
    """Segment ``videos`` (with the ids this run gave them) on Ray (:func:`pipeline.batch.driver.segment_videos`)
    with the part model or the baseline; one log line per video as soon as it is done or failed."""
    logger = get_run_logger()

    def log_video(video: VideoResult) -> None:
        (logger.warning if video.status == "failed" else logger.info)("%s", describe_video(video))

    factory = segmenter_factory(model, baseline, job)
    return segment_videos(videos, model or "", out, job, progress=progress, segmenter_factory=factory,
                          on_video=log_video)


@task(name="summarise-video", cache_policy=NO_CACHE)
def summarise_video(result: VideoResult, out: str, threshold: float) -> VideoSection:
    """One video's report section (confidence per frame, frames to review, thumbnails)."""
    section = video_section(out, result, threshold=threshold)
    if section.review_frames:
        get_run_logger().warning("%s: %d frame(s) to review", section.video_id, len(section.review_frames))
    return section


def model_id_of(out: str, video_ids: list[str]) -> str | None:
    """The model id recorded in the first committed manifest among ``video_ids``."""
    for video_id in video_ids:
        manifest = read_manifest(out, video_id)
        if manifest is not None:
            return str(manifest.get("model_id"))
    return None


def run_facts(run: SegmentRun, inputs: list[str]) -> dict[str, str]:
    """The run facts shown at the top of a report."""
    batch = run.batch
    counts = {status: len(batch.with_status(status)) if batch else 0 for status in ("done", "skipped", "failed")}
    segment_seconds = batch.seconds if batch else 0.0
    frames = batch.frames if batch else 0
    done = batch.with_status("done") if batch else []
    cost = cost_facts([read_manifest(run.out, video.video_id) or {} for video in done])
    return {
        "Prefect flow run": str(flow_run.get_name() or "none"),
        "inputs": " ".join(inputs),
        "output root": run.out,
        "model id": run.model_id or "n/a",
        "config digest": run.config_digest,
        "videos": f"{counts['done']} segmented, {counts['skipped']} skipped, {counts['failed']} failed",
        "frames segmented": str(frames),
        "segmentation time": f"{segment_seconds:.1f} s"
        + (f" ({frames / segment_seconds:.2f} frames/s)" if frames and segment_seconds else ""),
        "run time": f"{run.seconds:.1f} s",
        **cost,
        "finished (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }


def publish(run: SegmentRun) -> None:
    """Show a run's per-video table and report location in the Prefect UI."""
    rows = [
        {"video": s.video_id, "status": s.status, "frames": s.num_frames, "seconds": round(s.seconds, 2),
         "mean confidence": round(float(s.confidence.mean()), 4) if s.confidence.size else None,
         "frames to review": len(s.review_frames), "error": s.error or ""}
        for s in run.sections
    ]
    create_table_artifact(rows, key="segment-videos", description=f"videos segmented into {run.out}")
    if run.report is not None:
        create_markdown_artifact(f"HTML report: `{run.report}`", key="segment-report", description="report file")


@flow(name="segment")
def segment_flow(
    inputs: list[str],
    out: str,
    model: str | None = None,
    config: str | JobConfig | None = None,
    overrides: list[str] | None = None,
    baseline: str | None = None,
    threshold: float = 0.5,
    report: bool = True,
    progress: bool = False,
) -> SegmentRun | State:
    """Segment the videos of ``inputs`` that have no committed output in ``out`` yet.

    Returns the :class:`SegmentRun`; when some videos failed, a Failed state instead (the flow run shows as
    failed) whose result is :class:`VideosFailed` holding the run (see :func:`run_of`).

    Args:
        inputs: video files, folders, globs or fsspec URLs (e.g. ``s3://bucket/incoming/*.mp4``).
        out: output root (local path or fsspec URL).
        model: part model folder written by ``smite train``.
        config: YAML file or preset (None: production defaults), or a :class:`JobConfig` already resolved by
            the caller (then without ``overrides``).
        overrides: ``section.key=value`` strings.
        baseline: segment with the nearest-colour baseline fitted on this reference set instead of ``model``.
        threshold: mean mask confidence below which a frame is flagged for review, in [0, 1].
        report: write the HTML report of this run (skipped when no video was new).
        progress: show progress bars on the console.
    """
    started = time.perf_counter()
    job = resolve_config(config, list(overrides or []))
    check_output(out)
    new = find_new_videos(inputs, out, commit_key(job, segmenter_factory(model, baseline, job)))
    batch = segment_batch(new, model, out, job, baseline, progress) if new else None
    results = [video for video in batch.videos if video.status != "skipped"] if batch else []
    sections = summarise_video.map(results, unmapped(out), unmapped(threshold)).result() if results else []
    run = SegmentRun(
        out=out, new_videos=tuple(v.video_id for v in new), batch=batch, sections=tuple(sections),
        model_id=model_id_of(out, [v.video_id for v in new]), config_digest=job.digest(),
        seconds=time.perf_counter() - started, report=None,
    )
    if report and batch is not None:
        path = write_report(
            RunReport("SMITE segmentation run", run_facts(run, inputs), run.sections, threshold=threshold),
            report_uri(out, "segment"),
        )
        run = replace(run, report=path)
        get_run_logger().info("report: %s", path)
    publish(run)
    if run.batch is not None and run.batch.with_status("failed"):
        failed = VideosFailed(run)
        return Failed(message=str(failed), data=failed)
    return run
