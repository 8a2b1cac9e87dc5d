"""The batch pipeline on a two-node Ray cluster (``ray.cluster_utils.Cluster``): shards run on both nodes."""

import sys
import threading
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import ray
from ray.cluster_utils import Cluster

from pipeline.batch.driver import segment_videos
from pipeline.batch.segmenters import NearestColourFactory
from pipeline.config import load_config
from pipeline.synth import generate_benchmark

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_nodes_share_the_shards_and_every_frame_is_written_once(cluster: Cluster, tmp_path: Path) -> None:
    data = generate_benchmark(tmp_path / "synth", size=32, num_references=1, videos_per_kind=2, num_frames=36,
                              kinds=["face"])[0]
    config = load_config("tiny", ["model.resolution=64", "runtime.num_actors=2", "runtime.windows_per_shard=1",
                                  "output.overlays=false"])
    result = segment_videos([str(data / "videos")], "unused", str(tmp_path / "out"), config, progress=False,
                            segmenter_factory=NearestColourFactory(str(data / "references")))
    assert [v.status for v in result.videos] == ["done", "done"]
    assert len({w.node_id for w in result.workers}) == 2 and all(w.shards > 0 for w in result.workers)
    table = ds.dataset(tmp_path / "out" / "masks", partitioning="hive").to_table()
    for video in ("face_00", "face_01"):
        rows = table.filter(ds.field("video_id") == video)
        frames = rows.column("frame_index").to_pylist()
        assert sorted(set(frames)) == list(range(36))
        per_frame_area = {}
        for frame, area in zip(frames, rows.column("area").to_pylist(), strict=True):
            per_frame_area[frame] = per_frame_area.get(frame, 0) + area
        assert set(per_frame_area.values()) == {32 * 32}  # the masks of a frame tile it exactly once


def test_gpu_actors_wait_for_a_gpu_node_that_joins_after_the_job_starts(cluster: Cluster, tmp_path: Path) -> None:
    """A GPU node pool scaled from zero: no node has a GPU when the job starts; the job waits and runs once one
    joins (as an autoscaler would add it), instead of being refused."""
    data = generate_benchmark(tmp_path / "synth", size=32, num_references=1, videos_per_kind=1, num_frames=8,
                              kinds=["face"])[0]
    config = load_config("tiny", ["model.resolution=64", "runtime.gpus_per_actor=1", "runtime.cpus_per_actor=0",
                                  "runtime.placement_timeout_s=120", "output.overlays=false"])
    assert ray.cluster_resources().get("GPU", 0) == 0
    results = []
    job = threading.Thread(target=lambda: results.append(segment_videos(
        [str(data / "videos")], "unused", str(tmp_path / "out"), config, progress=False,
        segmenter_factory=NearestColourFactory(str(data / "references")))))
    job.start()
    time.sleep(3.0)  # the job is waiting for placement
    assert job.is_alive() and not (tmp_path / "out" / "masks").exists()
    cluster.add_node(num_cpus=0, num_gpus=1)  # as an autoscaler would (Ray starts nodes from the main thread)
    job.join()
    [result] = results
    assert [v.status for v in result.videos] == ["done"]
    gpu_node = next(node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("GPU"))
    assert [w.node_id for w in result.workers] == [gpu_node]
