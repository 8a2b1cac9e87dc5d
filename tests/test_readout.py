"""The class-map readout (``MapOptions.readout``, ``model.readout``): WAS maps or raw cross-attention logits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from pipeline.batch.sequential import build_segmenter
from pipeline.config import load_config
from pipeline.synth import generate_benchmark
from pipeline.training import train
from smite_ops.learning import PartLearner
from smite_ops.unet_maps import MapRunner

PARTS, FRAMES, SIDE, T = 3, 2, 16, 103  # latents 16x16 (128 px frames), maps 16x16


def test_cross_attention_readout_is_the_resized_logits_and_not_was(
    runner: MapRunner, conditioning: torch.Tensor
) -> None:
    latents = torch.randn(FRAMES, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        runner.predict(latents, T, conditioning, num_frames=FRAMES)
        logits = runner.cross_logits(PARTS)
        was = runner.inference_maps(PARTS, 32)
        runner.options = replace(runner.options, readout="cross_attention")
        try:
            read = runner.inference_maps(PARTS, 32)
            at_map_size = runner.inference_maps(PARTS)
        finally:
            runner.options = replace(runner.options, readout="was")
    runner.release()
    assert read.shape == was.shape == (FRAMES, PARTS, 32, 32)
    assert torch.equal(at_map_size, logits)
    assert torch.allclose(read, F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False))
    assert (read.argmax(1) != was.argmax(1)).any()  # WAS propagation moves labels; the raw readout does not


def test_the_job_config_reaches_model_selection_and_segmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    learners: list[PartLearner] = []

    class RecordedLearner(PartLearner):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            learners.append(self)

    monkeypatch.setattr(train, "PartLearner", RecordedLearner)
    generate_benchmark(tmp_path / "synth", seed=0, size=64, num_references=2, videos_per_kind=1, num_frames=2,
                       kinds=["car"])
    config = load_config("tiny", ["model.resolution=64", "train.epochs=1", "model.readout=cross_attention"])
    train.train_part_model(str(tmp_path / "synth" / "car_coarse" / "references"), tmp_path / "model", config,
                           progress=False)
    segmenter, _ = build_segmenter(str(tmp_path / "model"), config)
    assert [learner.runner.options.readout for learner in learners] == ["cross_attention"]
    assert segmenter.runner.options.readout == "cross_attention"
