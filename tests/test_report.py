"""The run report: reading outputs back (confidence, label maps, thumbnails), flagging, SVG plot, HTML."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.batch.results import VideoResult
from pipeline.evaluation.evaluate import EvaluationReport, VideoScores
from pipeline.io.video import write_video
from pipeline.report.html import RunReport, VideoSection, output_report, render_html, video_section, write_report
from pipeline.report.svg import presence_timeline, score_plot
from pipeline.sinks.masks import VideoMaskWriter
from pipeline.sinks.run_outputs import (
    RunOutputError,
    flag_low_confidence,
    frame_confidence,
    frame_thumbnails,
    label_maps,
)

PARTS = ["background", "body", "wheel"]


def _labels(frames: int, height: int = 12, width: int = 16) -> np.ndarray:
    """Frame t: background, a body block, and a wheel block moving right by one pixel per frame."""
    labels = np.zeros((frames, height, width), np.uint8)
    for t in range(frames):
        labels[t, 2:8, 3:12] = 1
        labels[t, 8:11, 2 + t : 5 + t] = 2
    return labels


def _probabilities(labels: np.ndarray, confidence: float) -> np.ndarray:
    """``(P, H, W)`` probabilities: ``confidence`` on the label, the rest spread evenly."""
    other = (1.0 - confidence) / (len(PARTS) - 1)
    probabilities = np.full((len(PARTS), *labels.shape), other, np.float32)
    np.put_along_axis(probabilities, labels[None].astype(np.int64), confidence, axis=0)
    return probabilities


def _write_masks(root: Path, video_id: str, labels: np.ndarray, confidences: list[float]) -> None:
    with VideoMaskWriter(str(root), video_id, PARTS, "model-x", frames_per_row_group=2) as writer:
        for index, (frame, confidence) in enumerate(zip(labels, confidences, strict=True)):
            writer.write_frame(index, index / 24.0, frame, _probabilities(frame, confidence))
        writer.commit()


def test_confidence_and_label_maps_read_back_what_was_written(tmp_path: Path) -> None:
    labels = _labels(5)
    confidences = [0.9, 0.8, 0.3, 0.95, 0.9]
    _write_masks(tmp_path, "clip", labels, confidences)
    frames, confidence = frame_confidence(str(tmp_path), "clip")
    assert frames.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(confidence, confidences, atol=1e-6)
    frames, decoded = label_maps(str(tmp_path), "clip")
    assert frames.tolist() == [0, 1, 2, 3, 4] and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, labels)


def test_missing_masks_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(RunOutputError, match=r"masks/video_id=nope: no mask files"):
        frame_confidence(str(tmp_path), "nope")


def test_flagging_uses_the_floor_and_the_drop_below_the_median() -> None:
    confidence = np.array([0.9, 0.92, 0.7, 0.91, 0.4, 0.9])
    flags = flag_low_confidence(confidence, threshold=0.5, drop=0.15)
    assert flags.tolist() == [False, False, True, False, True, False]  # 0.7 < median 0.9 - 0.15; 0.4 < 0.5
    assert flag_low_confidence(np.zeros(0)).shape == (0,)
    assert not flag_low_confidence(np.full(4, 0.6), threshold=0.5).any()


def test_thumbnails_are_pngs_of_the_requested_frames_and_width(tmp_path: Path) -> None:
    frames = np.zeros((9, 32, 48, 3), np.uint8)
    for t in range(9):
        frames[t, :, :, 0] = 20 * t  # the red level encodes the frame index
    video = tmp_path / "v.mp4"
    write_video(str(video), frames, fps=10)
    images = [np.asarray(Image.open(io.BytesIO(png))) for png in frame_thumbnails(str(video), [8, 0, 4], width=24)]
    assert [image.shape for image in images] == [(16, 24, 3)] * 3
    assert [round(float(image[..., 0].mean()) / 20) for image in images] == [8, 0, 4]


def test_svg_plot_marks_each_flagged_frame() -> None:
    svg = score_plot(np.arange(4), np.array([0.9, 0.2, 0.8, 0.1]), np.array([False, True, False, True]), 0.5,
                          title="a<b")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="flagged"') == 2 and "a&lt;b" in svg
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(points) == 4
    ys = [float(point.split(",")[1]) for point in points]
    assert ys[1] > ys[0] and ys[3] > ys[2]  # lower values are drawn lower (larger y)


def test_presence_timeline_draws_one_bar_per_run_of_frames() -> None:
    present = np.ones((6, 3), bool)
    present[2:4, 2] = False  # the wheel is missing in frames 2 and 3
    svg = presence_timeline(np.arange(6), present, PARTS, ["#000000", "#ff0000", "#00ff00"],
                            np.array([0, 0, 1, 1, 0, 0], bool))
    assert svg.count('class="present"') == 3  # body: 0-5; wheel: 0-1 and 4-5
    assert "wheel: frames 0-1" in svg and "wheel: frames 4-5" in svg and "body: frames 0-5" in svg
    assert svg.count('class="flagged"') == 2 and ">background<" not in svg


def _section(tmp_path: Path) -> VideoSection:
    labels = _labels(6, 32, 48)
    labels[2][labels[2] == 2] = 1  # the wheel disappears in frame 2
    _write_masks(tmp_path, "clip", labels, [0.9, 0.9, 0.2, 0.9, 0.9, 0.9])
    write_video(str(tmp_path / "overlays" / "clip.mp4"), np.full((6, 32, 48, 3), 200, np.uint8), fps=6)
    return video_section(str(tmp_path), VideoResult("clip", "/in/clip.mp4", "done", num_frames=6, seconds=1.5))


def test_html_report_is_self_contained_and_lists_frames_to_review(tmp_path: Path) -> None:
    section = _section(tmp_path)
    assert section.review_frames == [2] and len(section.thumbnails) == 4
    scores = VideoScores(video_id="clip", kind="car", frames=6, miou_ref=87.5, miou_present=90.0, j=0.8, f=0.7,
                         flicker=None)
    failed = VideoSection("broken", "failed", error="/in/broken.mp4: not a video <bad>")
    report = RunReport("Run <1>", {"model id": "model-x", "config digest": "abc123"}, (section, failed),
                       EvaluationReport([scores], size=64))
    html = render_html(report, str(tmp_path / "reports" / "r.html"))
    assert html.startswith("<!DOCTYPE html>") and "Run &lt;1&gt;" in html
    assert not re.search(r'src="(?!data:)', html)  # every image is inline
    links = re.findall(r'href="([^"]+)"', html)  # in-page anchors and the overlay video, relative to the page
    assert sorted(set(links)) == ["#video-broken", "#video-clip", "../overlays/clip.mp4"]
    assert html.count('src="data:image/png;base64,') == 4
    assert "87.50" in html and "n/a" in html and "model-x" in html and "abc123" in html
    assert "1 frame(s) to review: 2" in html and "not a video &lt;bad&gt;" in html
    assert "frame 2: score 0.54; part 2 missing; part confidence 0.20" in html  # the worst frame comes first
    assert html.index("overlay frame 2") < html.index("overlay frame 0")
    assert html.count('class="swatch"') >= 2 and ">wheel<" not in html  # no manifest here: generic part names
    path = write_report(report, str(tmp_path / "reports" / "r.html"))
    assert Path(path).read_text(encoding="utf-8") == html


def test_output_report_covers_every_committed_video(tmp_path: Path) -> None:
    from pipeline.sinks.manifest import VideoManifest, write_manifest

    _section(tmp_path)
    write_manifest(str(tmp_path), VideoManifest(
        video_id="clip", uri="/in/clip.mp4", num_frames=6, fps=6.0, height=32, width=48, model_id="model-x",
        part_names=PARTS, config_digest="d1", outputs={}, timings={"total": 2.0, "model": 1.0}, mask_rows=18,
    ))
    report = output_report(str(tmp_path))
    assert [section.video_id for section in report.videos] == ["clip"]
    assert report.facts["model ids"] == "model-x" and report.facts["committed videos"] == "1"
    [section] = report.videos
    assert section.part_names == tuple(PARTS) and section.review_frames == [2]
    html = render_html(report)
    assert ">body</span>" in html and ">wheel</span>" in html  # the colour legend names the parts
    with pytest.raises(RunOutputError, match="no committed video"):
        output_report(str(tmp_path / "empty"))


def test_many_videos_get_an_index_page_and_one_page_each(tmp_path: Path) -> None:
    from dataclasses import replace

    section = _section(tmp_path)
    videos = tuple(replace(section, video_id=name) for name in ("a", "b", "c"))
    index = Path(write_report(RunReport("Big run", {"model id": "m"}, videos), str(tmp_path / "r.html"),
                              max_videos_per_page=2))
    html = index.read_text(encoding="utf-8")
    assert re.findall(r'href="(r/[^"]+)"', html) == ["r/a.html", "r/b.html", "r/c.html"]
    assert "Worst frames first" not in html and "data:image/png" not in html  # the index stays small
    for name in ("a", "b", "c"):
        page = (tmp_path / "r" / f"{name}.html").read_text(encoding="utf-8")
        assert f'id="video-{name}"' in page and page.count("data:image/png") == 4
        assert 'href="../overlays/clip.mp4"' in page  # links stay relative to each page
    single = Path(write_report(RunReport("Small", {}, videos[:2]), str(tmp_path / "s.html"), max_videos_per_page=2))
    assert single.read_text(encoding="utf-8").count("Worst frames first") == 2 and not (tmp_path / "s").exists()
