"""Video I/O through fsspec and PyAV: probe, seek-and-decode frame ranges, atomic H.264 writing.

Every function takes a local path, a ``file://`` URL or any fsspec URL (``memory://``, ``s3://``, ...); the
file is opened with fsspec and handed to PyAV as a file object. Every problem with the input (missing,
empty, not a video, no video stream, nothing decodable, damaged data, bad frame range) raises
:class:`VideoError` with a one-line message ``"<uri>: <problem>"``; no PyAV traceback escapes.

Frame identity is by presentation timestamp: frame ``i`` is the frame whose pts maps to
``round((pts - pts_0) * time_base * fps) == i``, where ``pts_0`` is the pts of the first decoded frame.
Reads seek to the keyframe before the requested start and decode forward, so a late range does not
decode the start of the file (unless the demuxer cannot seek at all), and B-frame reordering does not
matter. YUV -> RGB conversion follows each frame's colour-space tag (untagged: BT.601). Streams whose timestamps leave
holes in that index (variable frame rate) are refused with a :class:`VideoError` rather than guessed.
Rotation metadata and non-square sample aspect ratios are ignored (frames come out as stored).

Writing produces H.264 (``libx264``, ``yuv420p``, CRF rate control, a keyframe at least every 2 s,
``+faststart``, tagged BT.601 limited range, four slice threads whatever the machine, so the same frames
always give the same bytes) in MP4. Should a PyAV build lack ``libx264``, MPEG-4
Part 2 (``mpeg4``, fixed quantiser derived from the CRF) is used instead; other H.264 encoders are not
used because they have no CRF mode. Since ``yuv420p`` needs even sizes, odd heights/widths are padded by one
row/column replicating the last one: the written video is ``(H + H % 2, W + W % 2)``.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral

import av
import fsspec
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.reformatter import ColorRange, Colorspace
from av.video.stream import VideoStream
from fsspec.implementations.local import LocalFileSystem

from pipeline.io.inputs import fs_and_path
from smite_ops.errors import InputError


class VideoError(InputError):
    """A video cannot be read or written; ``str(error)`` is ``f"{uri}: {problem}"`` (one line).

    Picklable (``args == (uri, problem)``), so it survives a trip through Ray.
    """

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(uri, problem)
        self.uri = uri
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.uri}: {self.problem}"


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a video's first video stream.

    ``num_frames`` is the exact number of frames (from the MP4/MOV sample table, else by counting
    demuxed packets; nothing is decoded but the first frame); ``fps`` is the average frame rate;
    ``height``/``width`` are in pixels as stored; ``duration_s = num_frames / fps`` in seconds.
    """

    uri: str
    num_frames: int
    fps: float
    height: int
    width: int
    duration_s: float


@dataclass(frozen=True)
class _Clock:
    """Maps between frame indices and stream timestamps (``pts`` in units of ``time_base`` seconds)."""

    origin: int
    time_base: Fraction
    rate: Fraction

    def index_of(self, pts: int) -> int:
        return round((pts - self.origin) * self.time_base * self.rate)

    def pts_of(self, index: int) -> int:
        return self.origin + math.floor(index / (self.rate * self.time_base))


_IMAGE_DEMUXERS = ("image2",)  # plus every "<codec>_pipe" demuxer (png_pipe, jpeg_pipe, ...)
_KEYFRAME_SECONDS = 2
_ENCODER_PREFERENCE = ("libx264", "mpeg4")
# A fixed number of slice threads: the bitstream then depends neither on the machine's core count (x264's
# default thread count does) nor on thread timing, so reruns write byte-identical files (benchmarks/encode.py).
X264_THREADING = {"threads": "4", "sliced-threads": "1"}


def _cpu_has_avx512() -> bool:
    """Whether the CPU advertises AVX-512 (Linux ``/proc/cpuinfo``; False where that cannot be read)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("flags") and " avx512" in line for line in cpuinfo)
    except OSError:
        return False


# x264's AVX-512 code (in its macroblock-tree rate control) writes different bytes from run to run on some CPUs
# (an AVX-512 Xeon: 5 distinct files in 6 encodes of the same frames, any threading); its SSE4.2 and AVX2 code
# write the same bytes as each other, every time. So x264 is held to AVX2 where the CPU has AVX-512.
X264_INSTRUCTION_SET = {"asm": "AVX2"} if _cpu_has_avx512() else {}


def _reason(error: BaseException) -> str:
    """A short one-line reason for a PyAV / OS error."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fs_and_path(uri)  # a '::' in a file name is not a URL chain
    except (ValueError, ImportError) as error:
        raise VideoError(uri, f"cannot open this URL ({_reason(error)})") from None


