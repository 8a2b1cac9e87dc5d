"""Pretraining the tiny backbone: the corpus (drawn and procedural kinds) and a checkpoint the production path loads."""

from pathlib import Path

import pytest
import torch

from pipeline.synth import KINDS
from pipeline.synth.procedural import generic_kind
from pipeline.training.pretrain_tiny import main, render_frames
from smite_ops.backbone import load_backbone


def test_the_corpus_prompts_each_frame_with_its_kind_word_and_visible_parts() -> None:
    generic = generic_kind(3)
    frames = render_frames([(KINDS["car"], 2), (generic, 3)], size=64, data_seed=1000)
    assert frames.images.shape == (5, 3, 64, 64) and -1.0 <= frames.images.min() < frames.images.max() <= 1.0
    assert all(p.split()[0] == "car" for p in frames.prompts[:2])
    for prompt in frames.prompts[2:]:
        word, *parts = prompt.split()
        assert word == "object" and parts and set(parts) <= set(generic.fine_parts[1:])
    again = render_frames([(generic, 3)], size=64, data_seed=1000)
    assert torch.equal(again.images, frames.images[2:]) and again.prompts == frames.prompts[2:]


def test_a_short_pretraining_on_a_generic_corpus_writes_a_loadable_backbone(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    main(["--out", str(out), "--images", "0", "--generic-layouts", "2", "--generic-images", "2", "--size", "64",
          "--crop", "32", "--latent-crop", "8", "--vae-steps", "2", "--unet-steps", "2", "--batch", "2",
          "--log-every", "1", "--unet-width", "2"])
    backbone = load_backbone(str(out), with_text_encoder=True)
    assert backbone.vae.config.scaling_factor > 0 and backbone.text_encoder is not None
    assert list(backbone.unet.config.block_out_channels) == [64, 96, 96, 96]
    assert backbone.unet.config.attention_head_dim == [4, 6, 6, 6]


def test_crops_larger_than_the_frames_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--size", "64"])
    error = capsys.readouterr().err
    assert "--crop 64 and --latent-crop 16 must fit in a --size 64 frame and its 8-cell latent" in error
