"""The Parquet mask dataset: schema, RLE round trip, atomic commit, byte-identical reruns."""

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as coco_mask

from pipeline.sinks.masks import MASK_SCHEMA, VideoMaskWriter

PARTS = ["background", "body", "wheel"]


def _frames(count: int = 5, size: tuple[int, int] = (12, 16)) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    frames = []
    for index in range(count):
        labels = np.zeros(size, np.int64)
        labels[2 : 6 + index, 3:9] = 1
        if index % 2 == 0:
            labels[8:11, 10:14] = 2
        probs = rng.random((len(PARTS), *size)).astype(np.float32)
        frames.append((labels, probs / probs.sum(0)))
    return frames


def _write(root: Path, video_id: str, frames) -> str:
    with VideoMaskWriter(str(root), video_id, PARTS, "tiny@abc", frames_per_row_group=2) as writer:
        for index, (labels, probs) in enumerate(frames):
            writer.write_frame(index, index / 25.0, labels, probs)
        return writer.commit()


def test_rows_decode_back_to_the_label_maps(tmp_path: Path) -> None:
    frames = _frames()
    _write(tmp_path, "clip", frames)
    table = ds.dataset(tmp_path / "masks", partitioning="hive").to_table()
    assert set(MASK_SCHEMA.names) <= set(table.column_names) and "video_id" in table.column_names
    rows = table.to_pylist()
    assert len(rows) == sum(len(np.unique(labels)) for labels, _ in frames)
    for index, (labels, probs) in enumerate(frames):
        rebuilt = np.full(labels.shape, -1)
        for row in (r for r in rows if r["frame_index"] == index):
            binary = coco_mask.decode(row["rle"]).astype(bool)
            assert row["area"] == binary.sum() and row["part_name"] == PARTS[row["part_id"]]
            assert row["score"] == pytest.approx(probs[row["part_id"]][binary].mean(), rel=1e-6)
            ys, xs = np.nonzero(binary)
            assert row["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            rebuilt[binary] = row["part_id"]
        np.testing.assert_array_equal(rebuilt, labels)
        assert {r["video_id"] for r in rows} == {"clip"}


def test_same_input_gives_byte_identical_files(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", "clip", _frames())
    second = _write(tmp_path / "b", "clip", _frames())
    assert (Path(first) / "part-00000.parquet").read_bytes() == (Path(second) / "part-00000.parquet").read_bytes()


def test_failure_midway_leaves_nothing_visible(tmp_path: Path) -> None:
    frames = _frames()
    with pytest.raises(RuntimeError), VideoMaskWriter(str(tmp_path), "clip", PARTS, "m") as writer:
        writer.write_frame(0, 0.0, *frames[0])
        raise RuntimeError("actor died")
    assert not (tmp_path / "masks").exists() and [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_an_open_partition_is_invisible_to_readers_of_masks(tmp_path: Path) -> None:
    frames = _frames()
    with VideoMaskWriter(str(tmp_path), "clip", PARTS, "m", frames_per_row_group=1) as writer:
        for index, (labels, probabilities) in enumerate(frames):
            writer.write_frame(index, index / 24, labels, probabilities)
        assert [p for p in tmp_path.rglob("*") if p.is_file()]  # rows are on disk, in the staging area
        assert not (tmp_path / "masks").exists()  # what `read_parquet('masks/*/*.parquet')` would list
        writer.commit()
    files = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    assert files == ["masks/video_id=clip/part-00000.parquet"]


def test_rewrite_replaces_a_committed_partition(tmp_path: Path) -> None:
    _write(tmp_path, "clip", _frames(5))
    final = _write(tmp_path, "clip", _frames(3))
    assert pq.read_table(final).num_rows == sum(len(np.unique(labels)) for labels, _ in _frames(3))
    assert [p.name for p in (tmp_path / "masks").iterdir()] == ["video_id=clip"]


def test_memory_filesystem(tmp_path: Path) -> None:
    final = _write("memory://sink-test", "clip", _frames(2))  # type: ignore[arg-type]
    import fsspec

    with fsspec.open(f"memory://{final}/part-00000.parquet", "rb") as handle:
        assert pq.read_table(handle).num_rows > 0
