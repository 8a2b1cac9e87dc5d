"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch

from smite_ops.backbone import load_backbone
from smite_ops.tiny_model import write_tiny_sd
from smite_ops.unet_maps import MapRunner


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
