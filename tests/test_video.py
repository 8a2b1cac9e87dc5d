"""Video I/O: probing, seeking decode, chunked reads, fsspec URLs, atomic writes and error messages."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import fsspec
import numpy as np
import pytest
from PIL import Image

from pipeline.io.video import (
    VideoError,
    VideoInfo,
    _encode,
    frame_pts_seconds,
    iter_frames,
    probe_video,
    read_frames,
    write_video,
)

T, H, W, FPS = 40, 64, 96, 10.0


def _pattern(num_frames: int = T, height: int = H, width: int = W) -> np.ndarray:
    """A smooth colour pattern drifting over time: (T, H, W, 3) uint8, deterministic."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    red = 128 + 100 * np.sin(2 * np.pi * (x + 2 * t) / width)
    green = 128 + 100 * np.cos(2 * np.pi * (y - t) / height)
    blue = 60 + (x + y) + 0 * t  # static ramp (t only broadcasts the shape)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return _pattern()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, source: np.ndarray) -> str:
    path = str(tmp_path_factory.mktemp("video") / "clip.mp4")
    write_video(path, source, FPS, crf=18)
    return path


@pytest.fixture(scope="module")
def decoded(video: str) -> np.ndarray:
    return read_frames(video)


def test_probe_reports_count_rate_size(video: str) -> None:
    assert probe_video(video) == VideoInfo(uri=video, num_frames=T, fps=FPS, height=H, width=W, duration_s=4.0)


def test_written_video_is_h264_with_b_frames_and_keyframes_every_two_seconds(video: str) -> None:
    with av.open(video) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        packets = [packet for packet in container.demux(stream) if packet.size]
    keyframes = [round(p.pts * p.time_base * FPS) for p in packets if p.is_keyframe]
    assert keyframes[0] == 0 and len(keyframes) > 1 and all(np.diff(keyframes) <= 2 * FPS)
    assert any(p.pts != p.dts for p in packets)  # reordered (B-)frames
    assert any(0 < k <= 25 for k in keyframes)  # so reading from frame 25 really seeks


def test_full_decode_is_close_to_source(decoded: np.ndarray, source: np.ndarray) -> None:
    assert decoded.shape == (T, H, W, 3) and decoded.dtype == np.uint8
    error = np.abs(decoded.astype(np.int16) - source.astype(np.int16))
    # measured at crf 18: mean 2.29, 99th percentile 7; about 2.1 of the mean is the yuv420p round trip
    # itself (chroma subsampling, and swscale's fast yuv420p -> rgb24 path reads ~1 level dark)
    assert error.mean() < 2.6
    assert np.percentile(error, 99) <= 8


@pytest.mark.parametrize("start", [0, 17, 18, 19, 20, 25, 34])
def test_seeking_decode_equals_sequential_decode(video: str, decoded: np.ndarray, start: int) -> None:
    np.testing.assert_array_equal(read_frames(video, start, start + 6), decoded[start : start + 6])


def test_read_to_end_and_last_frame(video: str, decoded: np.ndarray) -> None:
    np.testing.assert_array_equal(read_frames(video, 30), decoded[30:])
    np.testing.assert_array_equal(read_frames(video, T - 1, T), decoded[T - 1 :])


@pytest.mark.parametrize(("start", "stop", "chunk"), [(0, None, 32), (3, 29, 7), (25, 31, 1), (0, T, 100)])
def test_iter_frames_chunks_concatenate_to_read_frames(
    video: str, decoded: np.ndarray, start: int, stop: int | None, chunk: int
) -> None:
    chunks = list(iter_frames(video, start, stop, chunk=chunk))
    assert all(1 <= len(c) <= chunk for c in chunks) and all(len(c) == chunk for c in chunks[:-1])
    np.testing.assert_array_equal(np.concatenate(chunks), decoded[start:stop])


def test_resize_gives_requested_shape_and_similar_content(video: str, decoded: np.ndarray) -> None:
    small = read_frames(video, 5, 9, size=(32, 48))
    assert small.shape == (4, 32, 48, 3) and small.dtype == np.uint8
    box = decoded[5:9].reshape(4, 32, 2, 48, 2, 3).mean(axis=(2, 4))
    assert np.abs(small - box).mean() < 3
    assert next(iter_frames(video, size=(np.int64(50), 70), chunk=4)).shape == (4, 50, 70, 3)


