"""Children die with the CLI: a watchdog process that ends what the CLI started once the CLI is gone.

Prefect's temporary API server and a local Ray cluster are child processes of ``smite``; a ``kill -9`` of the
CLI would leave them running (about 200 MB per Prefect server). :func:`guard_children` starts this module as a
separate process, in its own session so that a signal to the CLI's process group does not reach it. It notes
the CLI's descendants every :data:`POLL_S` seconds; when the CLI has exited (killed or not), it terminates
those still running (SIGTERM, then SIGKILL after :data:`GRACE_S` seconds) and exits. ``psutil`` identifies a
process by pid and start time, so a reused pid is never hit.

Run as ``python -m flows.lifeline PID``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

POLL_S = 1.0
"""Interval between two looks at the CLI's descendants, s."""
GRACE_S = 5.0
"""Time a leftover process has to exit after SIGTERM before SIGKILL, s."""


def guard_children() -> subprocess.Popen:
    """Start the watchdog of this process's descendants; returns its process."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.lifeline", str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def watch(pid: int) -> list[int]:
    """Follow process ``pid`` until it exits, then end its remaining descendants; returns the pids ended."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    seen: dict[int, psutil.Process] = {}
    while parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE:
        try:
            seen.update((child.pid, child) for child in parent.children(recursive=True) if child.pid != os.getpid())
        except psutil.Error:  # the parent exited during the walk
            break
        psutil.wait_procs([parent], timeout=POLL_S)
    left = [process for process in seen.values() if process.is_running()]
    for process in left:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(left, timeout=GRACE_S)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    return [process.pid for process in left]


if __name__ == "__main__":
    watch(int(sys.argv[1]))
