"""The overlay video output, ``overlays/<video_id>.mp4``, fed one frame at a time.

:func:`pipeline.io.video.write_video` pulls frames from an iterable; the batch driver pushes frames as they are
stitched. This sink bridges the two with an encoder thread reading a bounded queue, so at most ``depth``
frames wait in memory and the encoding overlaps the driver's other work. The video appears at its final
path only once :meth:`OverlaySink.commit` succeeds (``write_video`` is atomic); :meth:`OverlaySink.abort`
leaves nothing behind.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

from pipeline.io.video import write_video
from pipeline.sinks.overlay import overlay_labels, part_palette

_DONE = object()


class _Aborted(Exception):
    """Raised inside the frame iterator to make ``write_video`` drop the partial file."""


class OverlaySink:
    """Streams coloured part overlays into an H.264 MP4 at ``uri`` on a background thread.

    Args:
        uri: destination (local path or fsspec URL).
        fps: frame rate of the written video, frames/s.
        num_parts: ``P``, for the colour palette.
        depth: frames that may wait for the encoder.
    """

    def __init__(self, uri: str, fps: float, num_parts: int, depth: int = 16) -> None:
        self.uri = uri
        self.palette = part_palette(num_parts)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode, args=(fps,), name=f"overlay-{uri}", daemon=True)
        self._thread.start()

    def _frames(self) -> Iterator[np.ndarray]:
        while (item := self._queue.get()) is not _DONE:
            if isinstance(item, _Aborted):
                raise item
            yield item  # type: ignore[misc]

    def _encode(self, fps: float) -> None:
        try:
            write_video(self.uri, self._frames(), fps=fps)
        except BaseException as error:  # handed to the driver thread by commit()
            self._error = error
            self._drain()

    def _drain(self) -> None:
        """Empty the queue after a failure so that a blocked ``write`` can finish."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def write(self, frame: np.ndarray, labels: np.ndarray) -> None:
        """Add one frame: ``frame`` ``(H, W, 3)`` uint8 RGB, ``labels`` ``(H, W)`` integer part ids."""
        if self._error is None:
            self._queue.put(overlay_labels(frame, labels, self.palette))

    def commit(self) -> str:
        """Finish encoding and publish the video; returns its URI. Re-raises an encoding error."""
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.uri

    def abort(self) -> None:
        """Stop encoding and leave nothing at ``uri``."""
        if self._thread.is_alive():
            self._queue.put(_Aborted("aborted"))
            self._thread.join()