@contextmanager
def _open_input(uri: str) -> Iterator[tuple[InputContainer, VideoStream]]:
    """Open ``uri`` for decoding; PyAV / IO errors raised in the ``with`` body become :class:`VideoError`."""
    fs, path = _filesystem(uri)
    try:
        if not fs.exists(path):
            raise VideoError(uri, "no such file")
        if fs.isdir(path):
            raise VideoError(uri, "is a directory, not a video file")
        if fs.size(path) == 0:
            raise VideoError(uri, "empty file (0 bytes)")
        with fs.open(path, "rb") as fileobj, av.open(fileobj, mode="r") as container:
            formats = container.format.name.split(",")
            if any(name in _IMAGE_DEMUXERS or name.endswith("_pipe") for name in formats):
                raise VideoError(uri, f"is a still image ({container.format.name}), not a video")
            if not container.streams.video:
                raise VideoError(uri, "has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            yield container, stream
    except av.error.InvalidDataError:
        raise VideoError(uri, "not a video file or damaged (invalid data)") from None
    except (av.FFmpegError, OSError) as error:
        raise VideoError(uri, f"cannot read video ({_reason(error)})") from None


def _count_packets(container: InputContainer, stream: VideoStream) -> int:
    container.seek(0)
    return sum(1 for packet in container.demux(stream) if packet.size)


def _probe(uri: str, container: InputContainer, stream: VideoStream) -> tuple[VideoInfo, _Clock]:
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise VideoError(uri, "video stream has no frame rate")
    first = next(container.decode(stream), None)
    if first is None:
        raise VideoError(uri, "no decodable video frames")
    if first.pts is None:
        raise VideoError(uri, "video frames carry no timestamps")
    clock = _Clock(origin=first.pts, time_base=stream.time_base, rate=Fraction(rate))
    from_sample_table = stream.frames > 0 and "mov" in container.format.name.split(",")
    num_frames = stream.frames if from_sample_table else _count_packets(container, stream)
    info = VideoInfo(
        uri=uri,
        num_frames=num_frames,
        fps=float(rate),
        height=stream.codec_context.height,
        width=stream.codec_context.width,
        duration_s=num_frames / float(rate),
    )
    return info, clock


def probe_video(uri: str) -> VideoInfo:
    """Frame count, frame rate (frames/s), size (pixels) and duration (s) of the first video stream."""
    with _open_input(uri) as (container, stream):
        return _probe(uri, container, stream)[0]


def _seek_decode(
    uri: str, container: InputContainer, stream: VideoStream, clock: _Clock, start: int, stop: int
) -> Iterator[VideoFrame]:
    """Decoded frames ``start .. stop-1`` in order, decoding from the keyframe before ``start``.

    Demuxers do not all land on the keyframe before the target (B-frames put a keyframe's decode time
    before its presentation time; MPEG-TS seeks by byte position), so when the first frame after a seek
    is already past ``start`` the target moves back 1, 2, 4, ... frames, and finally to the file start.
    """
    back = 0
    while True:
        target = start - back
        if target >= 0:
            container.seek(clock.pts_of(target), stream=stream, backward=True, any_frame=False)
        else:
            container.seek(0)  # the beginning of the file, in AV_TIME_BASE units
        decoded = container.decode(stream)
        first = next(decoded, None)
        if first is not None and first.pts is None:
            raise VideoError(uri, "video frames carry no timestamps")
        if first is not None and clock.index_of(first.pts) <= start:
            break
        if target < 0:
            raise VideoError(uri, f"cannot seek to frame {start}: decoding resumes only after it")
        back = max(1, 2 * back)
    expected = start
    for frame in itertools.chain([first], decoded):
        if frame.pts is None:
            raise VideoError(uri, "video frames carry no timestamps")
        index = clock.index_of(frame.pts)
        if index < expected:
            continue
        if index >= stop:
            break
        if index != expected:
            raise VideoError(uri, f"frame {expected} is missing (next timestamp maps to frame {index})")
        yield frame
        expected += 1
    if expected < stop:
        raise VideoError(uri, f"stream ends at frame {expected}, before the expected {stop} frames")


@contextmanager
def _open_range(
    uri: str, start: int, stop: int | None, size: tuple[int, int] | None
) -> Iterator[tuple[int, tuple[int, int], Iterator[np.ndarray]]]:
    """Yield ``(count, (height, width), frames)``: ``frames`` gives ``count`` (H, W, 3) uint8 RGB arrays."""
    if size is not None and not (len(size) == 2 and all(isinstance(side, Integral) and side > 0 for side in size)):
        raise VideoError(uri, f"size must be (height, width) with positive integers, got {size!r}")
    with _open_input(uri) as (container, stream):
        info, clock = _probe(uri, container, stream)
        stop = info.num_frames if stop is None else stop
        if not 0 <= start < stop <= info.num_frames:
            raise VideoError(
                uri, f"frame range [{start}, {stop}) is empty or outside the video's {info.num_frames} frames"
            )
        height, width = (int(size[0]), int(size[1])) if size is not None else (info.height, info.width)
        # an explicit size also keeps the output shape fixed should the stream change size mid-way
        scale = {"height": height, "width": width} | ({} if size is None else {"interpolation": "LANCZOS"})
        frames = (
            frame.to_ndarray(format="rgb24", **scale)
            for frame in _seek_decode(uri, container, stream, clock, start, stop)
        )
        yield stop - start, (height, width), frames


def read_frames(uri: str, start: int = 0, stop: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames ``[start, stop)`` (``stop=None``: to the end) as a (T, H, W, 3) uint8 RGB array.

    ``size=(height, width)`` resizes each frame (Lanczos). Decoding starts at the keyframe before
    ``start``. Raises :class:`VideoError` for a bad file or a range outside ``[0, num_frames]``.
    """
    with _open_range(uri, start, stop, size) as (count, (height, width), frames):
        out = np.empty((count, height, width, 3), dtype=np.uint8)
        for index, frame in enumerate(frames):
            out[index] = frame
    return out


def iter_frames(
    uri: str,
    start: int = 0,
    stop: int | None = None,
    size: tuple[int, int] | None = None,
    chunk: int = 32,
) -> Iterator[np.ndarray]:
    """The frames of :func:`read_frames`, yielded as (<=chunk, H, W, 3) uint8 RGB arrays.

    Memory stays bounded by ``chunk`` frames. This is a generator: the file is opened, and any
    :class:`VideoError` raised, on the first ``next()``; closing the generator closes the file.
    """
    if chunk < 1:
        raise VideoError(uri, f"chunk must be at least 1, got {chunk}")
    return _chunked(uri, start, stop, size, chunk)


def _chunked(uri: str, start: int, stop: int | None, size: tuple[int, int] | None, chunk: int) -> Iterator[np.ndarray]:
    with _open_range(uri, start, stop, size) as (_, _, frames):
        while batch := list(itertools.islice(frames, chunk)):
            yield np.stack(batch)


def frame_pts_seconds(info: VideoInfo, frame_indices: np.ndarray) -> np.ndarray:
    """Presentation times in seconds (float64, same shape) of integer frame indices: ``index / fps``."""
    return np.asarray(frame_indices, dtype=np.float64) / info.fps


def _available_encoder(uri: str) -> str:
    for name in _ENCODER_PREFERENCE:
        with suppress(av.codec.codec.UnknownCodecError):
            av.codec.Codec(name, "w")
            return name
    raise VideoError(uri, f"this PyAV build has none of the encoders {_ENCODER_PREFERENCE}")


def _set_quality(stream: VideoStream, codec: str, crf: int) -> None:
    """CRF rate control for libx264; for mpeg4 a fixed quantiser 2..31 of roughly similar quality."""
    if codec == "libx264":
        params = ":".join(f"{key}={value}" for key, value in {**X264_THREADING, **X264_INSTRUCTION_SET}.items())
        stream.codec_context.options = {"crf": str(crf), "preset": "medium", "x264-params": params}
    else:
        quantiser = min(31, max(2, round(crf / 6)))
        stream.codec_context.qmin = stream.codec_context.qmax = quantiser


def _frame_chunks(uri: str, frames: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Validated (t, H, W, 3) uint8 chunks, all of one (H, W), from an array or an iterable of arrays."""
    items: Iterable[np.ndarray] = [frames] if isinstance(frames, np.ndarray) else frames
    shape: tuple[int, int] | None = None
    for item in items:
        array = np.asarray(item)
        array = array[None] if array.ndim == 3 else array
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise VideoError(
                uri, f"frames must be uint8 (H, W, 3) or (T, H, W, 3) arrays, got {array.dtype} {array.shape}"
            )
        shape = shape or array.shape[1:3]
        if array.shape[1:3] != shape or 0 in shape:
            raise VideoError(uri, f"frame size {array.shape[1:3]} differs from the first {shape} or is empty")
        if len(array):
            yield array


def _encode(
    uri: str, dest: str, frames: np.ndarray | Iterable[np.ndarray], fps: float, crf: int, codec: str,
    joinable: bool = False,
) -> None:
    """Encode ``frames`` into an MP4 at the local path ``dest`` (without B-frames when ``joinable``)."""
    chunks = _frame_chunks(uri, frames)
    first = next(chunks, None)
    if first is None:
        raise VideoError(uri, "no frames to write")
    height, width = first.shape[1:3]
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(dest, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream(codec, rate=rate)
            _set_quality(stream, codec, crf)
            if joinable:  # decode order = display order in every part, so joined parts keep increasing timestamps
                stream.codec_context.max_b_frames = 0
            stream.height, stream.width = height + height % 2, width + width % 2
            stream.pix_fmt = "yuv420p"
            # tag what swscale's default RGB -> YUV conversion produces, so players do not assume BT.709
            stream.codec_context.colorspace = Colorspace.SMPTE170M
            stream.codec_context.color_range = ColorRange.MPEG
            stream.codec_context.gop_size = max(1, round(_KEYFRAME_SECONDS * fps))
            pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
            index = 0
            for chunk in itertools.chain([first], chunks):
                for image in np.pad(chunk, pad, mode="edge"):
                    frame = VideoFrame.from_ndarray(image, format="rgb24")
                    frame.pts = index
                    index += 1
                    container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    except av.FFmpegError as error:
        raise VideoError(uri, f"encoding failed ({_reason(error)})") from None


@contextmanager
def _staging_file(uri: str, fs: fsspec.AbstractFileSystem, path: str) -> Iterator[str]:
    """A local temporary path to write to: beside ``path`` for local targets (so a rename commits it),
    in a temporary directory otherwise. It is removed on exit unless it was moved away."""
    if isinstance(fs, LocalFileSystem):
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as error:
            raise VideoError(uri, f"cannot create the output directory ({_reason(error)})") from None
        staging = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.partial")
        try:
            yield staging
        finally:
            with suppress(FileNotFoundError):
                os.remove(staging)
    else:
        with tempfile.TemporaryDirectory(prefix="smite-video-") as directory:
            yield os.path.join(directory, "video.mp4")


def write_video(
    uri: str, frames: np.ndarray | Iterable[np.ndarray], fps: float, crf: int = 18, joinable: bool = False
) -> None:
    """Write RGB frames as an H.264 (yuv420p) MP4 at ``uri``, atomically.

    ``frames``: a (T, H, W, 3) uint8 array, or an iterable of (H, W, 3) / (t, H, W, 3) uint8 chunks
    (consumed once, so long videos stream through). ``fps`` in frames/s; ``crf`` 0..51 (lower: better);
    ``joinable``: encode without B-frames, so that :func:`concat_videos` can join the video with others.
    Odd sizes are padded to even by edge replication (see the module notes). The video is encoded to a
    temporary file and only then renamed to (local) or uploaded at (other filesystems) ``uri``, so a
    failure, including an exception raised by the ``frames`` iterable, leaves nothing at ``uri``; an
    existing file there is replaced on success. (Object stores publish an upload only once complete;
    on filesystems whose uploads are not atomic, such as SFTP, a failed upload can leave a partial file.)
    """
    if not (math.isfinite(fps) and fps > 0):
        raise VideoError(uri, f"fps must be a positive number, got {fps}")
    if not 0 <= crf <= 51:
        raise VideoError(uri, f"crf must be in 0..51, got {crf}")
    fs, path = _filesystem(uri)
    codec = _available_encoder(uri)
    with _staging_file(uri, fs, path) as staging:
        _encode(uri, staging, frames, fps, crf, codec, joinable)
        _store(uri, fs, staging, path)


def concat_videos(uri: str, parts: Iterable[str]) -> None:
    """Join MP4 files written by :func:`write_video` (``joinable=True``, one frame rate and size) into one MP4.

    The packets are copied, not re-encoded (each part starts with a keyframe), so the result decodes to
    exactly the parts' frames, in order. Atomic like :func:`write_video`.
    """
    fs, path = _filesystem(uri)
    with _staging_file(uri, fs, path) as staging:
        try:
            with av.open(staging, mode="w", format="mp4", options={"movflags": "+faststart"}) as output:
                stream: VideoStream | None = None
                offset = 0  # where the current part starts, in the parts' time base
                for part in parts:
                    with _open_input(part) as (container, source):
                        stream = stream or output.add_stream_from_template(source)
                        end = offset
                        for packet in container.demux(source):
                            if packet.dts is None or packet.pts is None:  # the demuxer's end-of-stream marker
                                continue
                            end = max(end, offset + packet.pts + packet.duration)
                            packet.pts += offset
                            packet.dts += offset
                            packet.stream = stream
                            output.mux(packet)
                        offset = end
                if stream is None:
                    raise VideoError(uri, "no parts to join")
        except av.FFmpegError as error:
            raise VideoError(uri, f"joining the parts failed ({_reason(error)})") from None
        _store(uri, fs, staging, path)


def _store(uri: str, fs: fsspec.AbstractFileSystem, staging: str, path: str) -> None:
    """Move the finished local file ``staging`` to ``path`` (rename locally, upload elsewhere)."""
    try:
        if isinstance(fs, LocalFileSystem):
            os.replace(staging, path)
        else:
            fs.put_file(staging, path)
    except OSError as error:
        raise VideoError(uri, f"cannot store the written video ({_reason(error)})") from None
