"""Training runs: resuming from ``training_state.pt`` repeats an uninterrupted run exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.synth import generate_benchmark
from pipeline.train import STATE_FILE, epoch_seed, train_part_model
from smite_ops.part_model import load_part_model

torch.set_num_threads(1)
SETTINGS = ["model.resolution=64", "train.token_epochs=1", "train.guidance_scale=1"]


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(root, seed=0, size=64, num_references=3, videos_per_kind=1, num_frames=2, kinds=["car"])
    return str(root / "car_coarse" / "references")


def test_epoch_seeds_differ_and_repeat() -> None:
    assert epoch_seed(777, 3) == epoch_seed(777, 3)
    assert len({epoch_seed(777, epoch) for epoch in range(50)} | {epoch_seed(778, 0)}) == 51


def test_resumed_training_equals_an_uninterrupted_run(references: str, tmp_path: Path) -> None:
    straight = train_part_model(
        references, tmp_path / "straight", load_config("tiny", [*SETTINGS, "train.epochs=2"]), progress=False
    )
    first = train_part_model(
        references, tmp_path / "resumed", load_config("tiny", [*SETTINGS, "train.epochs=1"]), progress=False
    )
    resumed = train_part_model(
        references, tmp_path / "resumed", load_config("tiny", [*SETTINGS, "train.epochs=2"]), progress=False
    )
    assert (straight.epochs_run, first.epochs_run, resumed.epochs_run) == (2, 1, 1)
    a = torch.load(tmp_path / "straight" / STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)
    assert a["next_epoch"] == b["next_epoch"] == 2
    assert torch.equal(a["learner"]["tokens"]["tokens"], b["learner"]["tokens"]["tokens"])
    assert all(torch.equal(a["learner"]["unet"][name], b["learner"]["unet"][name]) for name in a["learner"]["unet"])
    assert (straight.best_epoch, straight.best_miou) == (resumed.best_epoch, resumed.best_miou)
    model = load_part_model(str(tmp_path / "resumed"))
    assert model.part_names == ["background", "body", "wheel", "window"]
    assert model.info["epoch"] == resumed.best_epoch


def test_parts_that_differ_from_the_config_are_refused(references: str, tmp_path: Path) -> None:
    config = load_config("tiny", [*SETTINGS, "train.epochs=1", "parts=[background, wing]"])
    with pytest.raises(ConfigError, match="parts.txt: parts"):
        train_part_model(references, tmp_path / "bad", config, progress=False)
