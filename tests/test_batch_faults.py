"""The batch layer under faults and ordinary operations (issue 11, items 2, 3, 4, 6, 7, 8, 11), on a real local
Ray with the real nearest-colour baseline, real videos and real Parquet; the full disk is a real tmpfs."""

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import ray

from pipeline.batch.actors import PlacementError
from pipeline.batch.driver import segment_videos
from pipeline.batch.results import BatchResult, VideoResult
from pipeline.batch.segmenters import NearestColourFactory
from pipeline.config import ConfigError, load_config
from pipeline.io.video import read_frames, write_video
from pipeline.sinks.manifest import manifest_path, read_failures, read_manifest
from pipeline.sinks.out_lock import LOCK_FILE, OutputLockedError
from pipeline.synth import generate_benchmark

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_benchmark(root, size=48, num_references=2, videos_per_kind=2, num_frames=24, kinds=["car"])[0]


def _run(dataset: Path, out: Path, *overrides: str, videos: tuple[str, ...] = ("car_00", "car_01"),
         references: Path | None = None, **kwargs) -> BatchResult:
    config = load_config("tiny", ["model.resolution=64", "runtime.windows_per_shard=1",
                                  "runtime.max_shards_in_flight=2", *overrides])
    factory = NearestColourFactory(str(references or dataset / "references"))
    inputs = [video if video.endswith(".mp4") else str(dataset / "videos" / f"{video}.mp4") for video in videos]
    return segment_videos(inputs, "unused", str(out), config, progress=False, segmenter_factory=factory, **kwargs)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_readers_of_masks_only_ever_see_committed_partitions(dataset: Path, tmp_path: Path) -> None:
    seen: set[str] = set()
    done = threading.Event()

    def read_while_running() -> None:  # what DuckDB's read_parquet('masks/*/*.parquet') lists, and pyarrow reads
        while not done.is_set():
            for folder, _, names in os.walk(tmp_path / "masks"):
                seen.update(Path(folder, name).relative_to(tmp_path).as_posix() for name in names)
            if (tmp_path / "masks").is_dir():
                ds.dataset(tmp_path / "masks", partitioning="hive").to_table()
            time.sleep(0.005)

    reader = threading.Thread(target=read_while_running)
    reader.start()
    try:
        result = _run(dataset, tmp_path)
    finally:
        done.set()
        reader.join()
    assert [v.status for v in result.videos] == ["done", "done"]
    # 24 frames in windows [0, 18) [6, 24), a window per shard: one file per segment, [0, 6) and [6, 24)
    assert seen == {f"masks/video_id={v}/part-0000{i}.parquet" for v in ("car_00", "car_01") for i in (0, 1)}
    assert not (tmp_path / "_staging").exists()


def test_each_video_is_reported_as_soon_as_it_finishes(dataset: Path, tmp_path: Path) -> None:
    calls: list[tuple[str, str, bool]] = []

    def on_video(video: VideoResult) -> None:  # is the other video committed yet?
        other = "car_01" if video.video_id == "car_00" else "car_00"
        calls.append((video.video_id, video.status, read_manifest(str(tmp_path), other) is not None))

    # car_01 five times as long: its ten shards cannot all be done while car_00's commit is reported, at the in-flight
    # bound of 2, unless that report waited for the batch
    videos = tmp_path.parent / f"{tmp_path.name}-videos"
    videos.mkdir()
    shutil.copy(dataset / "videos" / "car_00.mp4", videos)
    write_video(str(videos / "car_01.mp4"), np.concatenate([read_frames(str(dataset / "videos" / "car_01.mp4"))] * 5),
                fps=8)
    result = _run(dataset, tmp_path, videos=(str(videos / "car_00.mp4"), str(videos / "car_01.mp4")), on_video=on_video)
    assert [v.status for v in result.videos] == ["done", "done"]
    assert calls == [("car_00", "done", False), ("car_01", "done", True)]


