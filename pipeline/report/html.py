"""The HTML report of a run, a reviewer's page: one self-contained file (inline CSS, SVG plots, base64 PNGs).

Sections: run facts (model id, config digest, durations, ...), the evaluation tables when ground truth was
available (per video and per kind), a summary of every video (quality signals, frames to review, a link to
its overlay video), then one card per video: the part names with their overlay colours, a per-part presence
timeline with the flagged frames, the review score per frame, the worst frames first as overlay thumbnails
with the reason each was flagged, and per-part quality signals (:mod:`pipeline.report.review`). The only links
out of the page are to the overlay videos (relative to the report when both are local files).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from html import escape

import fsspec
import numpy as np

from pipeline.batch.results import VideoResult
from pipeline.evaluation.evaluate import EvaluationReport, Scores
from pipeline.report.review import ReviewSettings, VideoReview, review_video
from pipeline.report.svg import presence_timeline, score_plot
from pipeline.sinks.manifest import MANIFEST_DIR, read_manifest
from pipeline.sinks.overlay import overlay_file, part_palette
from pipeline.sinks.run_outputs import RunOutputError, committed_video_ids, frame_thumbnails

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
.legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:0.9em;height:0.9em;border:1px solid #888;vertical-align:middle;margin-right:0.3em}
figure{display:inline-block;margin:0 8px 8px 0;vertical-align:top}
figcaption{font-size:12px;max-width:192px}
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
        confidence: ``(K,)`` float64 part confidence per frame (mean probability over non-background pixels).
        flagged: ``(K,)`` bool, frames for human review.
        thumbnails: PNG bytes of overlay frames, the worst (highest review score) first.
        error: the one-line error of a failed video.
        thumbnail_frames: the frame index of each thumbnail.
        part_names: the class names, index = part id (0 the background).
        review: the review signals (:func:`pipeline.report.review.review_video`), when computed.
        overlay: the overlay video's path or URL, when there is one.
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
    thumbnail_frames: tuple[int, ...] = ()
    part_names: tuple[str, ...] = ()
    review: VideoReview | None = None
    overlay: str | None = None

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
        threshold: the review-score threshold used for flagging (drawn in the plots).
    """

    title: str
    facts: Mapping[str, str]
    videos: tuple[VideoSection, ...]
    evaluation: EvaluationReport | None = None
    threshold: float = ReviewSettings().threshold


def overlay_uri(out_uri: str, video_id: str) -> str | None:
    """``<out>/overlays/<video_id>.mp4`` when it exists (same URL style as ``out_uri``), else None."""
    fs, path = fsspec.core.url_to_fs(overlay_file(out_uri, video_id))
    if not fs.exists(path):
        return None
    return fs.unstrip_protocol(path) if "://" in str(out_uri) else path


def worst_frames(review: VideoReview, count: int) -> list[int]:
    """Positions (rows) of the ``count`` highest-scoring frames, worst first (earlier frame on ties)."""
    return [int(position) for position in np.argsort(-review.score, kind="stable")[:count]]


def section_from_outputs(
    out_uri: str,
    video_id: str,
    status: str,
    *,
    num_frames: int = 0,
    seconds: float = 0.0,
    source: str | None = None,
    threshold: float = ReviewSettings().threshold,
    thumbnail_count: int = 4,
) -> VideoSection:
    """A committed video's report section: review signals from its masks, worst frames from its overlay video.

    Thumbnails come from ``overlays/<id>.mp4`` when there is one, else from ``source`` (the input video).
    """
    manifest = read_manifest(out_uri, video_id) or {}
    part_names = tuple(manifest.get("part_names", ()))
    review = review_video(out_uri, video_id, ReviewSettings(threshold=threshold), len(part_names))
    overlay = overlay_uri(out_uri, video_id)
    picks = worst_frames(review, thumbnail_count)
    frames = [int(review.frame_indices[position]) for position in picks]
    images = overlay or source or manifest.get("uri")
    return VideoSection(
        video_id=video_id,
        status=status,
        num_frames=num_frames or int(manifest.get("num_frames", 0)) or len(review.frame_indices),
        seconds=seconds,
        frame_indices=review.frame_indices,
        confidence=review.part_confidence,
        flagged=review.flagged,
        thumbnails=tuple(frame_thumbnails(images, frames)) if images else (),
        thumbnail_frames=tuple(frames) if images else (),
        part_names=part_names or tuple(f"part {index}" for index in range(review.area.shape[1])),
        review=review,
        overlay=overlay,
    )


