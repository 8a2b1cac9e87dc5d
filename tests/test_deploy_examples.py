"""The container and KubeRay examples stay true to the code: their paths exist and their job parses."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from pipeline.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_copies_what_exists() -> None:
    lines = (ROOT / "docker" / "Dockerfile").read_text().splitlines()
    sources = [line.split()[-2] for line in lines if line.startswith("COPY")]
    assert sources and all((ROOT / source).exists() for source in sources), sources


def test_rayjob_entrypoint_is_a_valid_segment_job() -> None:
    job = yaml.safe_load((ROOT / "deploy" / "kuberay-rayjob.yaml").read_text())
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:2] == ["smite", "segment"]
    overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    config = load_config(args[args.index("-c") + 1], overrides)
    assert config.runtime.num_actors == 4 and config.runtime.gpus_per_actor == 1
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert all(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1" for g in workers)
    auth = {e["name"] for e in job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"]}
    assert auth == {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
