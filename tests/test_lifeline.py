"""Children die with the CLI (issue 11, item 11): real processes, a real ``kill -9``."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def test_the_children_of_a_killed_parent_are_ended() -> None:
    parent = subprocess.Popen(  # stands for the CLI: guards its children, starts two (one a grandchild), waits
        [sys.executable, "-c",
         "import subprocess, sys, time; from flows.lifeline import guard_children; guard_children(); "
         "a = subprocess.Popen(['sleep', '120']); "
         "b = subprocess.Popen(['sh', '-c', 'sleep 120 & wait']); "
         "print(a.pid, b.pid, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    time.sleep(2.5)  # the watchdog looks every second
    descendants = [child.pid for child in psutil.Process(parent.pid).children(recursive=True)]
    assert set(pids) <= set(descendants) and len(descendants) >= 3
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_gone(descendants, 15) == []


def _is_server(process: psutil.Process) -> bool:
    try:
        return "prefect.server" in " ".join(process.cmdline())
    except psutil.Error:  # exited meanwhile
        return False


@pytest.mark.slow
def test_the_temporary_prefect_server_dies_with_a_killed_cli(tmp_path: Path) -> None:
    from pipeline.synth import generate_benchmark

    data = generate_benchmark(tmp_path / "synth", size=32, num_references=1, videos_per_kind=1, num_frames=48,
                              kinds=["car"])[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    cli = subprocess.Popen(
        [sys.executable, "-m", "flows", "segment", str(data / "videos"), "--out", str(tmp_path / "out"), "-c", "tiny",
         "--baseline", str(data / "references")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
    )
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        server: list[int] = []
        while not server and time.monotonic() < deadline and cli.poll() is None:
            time.sleep(0.5)
            server = [child.pid for child in psutil.Process(cli.pid).children(recursive=True) if _is_server(child)]
        assert server, "the CLI never started a temporary Prefect server"
        time.sleep(1.5)  # let the watchdog note it
        descendants = psutil.Process(cli.pid).children(recursive=True)
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        assert _wait_gone([child.pid for child in descendants], 30) == []
    finally:  # whatever failed, leave nothing running
        for process in [psutil.Process(cli.pid), *descendants] if cli.poll() is None else descendants:
            if process.is_running():
                process.kill()
