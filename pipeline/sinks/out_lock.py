"""One writer per output root: a lease file ``<out>/_lock.json`` with an owner and a heartbeat.

A run takes the lease before it touches anything under the root and keeps it fresh from a background thread
(every ``ttl / 4`` seconds); a second run into the same root is refused in one line naming the owner. A lease
is stale, and taken over, when its heartbeat is older than its ``ttl`` or when its owner is a process of this
host that no longer exists (a ``kill -9``-ed run is recovered at once on the same machine).

The lease is plain JSON written through fsspec (write to a hidden name, rename), so it works on local disks
and object stores alike. Taking it is write-then-read-back: two runs that start within the settle time of each
other both read back the last writer's lease and only that one goes on.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from types import TracebackType

from pipeline.sinks.out_root import OutputError, output_fs

LOCK_FILE = "_lock.json"
DEFAULT_TTL_S = 60.0
"""A lease whose heartbeat is older than this is stale, s."""
SETTLE_S = 0.2
"""Wait between writing the lease and reading it back, s."""


class OutputLockedError(OutputError):
    """Another live run holds the output root's lease."""


@dataclass(frozen=True)
class Lease:
    """The content of the lock file: who holds it, since when, last heartbeat (Unix seconds) and its ttl (s)."""

    token: str
    host: str
    pid: int
    command: str
    started: float
    heartbeat: float
    ttl: float

    def owner(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.command})"

    def is_stale(self, now: float) -> bool:
        """Heartbeat older than the ttl, or a dead process on this host."""
        if now - self.heartbeat > self.ttl:
            return True
        return self.host == socket.gethostname() and not _process_exists(self.pid)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class OutputLock:
    """The lease on ``out``; a context manager that acquires on entry and releases on exit.

    Args:
        out: output root (local folder or fsspec URL).
        command: what holds the lease, shown to a refused run (e.g. ``smite segment``).
        ttl: staleness limit of the heartbeat, s.
    """

    def __init__(self, out: str, command: str = "smite segment", ttl: float = DEFAULT_TTL_S) -> None:
        self.out = out
        self.fs, base = output_fs(out)
        self.path = f"{base}/{LOCK_FILE}"
        now = time.time()
        self.lease = Lease(uuid.uuid4().hex, socket.gethostname(), os.getpid(), command, now, now, ttl)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> Lease | None:
        """The lease on file, None when there is none (or it is unreadable, as a half-written one would be)."""
        try:
            return Lease(**json.loads(self.fs.cat_file(self.path)))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def _write(self) -> None:
        self.lease = Lease(**{**asdict(self.lease), "heartbeat": time.time()})
        folder, _, name = self.path.rpartition("/")
        pending = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.pending"
        self.fs.pipe_file(pending, json.dumps(asdict(self.lease)).encode())
        self.fs.mv(pending, self.path)

    def _refuse(self, holder: Lease) -> OutputLockedError:
        age = time.time() - holder.heartbeat
        return OutputLockedError(
            f"--out {self.out}: another run is writing here ({holder.owner()}, heartbeat {age:.0f} s ago); "
            f"wait for it, or delete {self.path} if that run is gone"
        )

    def acquire(self) -> None:
        """Take the lease or refuse.

        Raises:
            OutputLockedError: a live run holds it (one line naming the owner and the lock file).
            OutputError: the root is not writable.
        """
        holder = self.read()
        if holder is not None and holder.token != self.lease.token and not holder.is_stale(time.time()):
            raise self._refuse(holder)
        try:
            self.fs.makedirs(self.path.rpartition("/")[0], exist_ok=True)
            self._write()
        except OSError as error:
            raise OutputError(f"--out {self.out}: not writable ({error.strerror or error})") from None
        time.sleep(SETTLE_S)
        holder = self.read()
        if holder is None:
            raise OutputError(f"--out {self.out}: the lock file {self.path} could not be read back after writing it")
        if holder.token != self.lease.token:  # another run wrote its lease after ours
            raise self._refuse(holder)
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.path}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease.ttl / 4):
            try:
                self._write()
            except OSError:  # a missed beat is retried; the lease only goes stale after a whole ttl
                continue

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self.read()
        if holder is not None and holder.token == self.lease.token:
            self.fs.rm(self.path)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
