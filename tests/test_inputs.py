"""Video ids: unique, stable and reversible for any name, safe as file names and hive partition values."""

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.io.inputs import expand_inputs, relative_path_of, video_id_for, video_id_of
from pipeline.io.video import probe_video, write_video

ODD_NAMES = ["clip[1].mp4", "a::b.mp4", "x%2Fy.mp4", "new\nline.mp4", ".hidden.mp4", "café.mp4", "sp ace.mp4",
             "clip.mov", "clip.mp4", "~tilde.mp4", "a=b.mp4", "semi;colon#hash?.mp4"]
SAFE_ID = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("video") / "v.mp4"
    write_video(str(path), np.zeros((2, 16, 16, 3), np.uint8), fps=4.0)
    return path.read_bytes()


@given(st.text(min_size=1))
def test_ids_round_trip_and_are_safe_for_any_text(relative_path: str) -> None:
    video_id = video_id_for(relative_path)
    assert relative_path_of(video_id) == relative_path
    assert SAFE_ID.fullmatch(video_id) and "/" not in video_id and "=" not in video_id and "%" not in video_id


def test_simple_names_keep_readable_ids() -> None:
    assert [video_id_for(p) for p in ("clip.mp4", "cam1/clip.mp4", "clip.final.mp4", "clip.MOV", "a/.b.mp4")] == [
        "clip", "cam1~2Fclip", "clip.final", "clip.MOV~", "a~2F.b"]
    assert video_id_of("s3://bucket/a/clip.final.mp4") == "clip.final"
    assert video_id_of("/videos/a::b.mp4") == "a~3A~3Ab"


def test_odd_names_in_a_folder_each_get_a_distinct_readable_video(tmp_path: Path, tiny_video: bytes) -> None:
    for name in ODD_NAMES:
        (tmp_path / name).write_bytes(tiny_video)
    videos = expand_inputs([str(tmp_path)])
    assert sorted(relative_path_of(v.video_id) for v in videos) == sorted(ODD_NAMES)
    assert len({v.video_id for v in videos}) == len(ODD_NAMES)
    for video in videos:
        assert SAFE_ID.fullmatch(video.video_id)
        assert Path(video.uri).name == relative_path_of(video.video_id)  # the URI is the file, not re-parsed
        assert probe_video(video.uri).num_frames == 2
    # a name with pattern characters given on its own is that file, not a pattern
    [literal] = expand_inputs([str(tmp_path / "clip[1].mp4")])
    assert (literal.video_id, literal.uri) == ("clip~5B1~5D", str(tmp_path / "clip[1].mp4"))


def test_same_names_in_different_folders_get_different_ids(tmp_path: Path, tiny_video: bytes) -> None:
    for camera in ("cam1", "cam2"):
        (tmp_path / camera).mkdir()
        (tmp_path / camera / "clip.mp4").write_bytes(tiny_video)
    expected = ["cam1~2Fclip", "cam2~2Fclip"]
    assert [v.video_id for v in expand_inputs([str(tmp_path / "*" / "clip.mp4")])] == expected
    assert [v.video_id for v in expand_inputs([str(tmp_path / "**" / "*.mp4")])] == expected
    assert [v.video_id for v in expand_inputs([str(tmp_path / "cam1"), str(tmp_path / "cam2")])] == expected
    assert [v.video_id for v in expand_inputs([str(tmp_path / "cam1")])] == ["clip"]  # one folder: its own root
    shutil.copytree(tmp_path / "cam1", tmp_path / "memory-copy")
    assert [v.video_id for v in expand_inputs([f"file://{tmp_path}/cam1/clip.mp4"])] == ["clip"]


def test_ids_are_hive_partition_values_that_read_back_unchanged(tmp_path: Path) -> None:
    ids = [video_id_for(name) for name in ODD_NAMES]
    for index, video_id in enumerate(ids):
        folder = tmp_path / "masks" / f"video_id={video_id}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"frame_index": [index]}), folder / "part-00000.parquet")
    table = ds.dataset(tmp_path / "masks", partitioning="hive").to_table()
    assert sorted(table.column("video_id").to_pylist()) == sorted(ids)
