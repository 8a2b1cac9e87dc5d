"""Resuming where both optimisers carry state (issue 19): epoch 0 trains the tokens, epoch 1 the UNet
projections, and the run resumes at epoch 2 with the production guidance scale (100, CFG doubling on).
The resumed run's optimiser states, tokens and trained weights after the next epoch equal an uninterrupted
run's bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.config import load_config
from pipeline.synth import generate_benchmark
from pipeline.training.train import STATE_FILE, train_part_model

torch.set_num_threads(1)
SETTINGS = ["model.resolution=64", "train.token_epochs=1", "train.guidance_scale=100"]


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(root, seed=0, size=64, num_references=2, videos_per_kind=1, num_frames=2, kinds=["car"])
    return str(root / "car_coarse" / "references")


def assert_identical(a: Any, b: Any, where: str = "state") -> None:
    """Nested dicts/lists of tensors and numbers are equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def train(references: str, out: Path, epochs: int) -> dict[str, Any]:
    train_part_model(references, out, load_config("tiny", [*SETTINGS, f"train.epochs={epochs}"]), progress=False)
    return torch.load(out / STATE_FILE, weights_only=True)


def test_resume_with_both_optimisers_in_flight_repeats_the_run(references: str, tmp_path: Path) -> None:
    interrupted = train(references, tmp_path / "resumed", 2)
    learner = interrupted["learner"]
    assert learner["token_optimizer"]["state"] and learner["unet_optimizer"]["state"]  # both carry moments
    straight = train(references, tmp_path / "straight", 3)
    resumed = train(references, tmp_path / "resumed", 3)
    assert resumed["next_epoch"] == 3
    assert not torch.equal(learner["unet_optimizer"]["state"][0]["exp_avg"],
                           resumed["learner"]["unet_optimizer"]["state"][0]["exp_avg"])  # epoch 2 stepped
    assert_identical(straight["learner"], resumed["learner"])