def video_section(
    out_uri: str, result: VideoResult, *, threshold: float = ReviewSettings().threshold, thumbnail_count: int = 4
) -> VideoSection:
    """Build a video's report section from a run's outputs (masks Parquet and overlay video).

    A failed video gets its error only; a done or skipped one its review signals, flags and worst frames.
    """
    if result.status == "failed":
        return VideoSection(result.video_id, result.status, error=result.error)
    return section_from_outputs(
        out_uri, result.video_id, result.status, num_frames=result.num_frames, seconds=result.seconds,
        source=result.outputs.get("overlay") or result.uri or None, threshold=threshold,
        thumbnail_count=thumbnail_count,
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


def _colours(part_names: tuple[str, ...]) -> list[str]:
    """CSS colours of the parts, the overlay palette's."""
    return ["#" + bytes(colour).hex() for colour in part_palette(len(part_names))]


def _link(uri: str | None, base: str | None) -> str:
    """An ``<a>`` to the overlay video: relative to the report's folder when both are local paths."""
    if uri is None:
        return "n/a"
    href = uri
    if base is not None and "://" not in uri and "://" not in base:
        href = os.path.relpath(uri, os.path.dirname(os.path.abspath(base)) or ".")
    return f'<a class="overlay" href="{escape(href)}">overlay video</a>'


def _summary_row(video: VideoSection, base: str | None, page: str | None) -> list[str]:
    status = f'<span class="failed">{video.status}</span>' if video.status == "failed" else video.status
    name = f'<a href="{escape(page or "#video-" + video.video_id)}">{escape(video.video_id)}</a>'
    mean = f"{video.confidence.mean():.3f}" if video.confidence.size else "n/a"
    low = f"{video.confidence.min():.3f}" if video.confidence.size else "n/a"
    flagged = int(video.flagged.sum())
    share = f" ({100 * flagged / video.flagged.size:.0f} %)" if video.flagged.size else ""
    worst = "n/a"
    if video.review is not None and video.review.score.size:
        position = worst_frames(video.review, 1)[0]
        worst = (f"{int(video.review.frame_indices[position])}: "
                 f"{escape(video.review.reason(position, video.part_names))}")
    return [name, status, str(video.num_frames), f"{video.seconds:.1f}", mean, low, f"{flagged}{share}", worst,
            _link(video.overlay, base)]


def _legend(video: VideoSection) -> str:
    colours = _colours(video.part_names)
    items = "".join(
        f'<span><i class="swatch" style="background:{colours[part]}"></i>{escape(name)}</span>'
        for part, name in enumerate(video.part_names) if part > 0
    )
    return f'<p class="legend">{items}</p>'


def _parts_table(video: VideoSection, review: VideoReview) -> str:
    """Per-part quality signals: presence, frames where the part goes missing or appears, largest area change."""
    colours = _colours(video.part_names)
    present = review.present
    rows = []
    for part in range(1, len(video.part_names)):
        missing = int(((review.presence_change[:, part] >= 0.5) & ~present[:, part]).sum())
        appears = int(((review.presence_change[:, part] >= 0.5) & present[:, part]).sum())
        rows.append([
            f'<i class="swatch" style="background:{colours[part]}"></i>{escape(video.part_names[part])}',
            f"{100 * present[:, part].mean():.0f} %", str(missing), str(appears),
            f"{review.area_change[:, part].max():.2f}",
        ])
    return _table(["part", "frames present", "frames missing", "frames appearing", "largest area change"], rows)


def _video_html(video: VideoSection, threshold: float, base: str | None) -> str:
    heading = f'<div class="video" id="video-{escape(video.video_id)}"><h3>{escape(video.video_id)}</h3>'
    if video.error is not None:
        return f'{heading}<p class="failed">failed: {escape(video.error)}</p></div>'
    review = video.review
    captions = {}
    if review is not None:
        position_of = {int(frame): position for position, frame in enumerate(review.frame_indices)}
        captions = {
            frame: f"frame {frame}: score {review.score[position_of[frame]]:.2f}; "
                   f"{review.reason(position_of[frame], video.part_names)}"
            for frame in video.thumbnail_frames
        }
    figures = "".join(
        f'<figure><img alt="{escape(video.video_id)} overlay frame {frame}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{escape(captions.get(frame, f'frame {frame}'))}</figcaption></figure>"
        for frame, png in zip(video.thumbnail_frames or range(len(video.thumbnails)), video.thumbnails, strict=True)
    )
    timeline = signals = ""
    if review is not None and video.part_names:
        timeline = presence_timeline(video.frame_indices, review.present, list(video.part_names),
                                     _colours(video.part_names), video.flagged,
                                     title=f"{video.video_id}: parts present per frame")
        signals = _parts_table(video, review)
    scores = review.score if review is not None else 1.0 - video.confidence
    plot = score_plot(video.frame_indices, scores, video.flagged, threshold,
                      title=f"{video.video_id}: review score per frame")
    flagged = video.review_frames
    note = (
        f'<p class="review">{len(flagged)} frame(s) to review: {", ".join(map(str, flagged))}</p>'
        if flagged else "<p>No frame flagged for review.</p>"
    )
    return (f"{heading}{_legend(video)}<p>{_link(video.overlay, base)}</p>{timeline}{plot}{note}"
            f'<h4>Worst frames first</h4><div class="thumbs">{figures}</div>{signals}</div>')


def render_html(report: RunReport, base: str | None = None, pages: Mapping[str, str] | None = None) -> str:
    """The report as one self-contained HTML document (no external CSS, scripts, fonts or images).

    ``base``: where the page will be written, to link the overlay videos relative to it. ``pages``: video id ->
    link of that video's own page; when given, this is an index page: the video cards are left out.
    """
    facts = _table(["fact", "value"], [[escape(k), escape(v)] for k, v in report.facts.items()], "facts")
    summary = _table(
        ["video", "status", "frames", "seconds", "part confidence (mean)", "part confidence (min)",
         "frames to review", "worst frame", "overlay"],
        [_summary_row(video, base, (pages or {}).get(video.video_id)) for video in report.videos],
    )
    sections = "" if pages is not None else "".join(
        _video_html(video, report.threshold, base) for video in report.videos
    )
    evaluation = _evaluation_html(report.evaluation) if report.evaluation is not None else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(report.title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(report.title)}</h1><h2>Run</h2>{facts}{evaluation}"
        f"<h2>Videos</h2>{summary}"
        f"<p>A frame is flagged for review when its review score reaches {report.threshold:.2f}: how far its "
        "most shrunken part falls below that part's usual (median) size in the video, 1 when a part the video "
        "usually shows is missing. Part confidence is the mean class probability over non-background pixels."
        f"</p>{sections}</body></html>\n"
    )