def test_memory_and_file_urls_round_trip(tmp_path: Path, source: np.ndarray, video: str, decoded: np.ndarray) -> None:
    memory_uri = "memory://smite-test-video/sub/clip.mp4"
    write_video(memory_uri, (frame for frame in source), FPS)  # an iterator of single frames
    assert probe_video(memory_uri).num_frames == T
    np.testing.assert_array_equal(read_frames(memory_uri), decoded)
    np.testing.assert_array_equal(read_frames(memory_uri, 25, 31), decoded[25:31])
    memory_bytes = fsspec.filesystem("memory").cat_file("/smite-test-video/sub/clip.mp4")
    fsspec.filesystem("memory").rm("/smite-test-video", recursive=True)

    file_uri = f"file://{tmp_path}/out/clip.mp4"  # parent directory is created
    write_video(file_uri, [source[:15], source[15:]], FPS)  # an iterable of chunks
    assert probe_video(file_uri).num_frames == T
    np.testing.assert_array_equal(read_frames(file_uri), decoded)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4"]
    # the same frames, however they are handed over, give the same bytes (the rerun contract)
    assert memory_bytes == (tmp_path / "out" / "clip.mp4").read_bytes() == Path(video).read_bytes()


_ENCODE_ON_ONE_CPU = """
import os, sys
import numpy as np
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from pipeline.io.video import write_video
write_video(sys.argv[1], np.load(sys.argv[2]), float(sys.argv[3]))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_encoding_does_not_depend_on_the_number_of_cpus(tmp_path: Path) -> None:
    """x264 sizes its threads by the CPUs it may use; the pinned threading makes the bytes machine-independent."""
    frames = _pattern(12, 256, 384)  # tall enough for several slices
    np.save(tmp_path / "frames.npy", frames)
    write_video(str(tmp_path / "many.mp4"), frames, FPS)
    subprocess.run(
        [sys.executable, "-c", _ENCODE_ON_ONE_CPU, str(tmp_path / "one.mp4"), str(tmp_path / "frames.npy"), str(FPS)],
        check=True, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert (tmp_path / "one.mp4").read_bytes() == (tmp_path / "many.mp4").read_bytes()


@pytest.mark.parametrize(("fmt", "suffix"), [("matroska", "mkv"), ("mpegts", "ts")])
def test_other_containers_count_packets_and_seek(
    tmp_path: Path, video: str, decoded: np.ndarray, fmt: str, suffix: str
) -> None:
    target = str(tmp_path / f"clip.{suffix}")
    with av.open(video) as source, av.open(target, mode="w", format=fmt) as remuxed:
        out_stream = remuxed.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out_stream
                remuxed.mux(packet)
    assert probe_video(target).num_frames == T
    for start in (0, 18, 25):
        np.testing.assert_array_equal(read_frames(target, start, start + 6), decoded[start : start + 6])


def test_odd_size_is_padded_by_edge_replication(tmp_path: Path) -> None:
    frames = _pattern(5, 33, 47)
    path = str(tmp_path / "odd.mp4")
    write_video(path, frames, 25.0)
    info = probe_video(path)
    assert (info.height, info.width, info.num_frames, info.fps) == (34, 48, 5, 25.0)
    back = read_frames(path).astype(np.int16)
    assert np.abs(back[:, :33, :47] - frames).mean() < 5  # measured 4.3 (steep pattern at this size)
    # the padding repeats the last row / column (measured differences 0.04 and 1.05 after coding)
    assert np.abs(back[:, 33] - back[:, 32]).mean() < 1 and np.abs(back[:, :, 47] - back[:, :, 46]).mean() < 2


def test_fractional_fps_and_pts_seconds(tmp_path: Path) -> None:
    path = str(tmp_path / "ntsc.mp4")
    write_video(path, _pattern(6, 16, 16), 30000 / 1001)
    info = probe_video(path)
    assert info.fps == pytest.approx(29.97003, abs=1e-5) and info.num_frames == 6
    seconds = frame_pts_seconds(info, np.array([0, 3, 6]))
    assert seconds.dtype == np.float64
    np.testing.assert_allclose(seconds, [0.0, 0.1001, 0.2002])


def test_mpeg4_fallback_encoder_round_trips(tmp_path: Path, source: np.ndarray) -> None:
    path = str(tmp_path / "mpeg4.mp4")
    _encode(path, path, source, FPS, 18, "mpeg4")
    assert probe_video(path).num_frames == T
    assert np.abs(read_frames(path).astype(np.int16) - source).mean() < 3  # measured 2.53


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_crf_trades_size_for_fidelity(tmp_path: Path, source: np.ndarray, codec: str) -> None:
    sizes, errors = [], []
    for crf in (6, 42):
        path = tmp_path / f"crf{crf}.mp4"
        _encode(str(path), str(path), source, FPS, crf, codec)
        sizes.append(path.stat().st_size)
        errors.append(np.abs(read_frames(str(path)).astype(np.int16) - source).mean())
    assert sizes[0] > sizes[1] and errors[0] < errors[1]


def _bad_files(folder: Path, video: str) -> Iterator[tuple[str, str]]:
    """(path, expected message fragment) for each kind of unreadable input."""
    yield str(folder / "missing.mp4"), "no such file"
    (folder / "empty.mp4").write_bytes(b"")
    yield str(folder / "empty.mp4"), "empty file"
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    yield str(folder / "noise.mp4"), "not a video file"
    Image.fromarray(_pattern(1)[0]).save(folder / "still.png")
    (folder / "still.png").rename(folder / "still.mp4")
    yield str(folder / "still.mp4"), "still image"
    with wave.open(str(folder / "tone.wav"), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\x00\x01" * 800)
    yield str(folder / "tone.wav"), "no video stream"
    data = Path(video).read_bytes()
    header_only = data[: data.index(b"mdat") + 4]  # +faststart: the sample table, but no frame data
    (folder / "headers.mp4").write_bytes(header_only)
    yield str(folder / "headers.mp4"), "no decodable video frames"
    yield str(folder), "is a directory"


def test_bad_inputs_raise_video_error_naming_the_file(tmp_path: Path, video: str) -> None:
    for path, fragment in _bad_files(tmp_path, video):
        with pytest.raises(VideoError) as caught:
            probe_video(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message
        with pytest.raises(VideoError, match=fragment):
            read_frames(path)


def test_truncated_video_raises_when_frames_run_out(tmp_path: Path, video: str) -> None:
    data = Path(video).read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert read_frames(str(path), 0, 3).shape == (3, H, W, 3)  # the intact beginning still decodes
    with pytest.raises(VideoError, match=f"{path}: .*frame"):
        read_frames(str(path))


@pytest.mark.parametrize(("start", "stop"), [(T, None), (41, 50), (-1, 5), (5, 5), (7, 3), (0, T + 1)])
def test_out_of_range_requests_raise(video: str, start: int, stop: int | None) -> None:
    with pytest.raises(VideoError, match=r"clip\.mp4: frame range"):
        read_frames(video, start, stop)
    with pytest.raises(VideoError, match=r"clip\.mp4: frame range"):
        next(iter_frames(video, start, stop))


def test_bad_arguments_raise(video: str, tmp_path: Path) -> None:
    with pytest.raises(VideoError, match=r"^nosuchproto://a/b\.mp4: cannot open this URL"):
        probe_video("nosuchproto://a/b.mp4")
    with pytest.raises(VideoError, match="size must be"):
        read_frames(video, size=(0, 10))
    with pytest.raises(VideoError, match="chunk must be"):
        iter_frames(video, chunk=0)
    target = str(tmp_path / "x.mp4")
    with pytest.raises(VideoError, match="fps must be"):
        write_video(target, _pattern(2), 0.0)
    with pytest.raises(VideoError, match="crf must be"):
        write_video(target, _pattern(2), FPS, crf=60)
    with pytest.raises(VideoError, match="uint8"):
        write_video(target, _pattern(2).astype(np.float32), FPS)
    with pytest.raises(VideoError, match="differs from the first"):
        write_video(target, [_pattern(1), _pattern(1, 32, 32)], FPS)
    with pytest.raises(VideoError, match="no frames"):
        write_video(target, [], FPS)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    def frames_then_failure() -> Iterator[np.ndarray]:
        yield _pattern(4)
        raise RuntimeError("upstream failure")

    for uri in (str(tmp_path / "clip.mp4"), "memory://smite-test-failed/clip.mp4"):
        with pytest.raises(RuntimeError, match="upstream failure"):
            write_video(uri, frames_then_failure(), FPS)
        fs, path = fsspec.core.url_to_fs(uri)
        assert not fs.exists(path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left beside the target either


def test_rewrite_replaces_existing_video(tmp_path: Path) -> None:
    path = str(tmp_path / "clip.mp4")
    write_video(path, _pattern(3), FPS)
    write_video(path, _pattern(7), FPS)
    assert probe_video(path).num_frames == 7


def test_video_error_pickles_with_its_message() -> None:
    error = pickle.loads(pickle.dumps(VideoError("memory://a/b.mp4", "no such file")))
    assert isinstance(error, ValueError) and str(error) == "memory://a/b.mp4: no such file"
    assert (error.uri, error.problem) == ("memory://a/b.mp4", "no such file")
