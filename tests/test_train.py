"""Training runs: resuming from ``training_state.pt`` repeats an uninterrupted run exactly."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.synth import generate_benchmark
from pipeline.training.train import STATE_FILE, TrainingStateError, epoch_seed, train_part_model
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


def _variant(references: str, folder: Path, parts: list[str]) -> str:
    """A copy of the reference set with another parts.txt."""
    shutil.copytree(references, folder)
    (folder / "parts.txt").write_text("\n".join(parts) + "\n")
    return str(folder)


def test_training_state_of_another_job_is_refused_in_one_line(references: str, tmp_path: Path) -> None:
    out = tmp_path / "model"
    config = load_config("tiny", [*SETTINGS, "train.epochs=1"])
    train_part_model(references, out, config, progress=False)
    state_before = (out / STATE_FILE).read_bytes()
    parts = ["background", "body", "wheel", "window"]
    others = {
        "parts ['background', 'body', 'wheel', 'window'], this job ['background', 'body', 'tyre', 'window']": (
            _variant(references, tmp_path / "renamed", ["background", "body", "tyre", "window"]), config),
        "this job ['background', 'body', 'wheel', 'window', 'mirror']": (
            _variant(references, tmp_path / "more", [*parts, "mirror"]), config),
        "resolution 64, this job 96": (references, load_config("tiny", [*SETTINGS, "model.resolution=96"])),
        f"trainable {config.train.trainable!r}, this job 'text_embeds'": (
            references, load_config("tiny", [*SETTINGS, "train.trainable=text_embeds"])),
        "readout 'cross_attention', this job 'was'": (
            references, load_config("tiny", [*SETTINGS, "model.readout=was"])),
    }
    for problem, (refs, other) in others.items():
        with pytest.raises(TrainingStateError) as info:
            train_part_model(refs, out, other.model_copy(update={"train": replace(other.train, epochs=2)}),
                             progress=False)
        message = str(info.value)
        assert message.startswith(str(out / STATE_FILE)) and "another training job" in message and problem in message
    assert (out / STATE_FILE).read_bytes() == state_before  # nothing was resumed or overwritten
    (out / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingStateError, match="unreadable training state"):
        train_part_model(references, out, config, progress=False)
    torch.save({"learner": {}, "next_epoch": 1}, out / STATE_FILE)  # written before states recorded their job
    with pytest.raises(TrainingStateError, match="training state without a job record"):
        train_part_model(references, out, config, progress=False)


def test_a_state_from_before_the_readout_option_resumes_as_was(references: str, tmp_path: Path) -> None:
    out = tmp_path / "model"
    was = [*SETTINGS, "model.readout=was"]
    train_part_model(references, out, load_config("tiny", [*was, "train.epochs=1"]), progress=False)
    state = torch.load(out / STATE_FILE, weights_only=True)
    del state["job"]["readout"]
    torch.save(state, out / STATE_FILE)
    with pytest.raises(TrainingStateError, match="readout 'was', this job 'cross_attention'"):
        train_part_model(references, out, load_config("tiny", [*SETTINGS, "train.epochs=2"]), progress=False)
    resumed = train_part_model(references, out, load_config("tiny", [*was, "train.epochs=2"]), progress=False)
    assert resumed.epochs_run == 1
