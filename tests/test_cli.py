"""The `smite` command line, run as a real subprocess: help, commands, and one-line input errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from flows.cli import app

SMITE = [sys.executable, "-m", "flows"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SMITE, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("config", "synth", "evaluate-masks", "train", "segment-video", "segment", "evaluate", "demo",
                    "deploy", "report"):
        assert command in result.stdout


def test_config_prints_resolved_yaml() -> None:
    result = run("config", "-c", "car", "--set", "train.epochs=7")
    assert result.returncode == 0 and result.stdout.startswith("# config digest ")
    assert "epochs: 7" in result.stdout and "- wheel" in result.stdout


def test_synth_then_evaluate_ground_truth_against_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run("synth", str(data), "--size", "64", "--frames", "6", "--videos", "1", "--kinds", "car, heldout")
    assert result.returncode == 0, result.stderr
    assert "wrote 10 datasets" in result.stdout and "heldout-d_coarse" in result.stdout
    dataset = data / "car_coarse"
    # ground truth re-written as predictions must score perfectly
    from pipeline.evaluation.evaluate import save_label_maps
    from pipeline.evaluation.smite50 import read_ground_truth

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
        (["synth", "/nonexistent/synth", "--size", "16"], "size=16"),
        (["synth", "/nonexistent/synth", "--kinds", "car,heldout-z"], "unknown kind(s) ['heldout-z']"),
    ],
)
def test_input_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    import numpy as np

    from pipeline.io.video import write_video

    video = tmp_path / "clip.mp4"
    write_video(str(video), np.zeros((3, 32, 32, 3), np.uint8), fps=5)
    result = run("segment-video", str(video), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "o"),
                 "-c", "tiny")
    assert result.returncode == 2
    assert "nomodel/manifest.json: not found" in result.stderr.strip().splitlines()[-1]


def in_process(*args: str) -> Result:
    """Run a command in this process (no interpreter start-up): exit code, stdout and stderr kept apart."""
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["segment", "/none/*.mp4", "--out", "/tmp/o", "--set", "segment.windw=3"], "segment.windw: unknown key"),
        (["segment", "/none.mp4", "--model", "/tmp/m", "--out", "/tmp/o"], "/none.mp4: no such file or folder"),
        (["evaluate", "/nonexistent/ds", "--model", "/tmp/m", "--out", "/tmp/o"], "/nonexistent/ds: ground-truth"),
        (["demo", "--kinds", "car,unicorn"], "unknown kind(s) ['unicorn']"),
        (["report", "/nonexistent/out"], "/nonexistent/out: no committed video"),
    ],
)
def test_flow_commands_refuse_bad_input_with_one_line(args: list[str], message: str) -> None:
    result = in_process(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def _video_and_references(tmp_path: Path) -> tuple[Path, Path]:
    import numpy as np

    from pipeline.io.references import write_reference_set
    from pipeline.io.video import write_video

    video = tmp_path / "in" / "clip.mp4"
    write_video(str(video), np.zeros((3, 32, 32, 3), np.uint8), fps=5)
    refs = tmp_path / "refs"
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    write_reference_set(str(refs), ["background", "object"], [np.zeros((32, 32, 3), np.uint8)], [mask])
    return video, refs


def test_segment_with_a_missing_model_is_one_line(tmp_path: Path) -> None:
    video, _ = _video_and_references(tmp_path)
    result = in_process("segment", str(video.parent), "--model", str(tmp_path / "nomodel"), "--out",
                        str(tmp_path / "o"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nomodel/manifest.json: not found" in lines[0], result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "guidance: the nearest-colour baseline cannot be guided; add --set guidance.track_weight=0"),
        (["--set", "guidance.track_weight=0", "--set", "output.tracks=true"],
         "tracker.checkpoint: CoTracker3 needs its checkpoint file; set it, or tracker.kind=lucas_kanade"),
    ],
)
def test_segment_settings_that_cannot_run_are_refused_before_anything_starts(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    video, refs = _video_and_references(tmp_path)
    result = in_process("segment", str(video.parent), "--baseline", str(refs), "--out", str(tmp_path / "o"),
                        *overrides)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("cron", "message"),
    [("61 * * * *", "--cron '61 * * * *': not a valid cron expression"), ("*/5 * * * *", "PREFECT_API_URL is not set")],
)
def test_deploy_errors_are_one_line(tmp_path: Path, cron: str, message: str) -> None:
    video, refs = _video_and_references(tmp_path)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = in_process("deploy", f"{video.parent}/*.mp4", "--out", str(tmp_path / "o"), "--baseline",
                            str(refs), "--cron", cron, "-c", "tiny")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_damaged_or_hostile_inputs_are_one_line_with_exit_2(tmp_path: Path) -> None:
    """Each case once gave a traceback (or failed only after the work); each must be one line and exit 2."""
    import torch
    from PIL import Image

    from smite_ops.part_model import PartModel, save_part_model

    video, refs = _video_and_references(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("model:\n  base: caf\u00e9\n".encode("latin-1"))
    (tmp_path / "folder.yaml").mkdir()
    damaged = tmp_path / "damaged-out"
    damaged.mkdir()
    (damaged / "failures.parquet").write_bytes(b"PAR1 not really")
    bomb = tmp_path / "bomb-refs"
    shutil.copytree(refs, bomb)
    Image.new("1", (14000, 14000)).save(next((bomb / "images").iterdir()))  # 196 Mpixels in 24 kB
    save_part_model(PartModel(["background", "object"], "tiny", "sha256:0", 64, torch.zeros(4, 8), torch.zeros(1, 8)),
                    str(tmp_path / "model"))
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest | {"resolution": "64px"}))
    segment = ["segment", str(video.parent), "--baseline", str(refs), "-c", "tiny"]
    cases = [
        (["config", "--set", "train.epochs=[1,"], "--set train.epochs=[1,: the value is not a plain YAML value"),
        (["config", "--set", "train.epochs=!!python/object/apply:os.getcwd []"], "not a plain YAML value"),
        (["config", "-c", str(tmp_path / "latin1.yaml")], "latin1.yaml: not UTF-8 text"),
        (["config", "-c", str(tmp_path / "folder.yaml")], "folder.yaml: is a folder, not a config file"),
        (["train", str(refs), "--out", str(tmp_path / "m"), "-c", "tiny", "--set", "train.epochs=1.0e+23"],
         "train.epochs: Input should be a valid integer"),
        (["train", str(bomb), "--out", str(tmp_path / "m"), "-c", "tiny"], "a possible decompression bomb"),
        ([*segment, "--out", str(damaged)], "damaged-out/failures.parquet: damaged failures file"),
        ([*segment, "--out", "foo://x"], "foo://x: cannot open this URL (Protocol not known: foo)"),
        ([*segment, "--out", "az://container/x"], "az://container/x: cannot open this URL (Install adlfs"),
        (["segment-video", str(video), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "o")],
         "'resolution' must be a positive integer (pixels), got '64px'"),
        (["report", "foo://x"], "foo://x: cannot open this URL"),
    ]
    for args, message in cases:
        result = in_process(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()
