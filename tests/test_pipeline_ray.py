"""The batch pipeline on a real local Ray: outputs read back and decoded, reruns, actors, faults, bad videos.

The segmenter is the real nearest-colour baseline fitted on a synthetic reference set, built inside each
actor by the same factory mechanism as the SMITE model; its scores for a frame do not depend on the window
holding the frame, so the expected label maps are simply its per-frame argmax.
"""

import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pyarrow.dataset as ds
import pytest
import ray
import torch
from pycocotools import mask as coco_mask

from pipeline.batch.driver import BatchError, segment_videos
from pipeline.batch.results import BatchResult
from pipeline.batch.segmenters import LoadedSegmenter, NearestColourFactory
from pipeline.config import ConfigError, load_config
from pipeline.io.inputs import relative_path_of
from pipeline.io.references import load_reference_set
from pipeline.io.video import probe_video, read_frames
from pipeline.report.html import output_report
from pipeline.sinks.manifest import read_failures, read_manifest
from pipeline.synth import generate_benchmark
from smite_ops.baselines import NearestColourSegmenter

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the factories below run in Ray workers

FRAMES = 40


pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_benchmark(root, size=48, num_references=2, videos_per_kind=2, num_frames=FRAMES, kinds=["car"])[0]


@pytest.fixture(scope="module")
def bad_videos(dataset: Path) -> Path:
    folder = dataset / "videos" / "bad"  # below the videos folder: the input root, and so the ids' root
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "gone.mp4").symlink_to(folder / "missing-target.mp4")  # unreadable: a dangling link
    with av.open(str(folder / "zero.mkv"), "w", format="matroska") as container:  # a video stream, no frames
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = 32
        container.start_encoding()
    return folder


def _config(*overrides: str):
    base = ["model.resolution=64", "runtime.windows_per_shard=1", "runtime.max_shards_in_flight=2"]
    return load_config("tiny", [*base, *overrides])


def _run(inputs: list, out: Path, factory, *overrides: str) -> BatchResult:
    return segment_videos([str(i) for i in inputs], "unused", str(out), _config(*overrides), progress=False,
                          segmenter_factory=factory)


def _expected_labels(dataset: Path, video: str) -> np.ndarray:
    references = load_reference_set(str(dataset / "references"))
    classifier = NearestColourSegmenter(references.images, references.masks, references.num_parts)
    frames = torch.from_numpy(read_frames(str(dataset / "videos" / f"{video}.mp4"))).permute(0, 3, 1, 2)
    return classifier(frames).argmax(dim=1).numpy()


def _decoded_labels(out: Path, video: str) -> np.ndarray:
    """Rebuild every frame's label map from the Parquet rows; each pixel must be covered exactly once."""
    table = ds.dataset(out / "masks", partitioning="hive").to_table(filter=ds.field("video_id") == video)
    rows = table.to_pylist()
    height, width = rows[0]["height"], rows[0]["width"]
    labels = np.full((max(r["frame_index"] for r in rows) + 1, height, width), -1)
    coverage = np.zeros(labels.shape, int)
    for row in rows:
        binary = coco_mask.decode(row["rle"]).astype(bool)
        assert row["area"] == binary.sum() and 0.0 < row["score"] <= 1.0
        labels[row["frame_index"]][binary] = row["part_id"]
        coverage[row["frame_index"]] += binary
    assert (coverage == 1).all()
    return labels


def _mask_bytes(out: Path, video: str) -> dict[str, bytes]:
    """Every file of a video's mask partition, by name."""
    return {path.name: path.read_bytes() for path in (out / "masks" / f"video_id={video}").iterdir()}


@pytest.fixture(scope="module")
def first_run(dataset: Path, bad_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BatchResult]:
    out = tmp_path_factory.mktemp("out")
    factory = NearestColourFactory(str(dataset / "references"))
    return out, _run([dataset / "videos", bad_videos], out, factory, "output.tracks=true")


def test_batch_writes_masks_overlays_tracks_and_manifests(dataset: Path, first_run) -> None:
    out, result = first_run
    assert [(v.video_id, v.status) for v in result.with_status("done")] == [("car_00", "done"), ("car_01", "done")]
    assert result.frames == 2 * FRAMES and result.peak_outstanding <= 2
    for video in ("car_00", "car_01"):
        np.testing.assert_array_equal(_decoded_labels(out, video), _expected_labels(dataset, video))
        assert probe_video(str(out / "overlays" / f"{video}.mp4")).num_frames == FRAMES
        manifest = read_manifest(str(out), video)
        assert manifest is not None and manifest["num_frames"] == FRAMES and manifest["model_id"].startswith("near")
        assert manifest["config_digest"] == _config("output.tracks=true").digest()
        assert 0.0 < manifest["timings"]["write"] <= manifest["timings"]["total"]
        tracks = ds.dataset(out / "tracks", partitioning="hive").to_table(filter=ds.field("video_id") == video)
        assert tracks.num_rows > 0 and set(tracks.column("frame_index").to_pylist()) == set(range(FRAMES))
    assert not [p for p in (out / "masks").iterdir() if p.name.startswith(".")]  # nothing pending left