def _write_text(uri: str, text: str) -> None:
    fs, path = fsspec.core.url_to_fs(str(uri))
    parent = path.rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as file:
        file.write(text)


def write_report(report: RunReport, uri: str, *, max_videos_per_page: int = 50) -> str:
    """Write ``report`` to ``uri`` (local path or fsspec URL); returns ``uri``.

    Up to ``max_videos_per_page`` videos: one page (:func:`render_html`). More: ``uri`` is an index page (run
    facts, metrics, the summary of every video) linking to one self-contained page per video,
    ``<uri without .html>/<video_id>.html``, so that no page grows with the number of videos.
    """
    if len(report.videos) <= max_videos_per_page:
        _write_text(uri, render_html(report, str(uri)))
        return str(uri)
    folder = str(uri).removesuffix(".html")
    name = folder.rpartition("/")[2]
    pages = {video.video_id: f"{name}/{video.video_id}.html" for video in report.videos}
    for video in report.videos:
        page = f"{folder}/{video.video_id}.html"
        single = RunReport(f"{report.title}: {video.video_id}", report.facts, (video,), threshold=report.threshold)
        _write_text(page, render_html(single, page))
    _write_text(uri, render_html(report, str(uri), pages))
    return str(uri)


def cost_facts(manifests: list[Mapping]) -> dict[str, str]:
    """Frame-weighted mean cost per output frame over manifests that record one (issue 16), as report facts."""
    recorded = [m for m in manifests if m.get("cost") and m.get("num_frames")]
    frames = sum(int(m["num_frames"]) for m in recorded)
    if not frames:
        return {}
    facts = {}
    for key, label in (("unet_frame_forwards", "UNet frame-forwards / frame"),
                       ("tracker_point_frames", "tracker point-frames / frame")):
        total = sum(float(m["cost"].get(key, 0.0)) * int(m["num_frames"]) for m in recorded)
        facts[label] = f"{total / frames:.1f}"
    return facts


def output_report(out_uri: str, *, threshold: float = ReviewSettings().threshold) -> RunReport:
    """A report of everything committed under an output root (as opposed to one run's videos).

    Raises:
        RunOutputError: nothing is committed there.
    """
    video_ids = committed_video_ids(out_uri)
    if not video_ids:
        raise RunOutputError(f"{out_uri}: no committed video (no {MANIFEST_DIR}/*.json)")
    manifests = {video_id: read_manifest(out_uri, video_id) or {} for video_id in video_ids}
    sections = tuple(
        section_from_outputs(out_uri, video_id, "done", num_frames=int(data.get("num_frames", 0)),
                             seconds=float(data.get("timings", {}).get("total", 0.0)), threshold=threshold)
        for video_id, data in manifests.items()
    )
    facts = {
        "output root": str(out_uri),
        "committed videos": str(len(video_ids)),
        "model ids": " ".join(sorted({str(data.get("model_id")) for data in manifests.values()})),
        "config digests": " ".join(sorted({str(data.get("config_digest")) for data in manifests.values()})),
        "segmentation time (sum)": f"{sum(section.seconds for section in sections):.1f} s",
        **cost_facts(list(manifests.values())),
    }
    return RunReport("SMITE outputs", facts, sections, threshold=threshold)
