"""The Prefect flows on a temporary local Prefect API and a local Ray: segment (incremental, as a schedule
runs it), evaluate, the deployment and prefect.yaml. The weight-free nearest-colour baseline stands in for a
trained part model so that these tests stay fast; the demo test covers the trained tiny model."""

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
import ray
import yaml
from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from flows.deploy import DeploymentError, check_cron, segment_deployment
from flows.evaluate import evaluate_flow
from flows.segment import run_of, segment_flow
from pipeline.config import load_config
from pipeline.evaluation.evaluate import EvaluationReport, evaluate_predictions
from pipeline.io.references import write_reference_set
from pipeline.io.video import write_video
from pipeline.sinks.manifest import manifest_path
from pipeline.sinks.run_outputs import label_maps
from pipeline.synth import generate_benchmark

REPO = Path(__file__).resolve().parent.parent
COLOURS = np.array([[0, 0, 200], [220, 30, 30], [30, 200, 30]], np.uint8)  # background, body, wheel


@pytest.fixture(scope="module")
def prefect_and_ray():
    """One temporary Prefect API and one local Ray for the module (flows reuse a running Ray)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    no_telemetry = temporary_settings({PREFECT_SERVER_ANALYTICS_ENABLED: False})
    with no_telemetry, prefect_test_harness(server_startup_timeout=120):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def _scene(shift: int, frames: int = 4, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A body block and a wheel block on a plain background, moving right by ``shift`` pixels per frame."""
    labels = np.zeros((frames, size, size), np.uint8)
    for t in range(frames):
        labels[t, 8:20, 4 + shift * t : 20 + shift * t] = 1
        labels[t, 20:26, 6 + shift * t : 12 + shift * t] = 2
    return COLOURS[labels], labels


def _references(root: Path) -> str:
    images, labels = _scene(0, frames=1)
    write_reference_set(str(root), ["background", "body", "wheel"], [images[0]], [labels[0]])
    return str(root)


@pytest.mark.usefixtures("prefect_and_ray")
def test_a_scheduled_run_after_a_new_video_arrives_processes_only_that_video(tmp_path: Path) -> None:
    refs = _references(tmp_path / "refs")
    bucket, out = tmp_path / "bucket" / "incoming", str(tmp_path / "labels")
    bucket.mkdir(parents=True)
    for name, shift in (("a", 1), ("b", 2)):
        write_video(str(bucket / f"{name}.mp4"), _scene(shift)[0], fps=8)
    prefix = [str(bucket / "*.mp4")]

    first = segment_flow(prefix, out, config="tiny", baseline=refs)
    assert first.new_videos == ("a", "b")
    assert [(v.video_id, v.status) for v in first.batch.videos] == [("a", "done"), ("b", "done")]
    assert first.report is not None and Path(first.report).is_file()
    committed = {name: Path(manifest_path(out, name)).stat().st_mtime_ns for name in ("a", "b")}

    write_video(str(bucket / "c.mp4"), _scene(3)[0], fps=8)
    (bucket / "d.mp4").write_bytes(b"not a video")
    second_state = segment_flow(prefix, out, config="tiny", baseline=refs, return_state=True)
    assert second_state.is_failed() and second_state.message.startswith("1 of 2 video(s) failed")
    second = run_of(second_state)
    assert second.new_videos == ("c", "d")
    assert [(v.video_id, v.status) for v in second.batch.videos] == [("c", "done"), ("d", "failed")]
    assert [(s.video_id, s.error is None) for s in second.sections] == [("c", True), ("d", False)]
    assert {name: Path(manifest_path(out, name)).stat().st_mtime_ns for name in ("a", "b")} == committed

    (bucket / "d.mp4").unlink()  # the broken upload is removed: nothing is left to do
    idle = segment_flow(prefix, out, config="tiny", baseline=refs)
    assert idle.new_videos == () and idle.batch is None and idle.report is None

    # the baseline labels these flat colours, so the stored masks are the scene's labels but for a few
    # pixels on block edges that H.264 smears
    frames, decoded = label_maps(out, "c")
    assert frames.tolist() == [0, 1, 2, 3]
    assert (decoded == _scene(3)[1]).mean() > 0.98
    assert [section.confidence.size for section in (*first.sections, *second.sections)] == [4, 4, 4, 0]


