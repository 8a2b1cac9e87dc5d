"""Fixtures shared by several test modules."""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch

from smite_ops.backbone import load_backbone
from smite_ops.tiny_model import write_tiny_sd
from smite_ops.unet_maps import MapRunner

_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the run's exit status for :func:`pytest_unconfigure`."""
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process with pytest's exit status once the run is reported, skipping interpreter teardown.

    The atexit handlers still run (they stop Ray and Prefect's temporary API server), then ``os._exit``. Tearing
    down the interpreter with the native thread pools of torch, Ray, pyarrow and PyAV loaded crashed once in CI
    after every test had passed (``798 passed``, then ``Segmentation fault``, exit 139); pytest's verdict, not
    that teardown, is what the exit status must carry.
    """
    if not _EXIT_STATUS:
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local two-CPU Ray instance for the module's tests (torch on one thread in the driver)."""
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion folder (diffusers format) for the module, torch on one thread."""
    torch.set_num_threads(1)
    return write_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd", seed=0)


@pytest.fixture(scope="module")
def runner(tiny_path: Path) -> MapRunner:
    """A map runner on the tiny backbone (maps at 1/8 of the frame side)."""
    return MapRunner(load_backbone(str(tiny_path)))


@pytest.fixture(scope="module")
def conditioning() -> torch.Tensor:
    """``(77, 32)`` random text conditioning of the tiny backbone's width."""
    return torch.randn(77, 32, generator=torch.Generator().manual_seed(0))