def test_a_missing_tracker_checkpoint_file_is_refused_before_anything_starts(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^tracker.checkpoint: .*nowhere.pth: no such file$"):
        _run(dataset, tmp_path / "out", "tracker.kind=cotracker3", f"tracker.checkpoint={tmp_path}/nowhere.pth",
             "output.tracks=true")
    assert not (tmp_path / "out").exists()


def test_more_actors_than_the_cluster_can_place_run_with_those_placed_and_say_so(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result = _run(dataset, tmp_path, "runtime.num_actors=3", "runtime.cpus_per_actor=1",
                  "runtime.placement_timeout_s=1")
    assert [v.status for v in result.videos] == ["done", "done"] and len(result.workers) == 2
    said = capsys.readouterr().out
    assert "runtime.num_actors=3: only 2 shard actor(s) of {'CPU': 1.0} could be placed within 1 s" in said
    assert "waiting up to 1 s for Ray to place 1 of 3 shard actor(s)" in said
    assert ray.util.placement_group_table() == {} or all(
        group["state"] == "REMOVED" for group in ray.util.placement_group_table().values()
    )


def test_actors_that_no_node_can_place_are_refused_in_one_line(dataset: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    refused = r"^runtime: Ray could not place a shard actor of \{'CPU': 1.0, 'GPU': 1.0\} within 1 s .*gpus_per_actor"
    with pytest.raises(PlacementError, match=refused) as error:
        _run(dataset, tmp_path, "runtime.gpus_per_actor=1", "runtime.placement_timeout_s=1")
    assert "\n" not in str(error.value) and time.perf_counter() - started < 30
    assert not (tmp_path / LOCK_FILE).exists() and not (tmp_path / "masks").exists()


def test_a_model_change_relabels_and_a_runtime_change_does_not(dataset: Path, tmp_path: Path) -> None:
    left = ["_staging/0123/masks/video_id=car_00/part-00000.parquet", "overlays/.car_00.mp4.0123.partial",
            "masks/.pending-car_00-0123abcd/part-00000.parquet"]  # what a killed run leaves (issue 11, item 11)
    for name in left:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"partial")
    first = _run(dataset, tmp_path, videos=("car_00",))
    assert [v.status for v in first.videos] == ["done"]
    assert _files(tmp_path) == ["_manifest/car_00.json", "failures.parquet", "masks/video_id=car_00/part-00000.parquet",
                                "masks/video_id=car_00/part-00001.parquet", "overlays/car_00.mp4"]
    committed = Path(manifest_path(str(tmp_path), "car_00")).read_text()
    key = json.loads(committed)["commit_key"]
    runtime_only = _run(dataset, tmp_path, "runtime.num_actors=2", "runtime.max_shards_in_flight=3", videos=("car_00",))
    assert [v.status for v in runtime_only.videos] == ["skipped"]
    assert Path(manifest_path(str(tmp_path), "car_00")).read_text() == committed

    other_refs = tmp_path.parent / f"{tmp_path.name}-refs"
    refs = dataset / "references"
    subprocess.run(["cp", "-r", str(refs), str(other_refs)], check=True)
    mask = sorted((other_refs / "masks").iterdir())[0]
    mask.write_bytes(sorted((refs / "masks").iterdir())[1].read_bytes())  # another annotation: another model
    relabelled = _run(dataset, tmp_path, videos=("car_00",), references=other_refs)
    assert [v.status for v in relabelled.videos] == ["done"]
    assert read_manifest(str(tmp_path), "car_00")["commit_key"] != key


def test_a_second_run_into_the_same_output_is_refused_and_the_first_completes(dataset: Path, tmp_path: Path) -> None:
    results: list[BatchResult] = []
    first = threading.Thread(target=lambda: results.append(_run(dataset, tmp_path)))
    first.start()
    while not (tmp_path / LOCK_FILE).exists():
        time.sleep(0.01)
    with pytest.raises(OutputLockedError, match=rf"^--out {tmp_path}: another run is writing here \(pid {os.getpid()}"):
        _run(dataset, tmp_path)
    first.join()
    assert [v.status for v in results[0].videos] == ["done", "done"]
    assert read_failures(str(tmp_path)) == [] and not (tmp_path / LOCK_FILE).exists()


def test_a_full_disk_fails_that_video_only_and_leaves_only_committed_data(dataset: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    # incompressible: its masks and overlay need far more than is left; beside car_00, so that car_00 keeps its id
    # (ids are paths relative to the inputs' common folder)
    noise = str(dataset / "videos" / "noise.mp4")
    write_video(noise, np.random.default_rng(0).integers(0, 256, (24, 96, 96, 3), dtype=np.uint8), fps=8)
    try:
        assert [v.status for v in _run(dataset, disk, videos=("car_00",)).videos] == ["done"]
        committed = {name: (disk / name).read_bytes() for name in _files(disk) if name != "failures.parquet"}
        stat = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 48 * 1024))  # lease, probe fit
        result = _run(dataset, disk, videos=("car_00", noise))
        assert [v.status for v in result.videos] == ["skipped", "failed"]
        assert "No space left on device" in result.videos[1].error, result.videos[1].error
        assert _files(disk) == sorted([*committed, "failures.parquet", "filler"])
        assert {name: (disk / name).read_bytes() for name in committed} == committed
        assert [f.video_id for f in read_failures(str(disk))] == ["noise"]
        (disk / "filler").unlink()
        assert [v.status for v in _run(dataset, disk, videos=("car_00", noise)).videos] == ["skipped", "done"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