@pytest.mark.usefixtures("prefect_and_ray")
def test_a_new_video_keeps_the_id_its_run_gave_it(tmp_path: Path) -> None:
    """Ids are relative to the inputs' common root: the new video of a nested glob must be segmented and
    committed under the id ``find-new-videos`` gave it, not one re-derived from its URI alone."""
    refs, out = _references(tmp_path / "refs"), str(tmp_path / "labels")
    for name, shift in (("a/x", 1), ("b/y", 2)):
        (tmp_path / "bucket" / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(str(tmp_path / "bucket" / f"{name}.mp4"), _scene(shift)[0], fps=8)
    inputs = [str(tmp_path / "bucket" / "**" / "*.mp4")]
    job = load_config("tiny")
    assert segment_flow(inputs, out, config=job, baseline=refs).new_videos == ("a~2Fx", "b~2Fy")

    write_video(str(tmp_path / "bucket" / "b" / "z.mp4"), _scene(3)[0], fps=8)
    second = segment_flow(inputs, out, config=job, baseline=refs)
    assert [(v.video_id, v.status) for v in second.batch.videos] == [("b~2Fz", "done")]
    assert Path(manifest_path(out, "b~2Fz")).is_file() and not Path(manifest_path(out, "z")).exists()
    assert segment_flow(inputs, out, config=job, baseline=refs).batch is None  # nothing left to do


@pytest.mark.usefixtures("prefect_and_ray")
def test_the_cli_exits_3_when_some_videos_failed_and_0_when_all_are_done(tmp_path: Path) -> None:
    refs = _references(tmp_path / "refs")
    bucket, out = tmp_path / "bucket", str(tmp_path / "labels")
    bucket.mkdir()
    write_video(str(bucket / "a.mp4"), _scene(1)[0], fps=8)
    (bucket / "b.mp4").write_bytes(b"not a video")
    failed = CliRunner().invoke(app, ["segment", str(bucket), "--out", out, "-c", "tiny", "--baseline", refs])
    assert failed.exit_code == 3, failed.output
    assert "1 segmented, 0 skipped, 1 failed" in failed.output and "  failed b: " in failed.output
    (bucket / "b.mp4").unlink()
    idle = CliRunner().invoke(app, ["segment", str(bucket), "--out", out, "-c", "tiny", "--baseline", refs])
    assert idle.exit_code == 0 and "nothing to do" in idle.output


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_and_ray")
def test_evaluate_flow_writes_metrics_that_match_a_direct_evaluation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_benchmark(data, size=64, num_references=2, videos_per_kind=1, num_frames=6, kinds=["car"])
    dataset = str(data / "car_coarse")
    run = evaluate_flow(dataset, str(tmp_path / "eval"), config="tiny", baseline=f"{dataset}/references", size=64)
    assert [row.video_id for row in run.evaluation.videos] == ["car_00"]
    assert run.evaluation.videos[0].frames == 6 and run.evaluation.overall.miou_ref is not None
    direct = evaluate_predictions(tmp_path / "eval" / "predictions", dataset, size=64)
    saved = EvaluationReport.from_json(Path(run.metrics_json).read_text())
    assert saved.videos == direct.videos == run.evaluation.videos
    assert Path(run.metrics_markdown).read_text() == run.evaluation.to_markdown()
    html = Path(run.report).read_text()
    assert "car_coarse" in html and "mIoU ref (%)" in html and html.count("data:image/png;base64,") == 4

    again = evaluate_flow(dataset, str(tmp_path / "eval"), config="tiny", baseline=f"{dataset}/references", size=64)
    assert again.segment.batch is None and again.evaluation.videos == run.evaluation.videos
    assert [section.status for section in again.sections] == ["skipped"]


def test_segment_deployment_runs_the_segment_flow_on_the_cron() -> None:
    deployment = segment_deployment(
        "label-new", ["s3://bucket/incoming/*.mp4"], "s3://bucket/labels", "*/15 * * * *", model="/models/car",
        config="car", overrides=["runtime.num_actors=4"],
    )
    assert deployment.entrypoint == "flows/segment.py:segment_flow"
    assert [s.schedule.cron for s in deployment.schedules] == ["*/15 * * * *"]
    assert deployment.parameters["inputs"] == ["s3://bucket/incoming/*.mp4"] and deployment.concurrency_limit == 1
    segment_flow.validate_parameters(deployment.parameters)
    with pytest.raises(DeploymentError, match="not a valid cron expression"):
        check_cron("* * *")


def test_prefect_yaml_deployments_name_real_flows_with_valid_parameters() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = []
    for deployment in spec["deployments"]:
        path, _, attribute = deployment["entrypoint"].partition(":")
        assert (REPO / path).is_file()
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute)
        flow.validate_parameters(deployment["parameters"])
        for schedule in deployment.get("schedules", []):
            check_cron(schedule["cron"])
        names.append(flow.name)
    assert names == ["segment", "evaluate", "train"]
