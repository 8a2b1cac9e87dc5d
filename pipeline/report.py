"""The HTML report of a run: one self-contained file (inline CSS, SVG plots, base64 PNG thumbnails).

Sections: run facts (model id, config digest, durations, ...), the evaluation tables when ground truth was
available (per video and per kind), then one card per video with overlay thumbnails and a per-frame plot of
the mean mask confidence (:mod:`pipeline.report_outputs`), frames flagged for human review listed under it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from html import escape

import fsspec
import numpy as np

from pipeline.batch import VideoResult
from pipeline.evaluate import EvaluationReport, Scores
from pipeline.manifest import MANIFEST_DIR, read_manifest
from pipeline.report_outputs import (
    RunOutputError,
    committed_video_ids,
    flag_low_confidence,
    frame_confidence,
    thumbnails,
)
from pipeline.report_svg import confidence_plot

_METRIC_COLUMNS = (
    ("miou_ref", "mIoU ref (%)", "{:.2f}"),
    ("miou_present", "mIoU present (%)", "{:.2f}"),
    ("j", "J", "{:.3f}"),
    ("f", "F", "{:.3f}"),
    ("flicker", "flicker", "{:.4f}"),
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.video{border:1px solid #ddd;border-radius:6px;padding:0.5em 1em;margin:1em 0}
.thumbs img{margin-right:6px;border:1px solid #ccc}
.facts td,.facts th{text-align:left}
.review{color:#d62728}
.failed{color:#d62728;font-weight:bold}
"""


@dataclass(frozen=True)
class VideoSection:
    """What the report shows for one video.

    Attributes:
        video_id: the video.
        status: ``done``, ``skipped`` (committed earlier) or ``failed``.
        num_frames: frames segmented (0 when unknown).
        seconds: segmentation wall time, s (0 when not run now).
        frame_indices: ``(K,)`` int64 frames with masks.
        confidence: ``(K,)`` float64 mean mask confidence per frame, in [0, 1].
        flagged: ``(K,)`` bool, frames for human review.
        thumbnails: PNG bytes of overlay frames.
        error: the one-line error of a failed video.
    """

    video_id: str
    status: str
    num_frames: int = 0
    seconds: float = 0.0
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    thumbnails: tuple[bytes, ...] = ()
    error: str | None = None

    @property
    def review_frames(self) -> list[int]:
        """Frame indices flagged for human review."""
        return [int(index) for index in self.frame_indices[self.flagged]]


@dataclass(frozen=True)
class RunReport:
    """Everything one HTML report shows.

    Attributes:
        title: page title.
        facts: run facts in display order (label -> value), e.g. model id, config digest, durations.
        videos: one section per video.
        evaluation: metrics against ground truth, when there was any.
        threshold: the absolute confidence floor used for flagging (drawn in the plots).
    """

    title: str
    facts: Mapping[str, str]
    videos: tuple[VideoSection, ...]
    evaluation: EvaluationReport | None = None
    threshold: float = 0.5


def overlay_uri(out_uri: str, video_id: str) -> str | None:
    """``<out>/overlays/<video_id>.mp4`` when it exists (same URL style as ``out_uri``), else None."""
    fs, base = fsspec.core.url_to_fs(str(out_uri))
    path = f"{base.rstrip('/')}/overlays/{video_id}.mp4"
    if not fs.exists(path):
        return None
    return fs.unstrip_protocol(path) if "://" in str(out_uri) else path


def video_section(
    out_uri: str, result: VideoResult, *, threshold: float = 0.5, drop: float = 0.15, thumbnail_count: int = 4
) -> VideoSection:
    """Build a video's report section from a run's outputs (masks Parquet and overlay video).

    A failed video gets its error only; a done or skipped one its confidence series, flags and thumbnails
    (from ``overlays/<id>.mp4`` when there is one, else from the source video ``result.uri`` when given).
    """
    if result.status == "failed":
        return VideoSection(result.video_id, result.status, error=result.error)
    frames, confidence = frame_confidence(out_uri, result.video_id)
    source = result.outputs.get("overlay") or overlay_uri(out_uri, result.video_id) or result.uri
    return VideoSection(
        video_id=result.video_id,
        status=result.status,
        num_frames=result.num_frames or len(frames),
        seconds=result.seconds,
        frame_indices=frames,
        confidence=confidence,
        flagged=flag_low_confidence(confidence, threshold, drop),
        thumbnails=tuple(thumbnails(source, thumbnail_count)) if source else (),
    )