def test_bad_videos_land_in_failures_and_the_rest_completes(first_run) -> None:
    out, result = first_run
    failures = {relative_path_of(f.video_id): f for f in read_failures(str(out))}
    assert set(failures) == {"bad/corrupt.mp4", "bad/empty.mp4", "bad/gone.mp4", "bad/zero.mkv"}
    assert {relative_path_of(v.video_id) for v in result.with_status("failed")} == set(failures)
    failures = {name.split("/")[1].split(".")[0]: failure for name, failure in failures.items()}
    assert failures["empty"].message.endswith("empty.mp4: empty file (0 bytes)")
    assert failures["corrupt"].message.endswith("corrupt.mp4: not a video file or damaged (invalid data)")
    assert failures["gone"].message.endswith("gone.mp4: no such file")
    assert "zero.mkv: " in failures["zero"].message
    assert {f.error_type for f in failures.values()} == {"VideoError"}
    assert failures["empty"].video_id == "bad~2Fempty"
    assert not (out / "masks" / "video_id=bad~2Fempty").exists()
    assert not (out / "_manifest" / "bad~2Fempty.json").exists()


def test_rerun_skips_committed_videos_and_redoes_partial_ones_identically(dataset: Path, first_run) -> None:
    out, _ = first_run
    before = _mask_bytes(out, "car_01")
    (out / "_manifest" / "car_01.json").unlink()  # as if the run had died before committing car_01
    (out / "masks" / ".pending-car_01-0123abcd").mkdir()  # a crashed run's leftovers
    result = _run([dataset / "videos"], out, NearestColourFactory(str(dataset / "references")), "output.tracks=true")
    assert [(v.video_id, v.status) for v in result.videos] == [("car_00", "skipped"), ("car_01", "done")]
    assert _mask_bytes(out, "car_01") == before
    assert not (out / "masks" / ".pending-car_01-0123abcd").exists()
    bad = {"bad~2Fcorrupt", "bad~2Fempty", "bad~2Fgone", "bad~2Fzero.mkv~"}
    assert {f.video_id for f in read_failures(str(out))} == bad


def test_two_actors_give_byte_identical_parquet(dataset: Path, first_run, tmp_path: Path) -> None:
    out, _ = first_run
    result = _run([dataset / "videos"], tmp_path, NearestColourFactory(str(dataset / "references")),
                  "runtime.num_actors=2", "runtime.cpus_per_actor=1", "output.overlays=false")
    assert [w.shards > 0 for w in result.workers] == [True, True]
    assert len({w.pid for w in result.workers}) == 2
    for video in ("car_00", "car_01"):  # windows [0, 18) [18, 36) [22, 40), a file per segment
        assert _mask_bytes(tmp_path, video) == _mask_bytes(out, video) and len(_mask_bytes(out, video)) == 3


