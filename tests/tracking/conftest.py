"""Shared fixtures for the tracking tests: the CoTracker3 conformance folder and synthetic weights."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from smite_ops.tracking.cotracker3 import CoTracker3Offline
from smite_ops.tracking.cotracker3.embeddings import sincos_time_table

COTRACKER3_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "cotracker3"
_HEAD_PREFIXES = ("updateformer.flow_head.", "updateformer.vis_conf_head.")


def read_key_shapes(tsv: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape from ``state_dict_keys.tsv`` (header line skipped)."""
    rows = [line.split("\t") for line in tsv.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    return {key: tuple(int(n) for n in shape.split(",")) for key, shape, _dtype in rows}


def synthetic_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The deterministic test weight of one state-dict entry (TEST_VECTORS.md section 1)."""
    if key == "time_emb":
        return sincos_time_table(shape[1], shape[2])
    if key == "updateformer.virual_tracks":
        scale = 1.0
    elif len(shape) >= 2:
        scale = 1.0 / math.sqrt(math.prod(shape[1:]))
    else:
        scale = 0.1
    if key.startswith(_HEAD_PREFIXES):
        scale *= 0.1
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    tensor = torch.randn(shape, generator=generator, dtype=torch.float32) * scale
    return tensor + 1.0 if key.endswith("norm_context.weight") else tensor


@pytest.fixture(scope="session")
def cotracker3_dir() -> Path:
    """The shared conformance folder; skips the test when it is absent."""
    if not COTRACKER3_DIR.is_dir():
        pytest.skip(f"CoTracker3 conformance vectors not found at {COTRACKER3_DIR.resolve()}")
    return COTRACKER3_DIR


@pytest.fixture(scope="session")
def synthetic_state_dict(cotracker3_dir: Path) -> dict[str, torch.Tensor]:
    """Synthetic weights for every key of ``state_dict_keys.tsv``."""
    shapes = read_key_shapes(cotracker3_dir / "state_dict_keys.tsv")
    return {key: synthetic_tensor(key, shape) for key, shape in shapes.items()}


@pytest.fixture(scope="session")
def synthetic_model(synthetic_state_dict: dict[str, torch.Tensor]) -> CoTracker3Offline:
    """An eval-mode offline model carrying the synthetic weights (loaded strictly)."""
    model = CoTracker3Offline()
    model.load_state_dict(synthetic_state_dict, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Run a test module on one intra-op thread (other work shares the machine), then restore."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def cotracker3_vector(cotracker3_dir: Path) -> Callable[[str], dict[str, np.ndarray]]:
    """Loader of one conformance ``.npz`` file by name: every array it holds."""

    def load(name: str) -> dict[str, np.ndarray]:
        with np.load(cotracker3_dir / name) as data:
            return {key: data[key] for key in data.files}

    return load