def _table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """An HTML table; ``rows`` cells are already-escaped HTML."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _metric_cells(scores: Scores) -> list[str]:
    values = asdict(scores)
    return ["n/a" if values[key] is None else fmt.format(values[key]) for key, _, fmt in _METRIC_COLUMNS]


def _evaluation_html(evaluation: EvaluationReport) -> str:
    names = [label for _, label, _ in _METRIC_COLUMNS]
    per_video = [
        [escape(row.video_id), escape(row.kind), str(row.frames), *_metric_cells(row)] for row in evaluation.videos
    ]
    per_kind = [
        [escape(kind), str(group.videos), str(group.frames), *_metric_cells(group)]
        for kind, group in evaluation.per_kind.items()
    ]
    overall = evaluation.overall
    per_kind.append(["<b>all</b>", str(overall.videos), str(overall.frames), *_metric_cells(overall)])
    size = evaluation.size
    html = [
        f"<h2>Metrics</h2><h3>Per video ({size}x{size})</h3>",
        _table(["video", "kind", "frames", *names], per_video),
        "<h3>Per kind</h3>",
        _table(["kind", "videos", "frames", *names], per_kind),
    ]
    if evaluation.warnings:
        html.append("<ul>" + "".join(f"<li>{escape(w)}</li>" for w in evaluation.warnings) + "</ul>")
    return "".join(html)


def _summary_row(video: VideoSection) -> list[str]:
    status = f'<span class="failed">{video.status}</span>' if video.status == "failed" else video.status
    mean = f"{video.confidence.mean():.3f}" if video.confidence.size else "n/a"
    return [escape(video.video_id), status, str(video.num_frames), f"{video.seconds:.1f}", mean,
            str(int(video.flagged.sum()))]


def _video_html(video: VideoSection, threshold: float) -> str:
    heading = f'<div class="video" id="video-{escape(video.video_id)}"><h3>{escape(video.video_id)}</h3>'
    if video.error is not None:
        return f'{heading}<p class="failed">failed: {escape(video.error)}</p></div>'
    images = "".join(
        f'<img alt="{escape(video.video_id)} overlay {position}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        for position, png in enumerate(video.thumbnails)
    )
    plot = confidence_plot(
        video.frame_indices, video.confidence, video.flagged, threshold,
        title=f"{video.video_id}: mean mask confidence per frame",
    )
    review = video.review_frames
    note = (
        f'<p class="review">{len(review)} frame(s) to review: {", ".join(map(str, review))}</p>'
        if review else "<p>No frame flagged for review.</p>"
    )
    return f'{heading}<div class="thumbs">{images}</div>{plot}{note}</div>'


def render_html(report: RunReport) -> str:
    """The report as one self-contained HTML document (no external CSS, scripts, fonts or images)."""
    facts = _table(["fact", "value"], [[escape(k), escape(v)] for k, v in report.facts.items()], "facts")
    summary = _table(
        ["video", "status", "frames", "seconds", "mean confidence", "frames to review"],
        [_summary_row(video) for video in report.videos],
    )
    sections = "".join(_video_html(video, report.threshold) for video in report.videos)
    evaluation = _evaluation_html(report.evaluation) if report.evaluation is not None else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(report.title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(report.title)}</h1><h2>Run</h2>{facts}{evaluation}"
        f"<h2>Videos</h2>{summary}"
        f"<p>Frames are flagged for review when their mean mask confidence is below {report.threshold:.2f} "
        f"or far below the video's median.</p>{sections}</body></html>\n"
    )


def write_report(report: RunReport, uri: str) -> str:
    """Write :func:`render_html` of ``report`` to ``uri`` (local path or fsspec URL); returns ``uri``."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    parent = path.rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as file:
        file.write(render_html(report))
    return str(uri)


def output_report(out_uri: str, *, threshold: float = 0.5) -> RunReport:
    """A report of everything committed under an output root (as opposed to one run's videos).

    Raises:
        RunOutputError: nothing is committed there.
    """
    video_ids = committed_video_ids(out_uri)
    if not video_ids:
        raise RunOutputError(f"{out_uri}: no committed video (no {MANIFEST_DIR}/*.json)")
    manifests = {video_id: read_manifest(out_uri, video_id) or {} for video_id in video_ids}
    sections = tuple(
        video_section(
            out_uri,
            VideoResult(video_id, str(data.get("uri", "")), "done", num_frames=int(data.get("num_frames", 0)),
                        seconds=float(data.get("timings", {}).get("total", 0.0))),
            threshold=threshold,
        )
        for video_id, data in manifests.items()
    )
    facts = {
        "output root": str(out_uri),
        "committed videos": str(len(video_ids)),
        "model ids": " ".join(sorted({str(data.get("model_id")) for data in manifests.values()})),
        "config digests": " ".join(sorted({str(data.get("config_digest")) for data in manifests.values()})),
        "segmentation time (sum)": f"{sum(section.seconds for section in sections):.1f} s",
    }
    return RunReport("SMITE outputs", facts, sections, threshold=threshold)