@dataclass(frozen=True)
class CrashOnceFactory:
    """The nearest-colour segmenter, whose process kills itself (SIGKILL) on its ``crash_call``-th window,
    once per ``marker`` file (which records the pid that died)."""

    references_dir: str
    marker: str
    crash_call: int

    def __call__(self) -> LoadedSegmenter:
        loaded = NearestColourFactory(self.references_dir)()
        calls = [0]

        def segment(frames: torch.Tensor, seed: int) -> torch.Tensor:
            calls[0] += 1
            if calls[0] == self.crash_call and not os.path.exists(self.marker):
                Path(self.marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return loaded.segment(frames, seed)

        return LoadedSegmenter(segment, loaded.part_names, loaded.model_id)


def test_a_killed_actor_is_replaced_and_every_frame_is_written_once(dataset: Path, first_run, tmp_path: Path) -> None:
    out, _ = first_run
    marker = tmp_path / "killed.pid"
    factory = CrashOnceFactory(str(dataset / "references"), str(marker), crash_call=2)
    result = _run([dataset / "videos" / "car_00.mp4"], tmp_path / "out", factory, "output.overlays=false")
    assert [v.status for v in result.videos] == ["done"]
    assert marker.exists() and int(marker.read_text()) != result.workers[0].pid  # the shard ran in a new process
    np.testing.assert_array_equal(_decoded_labels(tmp_path / "out", "car_00"), _expected_labels(dataset, "car_00"))
    assert _mask_bytes(tmp_path / "out", "car_00") == _mask_bytes(out, "car_00")


@dataclass(frozen=True)
class FailingFactory:
    """A segmenter that rejects its input (``in_call``) or cannot even be built."""

    references_dir: str
    in_call: bool

    def __call__(self) -> LoadedSegmenter:
        if not self.in_call:
            raise FileNotFoundError(f"{self.references_dir}: no model here")
        loaded = NearestColourFactory(self.references_dir)()

        def segment(frames: torch.Tensor, seed: int) -> torch.Tensor:
            raise ValueError(f"cannot segment {tuple(frames.shape)} frames")

        return LoadedSegmenter(segment, loaded.part_names, loaded.model_id)


def test_segmenter_errors_fail_the_video_or_the_batch_with_one_line(dataset: Path, tmp_path: Path) -> None:
    references = str(dataset / "references")
    result = _run([dataset / "videos" / "car_00.mp4"], tmp_path, FailingFactory(references, in_call=True))
    [failure] = read_failures(str(tmp_path))
    assert (failure.error_type, failure.message) == ("ValueError", "cannot segment (18, 3, 48, 48) frames")
    assert result.videos[0].status == "failed" and not (tmp_path / "masks" / "video_id=car_00").exists()
    expected = "cannot build the segmenter in a Ray actor: FileNotFoundError: .*: no model here$"
    with pytest.raises(BatchError, match=expected):
        _run([dataset / "videos" / "car_00.mp4"], tmp_path, FailingFactory(references, in_call=False))


def test_tracks_without_a_tracker_checkpoint_stop_the_batch_before_it_starts(dataset: Path, tmp_path: Path) -> None:
    factory = NearestColourFactory(str(dataset / "references"))
    with pytest.raises(ConfigError, match="^tracker.checkpoint: CoTracker3 needs its checkpoint file"):
        _run([dataset / "videos" / "car_00.mp4"], tmp_path / "out", factory, "tracker.kind=cotracker3",
             "output.tracks=true")
    assert not (tmp_path / "out").exists()


@dataclass(frozen=True)
class ReferenceRefineFactory:
    """The nearest-colour segmenter plus a phase-B refinement that checks what it is given and keeps the
    phase-A reference scores (so the output must equal the unguided labels)."""

    references_dir: str

    def __call__(self) -> LoadedSegmenter:
        loaded = NearestColourFactory(self.references_dir)()

        def refine(frames: torch.Tensor, reference: torch.Tensor, tracks, size: tuple[int, int], seed: int):
            if tracks.num_frames != len(frames) or len(reference) != len(frames) or size != (64, 64):
                raise ValueError(f"mismatched guidance inputs: {len(frames)} frames, {tracks.num_frames}, {size}")
            if not bool(tracks.visible.any()):
                raise ValueError("no visible track in the window")
            return reference

        return LoadedSegmenter(loaded.segment, loaded.part_names, loaded.model_id, refine)


def test_guidance_runs_phase_b_per_shard_with_shared_tracks_and_the_stitched_reference(
    dataset: Path, tmp_path: Path
) -> None:
    factory = ReferenceRefineFactory(str(dataset / "references"))
    result = _run([dataset / "videos" / "car_00.mp4"], tmp_path, factory, "guidance.reg_weight=1.0",
                  "output.overlays=false")
    assert [v.status for v in result.videos] == ["done"], result.videos[0].error
    assert result.workers[0].shards == 2 * 4  # 40 frames, (16, 8) windows [0,16) [8,24) [16,32) [24,40): A and B
    np.testing.assert_array_equal(_decoded_labels(tmp_path, "car_00"), _expected_labels(dataset, "car_00"))
    assert not (tmp_path / "tracks").exists()  # shared with the shards, not written unless output.tracks
    [failure] = _run([dataset / "videos" / "car_00.mp4"], tmp_path / "baseline", NearestColourFactory(
        str(dataset / "references")), "guidance.reg_weight=1.0", "output.overlays=false").videos
    assert failure.status == "failed" and "needs a segmenter with guidance on" in (failure.error or "")


ODD_NAMES = ["clip[1].mp4", "a::b.mp4", "x%2Fy.mp4", "new\nline.mp4", "cam1/clip.mp4", "cam2/clip.mp4"]


def test_odd_names_each_become_one_committed_video_listed_by_the_report(dataset: Path, tmp_path: Path) -> None:
    """Pattern characters, '::', percent escapes, newlines and same names in two folders: one video each."""
    for name in ODD_NAMES:
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dataset / "videos" / "car_00.mp4", tmp_path / "in" / name)
    out = tmp_path / "out"
    result = _run([tmp_path / "in" / "**" / "*.mp4"], out, NearestColourFactory(str(dataset / "references")))
    assert sorted(relative_path_of(v.video_id) for v in result.with_status("done")) == sorted(ODD_NAMES)
    ids = sorted(v.video_id for v in result.videos)
    hive = ds.dataset(out / "masks", partitioning="hive").to_table(columns=["video_id"]).column("video_id")
    assert sorted(set(hive.to_pylist())) == ids  # partition values read back as the ids, undecoded
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(f"{i}.mp4" for i in ids)
    assert sorted(section.video_id for section in output_report(str(out)).videos) == ids
    expected = _expected_labels(dataset, "car_00")
    np.testing.assert_array_equal(_decoded_labels(out, "a~3A~3Ab"), expected)
