"""The HTML report rendered by a real headless browser (Chromium): tables, inline images and the SVG plot.

Needs Chromium (Debian: ``apt-get install -y chromium``); skipped with that hint when it is absent.
"""

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation.evaluate import EvaluationReport, VideoScores
from pipeline.report.html import RunReport, VideoSection, write_report
from pipeline.report.review import review_signals
from pipeline.report.svg import FLAG_COLOUR
from pipeline.sinks.overlay import part_palette

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (apt-get install -y chromium)")

MAGENTA = (255, 0, 255)


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run([BROWSER, *flags, *args], capture_output=True, text=True, timeout=120)


PARTS = ("background", "body", "wheel")


def _report(tmp_path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), MAGENTA).save(buffer, format="PNG")
    area = np.tile([0.6, 0.3, 0.1], (7, 1))
    area[[2, 5], 2] = 0.0  # the wheel goes missing in frames 2 and 5
    review = review_signals(np.arange(7), area, np.full(area.shape, 0.9))
    section = VideoSection(
        "clip_00", "done", num_frames=7, seconds=2.0, frame_indices=np.arange(7), confidence=review.part_confidence,
        flagged=review.flagged, thumbnails=(buffer.getvalue(),) * 2, thumbnail_frames=(2, 5), part_names=PARTS,
        review=review, overlay=str(tmp_path / "overlays" / "clip_00.mp4"),
    )
    scores = VideoScores(video_id="clip_00", kind="car", frames=7, miou_ref=75.25, miou_present=80.0, j=0.7, f=0.6,
                         flicker=0.01)
    report = RunReport("Browser check", {"model id": "model-x"}, (section,), EvaluationReport([scores], size=64))
    return Path(write_report(report, str(tmp_path / "reports" / "report.html")))


def test_chromium_renders_tables_plot_and_thumbnails(tmp_path: Path) -> None:
    page = _report(tmp_path).as_uri()
    dom = _browser(tmp_path, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>Browser check</title>" in dom.stdout and dom.stdout.count("<table") == 5
    assert "75.25" in dom.stdout and dom.stdout.count('class="flagged"') == 4  # score plot and timeline
    assert "2 frame(s) to review: 2, 5" in dom.stdout and "frame 2: score 0.95; wheel missing" in dom.stdout
    assert dom.stdout.count('class="present"') == 4  # body 0-6; wheel 0-1, 3-4, 6
    assert 'href="../overlays/clip_00.mp4"' in dom.stdout

    shot = tmp_path / "shot.png"
    result = _browser(tmp_path, "--window-size=1100,1600", f"--screenshot={shot}", page)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    magenta = np.all(np.abs(pixels - MAGENTA) <= 8, axis=1).sum()
    assert magenta >= 2 * 100 * 80  # both base64 thumbnails were decoded and painted
    flag = tuple(int(FLAG_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    assert np.all(np.abs(pixels - flag) <= 8, axis=1).sum() > 20  # the red review markers were drawn
    for colour in part_palette(len(PARTS))[1:].astype(int):  # legend swatches and presence bars in part colours
        assert np.all(np.abs(pixels - colour) <= 8, axis=1).sum() > 200
