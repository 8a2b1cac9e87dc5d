"""A real multi-process Ray cluster with token authentication: `ray start --head` plus a worker node.

`smite segment` joins it through ``RAY_ADDRESS`` with the cluster's token and places one shard actor per node;
a client without the token is refused in one line naming the variables to set. The test starts the cluster in
its own temporary folder and stops every process whose command line names that folder, by process id.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from test_cli import _video_and_references

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")
SMITE = [sys.executable, "-m", "flows"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_processes_naming(marker: str) -> None:
    """SIGTERM, then SIGKILL after 5 s, every process whose command line contains ``marker``."""
    victims = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    for process in victims:
        process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(victims, timeout=5)
    for process in alive:
        process.kill()


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = f"import ray; ray.init(address={address!r}); print(sum(n['Alive'] for n in ray.nodes()))"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    return int(result.stdout.split()[-1]) if result.returncode == 0 else 0


@pytest.fixture
def token_cluster() -> Iterator[tuple[str, str]]:
    """``(address, token)`` of a two-node cluster (one CPU each, no dashboard) that wants ``token``."""
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit in 107 characters
    token = secrets.token_hex(16)
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_ADDRESS": ""}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--num-gpus=0", "--disable-usage-stats", f"--temp-dir={temp}", "--block"]
    with open(Path(temp) / "nodes.log", "w") as log:
        nodes = [subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)]
        try:
            time.sleep(5)
            nodes.append(subprocess.Popen([RAY, "start", f"--address={address}", *common], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            deadline = time.monotonic() + 120
            while _alive_nodes(address, env) < 2:
                assert time.monotonic() < deadline, (Path(temp) / "nodes.log").read_text()[-2000:]
                time.sleep(2)
            yield address, token
        finally:
            for node in nodes:
                node.terminate()
            _stop_processes_naming(temp)
            shutil.rmtree(temp, ignore_errors=True)


def test_segment_joins_a_token_cluster_and_refuses_without_the_token(
    token_cluster: tuple[str, str], tmp_path: Path
) -> None:
    address, token = token_cluster
    video, refs = _video_and_references(tmp_path)
    # one CPU per node and one per actor: two actors are only placed if the job uses both nodes
    job = [*SMITE, "segment", str(video.parent), "--baseline", str(refs), "-c", "tiny",
           "--set", "runtime.num_actors=2", "--set", "runtime.placement_timeout_s=60"]
    with_token = os.environ | {"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    result = subprocess.run([*job, "--out", str(tmp_path / "o")], env=with_token, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 segmented, 0 skipped, 0 failed" in result.stdout
    assert "only 1 shard actor" not in result.stdout + result.stderr
    masks = pq.read_table(tmp_path / "o" / "masks" / "video_id=clip")
    assert sorted(set(masks.column("frame_index").to_pylist())) == [0, 1, 2]

    without = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    without |= {"RAY_ADDRESS": address, "RAY_gcs_server_port_wait_time_s": "3"}  # Ray retries a refusal otherwise
    refused = subprocess.run([*job, "--out", str(tmp_path / "o2")], env=without, capture_output=True, text=True,
                             timeout=600)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert errors == [(
        f"error: Ray cluster at {address}: it refused this job's authentication token; set RAY_AUTH_MODE=token and "
        "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token (`ray get-auth-token` there)"
    )], refused.stderr[-3000:]
    assert not (tmp_path / "o2" / "masks").exists()
