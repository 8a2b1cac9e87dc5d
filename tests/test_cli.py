"""The `smite` command line, run as a real subprocess: help, commands, and one-line input errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SMITE = [sys.executable, "-m", "flows"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SMITE, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("config", "synth", "evaluate-masks", "train", "segment-video"):
        assert command in result.stdout


def test_config_prints_resolved_yaml() -> None:
    result = run("config", "-c", "car", "--set", "train.epochs=7")
    assert result.returncode == 0 and result.stdout.startswith("# config digest ")
    assert "epochs: 7" in result.stdout and "- wheel" in result.stdout


def test_synth_then_evaluate_ground_truth_against_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run("synth", str(data), "--size", "64", "--frames", "6", "--videos", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 6 datasets" in result.stdout
    dataset = data / "car_coarse"
    # ground truth re-written as predictions must score perfectly
    from pipeline.evaluate import save_label_maps
    from pipeline.smite50 import read_ground_truth

    truth = read_ground_truth(dataset / "gt" / "car_00")
    save_label_maps(tmp_path / "pred", "car_00", truth.frame_indices, truth.labels)
    report = tmp_path / "report.json"
    result = run("evaluate-masks", str(tmp_path / "pred"), str(dataset), "--size", "64", "--json", str(report))
    assert result.returncode == 0, result.stderr
    assert "car_00" in result.stdout
    video = json.loads(report.read_text())["videos"][0]
    assert video["miou_ref"] == pytest.approx(100.0) and video["j"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "-c", "car", "--set", "train.epochz=1"], "train.epochz: unknown key"),
        (["config", "-c", "unicorn"], "unicorn: no such config file or preset"),
        (["train", "/nonexistent/refs", "--out", "/tmp/unused"], "/nonexistent/refs: reference set folder not found"),
        (["segment-video", "/none.mp4", "--model", "/tmp/m", "--out", "/tmp/o"], "/none.mp4: no such file"),
        (["evaluate-masks", "/nonexistent/pred", "/nonexistent/gt"], "/nonexistent/"),
    ],
)
def test_input_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    import numpy as np

    from pipeline.video import write_video

    video = tmp_path / "clip.mp4"
    write_video(str(video), np.zeros((3, 32, 32, 3), np.uint8), fps=5)
    result = run("segment-video", str(video), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "o"),
                 "-c", "tiny")
    assert result.returncode == 2
    assert "nomodel/manifest.json: not found" in result.stderr.strip().splitlines()[-1]
