"""The batch pipeline with the real SMITE segmenter (tiny backbone, a part model trained for one epoch)."""

import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import ray
import torch
from pycocotools import mask as coco_mask

from pipeline.batch.driver import segment_videos
from pipeline.config import JobConfig, load_config
from pipeline.sinks.manifest import read_manifest
from pipeline.synth import generate_benchmark
from pipeline.training.train import train_part_model
from smite_ops.part_model import load_part_model

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _trained(tmp_path: Path, *overrides: str) -> tuple[Path, JobConfig]:
    """A synthetic car dataset (one 24-frame video) and a part model trained on it for one epoch."""
    torch.set_num_threads(1)
    data = generate_benchmark(tmp_path / "synth", size=64, num_references=2, videos_per_kind=1, num_frames=24,
                              kinds=["car"])[0]
    config = load_config("tiny", ["model.resolution=64", "train.epochs=1", "train.token_epochs=1",
                                  "runtime.windows_per_shard=1", *overrides])
    train_part_model(str(data / "references"), tmp_path / "model", config, progress=False)
    return data, config


@pytest.mark.slow
def test_the_tiny_smite_model_labels_a_video_deterministically(tmp_path: Path) -> None:
    data, config = _trained(tmp_path)
    part_model = load_part_model(str(tmp_path / "model"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runs = [segment_videos([str(data / "videos")], str(tmp_path / "model"), str(tmp_path / out), config,
                               progress=False) for out in ("a", "b")]
    finally:
        ray.shutdown()
    assert [[v.status for v in run.videos] for run in runs] == [["done"], ["done"]]
    assert runs[0].videos[0].model_seconds > 0
    parquet = Path("masks") / "video_id=car_00" / "part-00000.parquet"
    assert (tmp_path / "a" / parquet).read_bytes() == (tmp_path / "b" / parquet).read_bytes()
    rows = ds.dataset(tmp_path / "a" / "masks", partitioning="hive").to_table().to_pylist()
    assert {r["model_id"] for r in rows} == {part_model.model_id}
    assert {r["part_name"] for r in rows} <= set(part_model.part_names)
    assert sorted({r["frame_index"] for r in rows}) == list(range(24))
    for frame in range(24):
        masks = [coco_mask.decode(r["rle"]) for r in rows if r["frame_index"] == frame]
        assert (sum(masks) == 1).all()  # the parts of a frame tile it exactly once


@pytest.mark.slow
def test_guided_refinement_runs_through_the_tiny_smite_model(tmp_path: Path) -> None:
    data, config = _trained(tmp_path, "segment.hierarchical=false", "guidance.reg_weight=8.0",
                            "guidance.track_weight=0.1", "guidance.iterations=1", "output.tracks=true")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = segment_videos([str(data / "videos")], str(tmp_path / "model"), str(tmp_path / "out"), config,
                                progress=False)
    finally:
        ray.shutdown()
    [video] = result.videos
    assert video.status == "done", video.error
    assert result.workers[0].shards == 2 * 2  # windows [0,16) [8,24): phase A and phase B
    rows = ds.dataset(tmp_path / "out" / "masks", partitioning="hive").to_table().to_pylist()
    assert sorted({r["frame_index"] for r in rows}) == list(range(24))
    assert (tmp_path / "out" / "tracks" / "video_id=car_00" / "part-00000.parquet").exists()
    cost = read_manifest(str(tmp_path / "out"), "car_00")["cost"]
    # windows [0,16) [8,24), full mode: phase A 1 pass + phase B (4 passes + 3 steps x 1 update x 3) per window frame
    assert cost["unet_frame_forwards"] == 2 * 16 * (1 + 4 + 9) / 24
    assert cost["tracker_point_frames"] > 0
