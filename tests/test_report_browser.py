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

from pipeline.evaluate import EvaluationReport, VideoScores
from pipeline.report import RunReport, VideoSection, write_report
from pipeline.report_svg import FLAG_COLOUR

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


def _report(tmp_path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), MAGENTA).save(buffer, format="PNG")
    confidence = np.array([0.9, 0.88, 0.2, 0.91, 0.9, 0.1, 0.92])
    section = VideoSection(
        "clip_00", "done", num_frames=7, seconds=2.0, frame_indices=np.arange(7), confidence=confidence,
        flagged=confidence < 0.5, thumbnails=(buffer.getvalue(),) * 2,
    )
    scores = VideoScores(video_id="clip_00", kind="car", frames=7, miou_ref=75.25, miou_present=80.0, j=0.7, f=0.6,
                         flicker=0.01)
    report = RunReport("Browser check", {"model id": "model-x"}, (section,), EvaluationReport([scores], size=64))
    return Path(write_report(report, str(tmp_path / "report.html")))


def test_chromium_renders_tables_plot_and_thumbnails(tmp_path: Path) -> None:
    page = _report(tmp_path).as_uri()
    dom = _browser(tmp_path, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>Browser check</title>" in dom.stdout and dom.stdout.count("<table") == 4
    assert "75.25" in dom.stdout and dom.stdout.count('class="flagged"') == 2
    assert "2 frame(s) to review: 2, 5" in dom.stdout

    shot = tmp_path / "shot.png"
    result = _browser(tmp_path, "--window-size=1100,1600", f"--screenshot={shot}", page)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    magenta = np.all(np.abs(pixels - MAGENTA) <= 8, axis=1).sum()
    assert magenta >= 2 * 100 * 80  # both base64 thumbnails were decoded and painted
    flag = tuple(int(FLAG_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    assert np.all(np.abs(pixels - flag) <= 8, axis=1).sum() > 20  # the red review markers were drawn
