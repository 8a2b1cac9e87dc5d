"""Batch driver edge paths on a real local Ray (issue 19): an actor whose restarts run out fails its video and
the batch goes on; the in-flight bound holds with guidance on and several videos."""

import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

from pipeline.batch.driver import segment_videos
from pipeline.batch.results import BatchResult
from pipeline.batch.segmenters import LoadedSegmenter, NearestColourFactory
from pipeline.config import load_config
from pipeline.io.video import write_video
from pipeline.sinks.manifest import read_failures, read_manifest
from pipeline.synth import generate_benchmark

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the factories below run in Ray workers

FRAMES, SIZE, POISON_SIZE = 24, 48, 40
IN_FLIGHT = 2


pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_benchmark(root, size=SIZE, num_references=2, videos_per_kind=3, num_frames=FRAMES, kinds=["car"])[0]


def run(inputs: list[Path], out: Path, factory, *overrides: str) -> BatchResult:
    config = load_config("tiny", ["model.resolution=64", "runtime.windows_per_shard=1",
                                  f"runtime.max_shards_in_flight={IN_FLIGHT}", "output.overlays=false", *overrides])
    return segment_videos([str(i) for i in inputs], "unused", str(out), config, progress=False,
                          segmenter_factory=factory)


@dataclass(frozen=True)
class PoisonFactory:
    """The nearest-colour segmenter, whose process kills itself (SIGKILL) on every window of ``width`` pixels."""

    references_dir: str
    width: int

    def __call__(self) -> LoadedSegmenter:
        loaded = NearestColourFactory(self.references_dir)()

        def segment(frames: torch.Tensor, seed: int) -> torch.Tensor:
            if frames.shape[-1] == self.width:
                os.kill(os.getpid(), signal.SIGKILL)
            return loaded.segment(frames, seed)

        return LoadedSegmenter(segment, loaded.part_names, loaded.model_id)


def test_an_actor_that_keeps_dying_fails_its_video_and_the_batch_goes_on(dataset: Path, tmp_path: Path) -> None:
    folder = tmp_path / "videos"  # one folder for all three, so the ids are the file names
    folder.mkdir()
    poison = folder / "poison.mp4"
    write_video(str(poison), np.full((FRAMES, POISON_SIZE, POISON_SIZE, 3), 90, np.uint8), fps=8)
    good = [Path(shutil.copy(video, folder)) for video in sorted((dataset / "videos").glob("*.mp4"))[:2]]
    out = tmp_path / "out"
    result = run([poison, *good], out, PoisonFactory(str(dataset / "references"), POISON_SIZE))
    assert [v.status for v in result.videos] == ["failed", "done", "done"]
    [failure] = read_failures(str(out))
    assert failure.video_id == "poison" and "Actor" in failure.error_type, failure
    assert not (out / "masks" / "video_id=poison").exists()
    for video in good:
        assert read_manifest(str(out), video.stem) is not None


@dataclass(frozen=True)
class KeepReferenceFactory:
    """The nearest-colour segmenter with a phase-B refinement that returns the phase-A reference unchanged."""

    references_dir: str

    def __call__(self) -> LoadedSegmenter:
        loaded = NearestColourFactory(self.references_dir)()

        def refine(frames: torch.Tensor, reference: torch.Tensor, tracks, size: tuple[int, int], seed: int):
            return reference

        return LoadedSegmenter(loaded.segment, loaded.part_names, loaded.model_id, refine)


def test_guided_batches_of_several_videos_keep_the_in_flight_bound(dataset: Path, tmp_path: Path) -> None:
    videos = sorted((dataset / "videos").glob("*.mp4"))
    guided = run(videos, tmp_path / "guided", KeepReferenceFactory(str(dataset / "references")),
                 "guidance.reg_weight=1.0")
    assert [v.status for v in guided.videos] == ["done"] * len(videos), [v.error for v in guided.videos]
    windows = 2  # 24 frames, (16, 8) windows [0, 16) [8, 24)
    assert sum(w.shards for w in guided.workers) == 2 * windows * len(videos)  # phases A and B
    # with guidance a video needs more than the bound to progress: phase B of its second shard reads both phase-A
    # results while its segment [8, 24) holds the first phase-B result; the peak does not grow with the videos
    assert 1 <= guided.peak_outstanding <= 4
    plain = run(videos, tmp_path / "plain", NearestColourFactory(str(dataset / "references")))
    assert 1 <= plain.peak_outstanding <= IN_FLIGHT
    for video in videos:  # the refinement kept phase A's scores, so the masks equal the unguided run's
        guided_rows = pq.read_table(tmp_path / "guided" / "masks" / f"video_id={video.stem}")
        assert guided_rows.num_rows > FRAMES
        assert guided_rows.equals(pq.read_table(tmp_path / "plain" / "masks" / f"video_id={video.stem}"))
