"""Pretraining the tiny backbone: the corpus (drawn and procedural kinds) and a checkpoint the production path loads."""

import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.synth import KINDS
from pipeline.synth.procedural import generic_kind
from pipeline.training.part_contrast import paired_picks, part_contrast, part_ids, sample_cells
from pipeline.training.pretrain_tiny import PAUSED_EXIT_STATUS, main, render_frames
from smite_ops.backbone import load_backbone

SHIPPED = Path(__file__).parents[1] / "pipeline" / "assets" / "tiny-sd"


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


SMALL_RUN = ["--images", "0", "--generic-layouts", "2", "--generic-images", "2", "--size", "64", "--crop", "32",
             "--latent-crop", "8", "--vae-steps", "2", "--unet-steps", "2", "--batch", "2", "--checkpoint-every", "1"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    backbone = load_backbone(str(folder))
    return {**backbone.unet.state_dict(), **{f"vae.{k}": v for k, v in backbone.vae.state_dict().items()}}


def test_a_run_split_at_every_step_writes_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    main(["--out", str(whole), *SMALL_RUN])
    statuses = []
    for _ in range(4):  # a budget that is always spent: pause at each of vae 1, vae 2, unet 1; unet 2 finishes
        try:
            main(["--out", str(split), *SMALL_RUN, "--budget-minutes", "1e-9"])
            statuses.append(0)
        except SystemExit as stopped:
            statuses.append(stopped.code)
            assert (split / "pretrain-state.pt").is_file() and not (split / "unet").exists()
    assert statuses == [PAUSED_EXIT_STATUS] * 3 + [0]
    output = capsys.readouterr().out
    assert "paused at vae step 1" in output and "resuming unet step 1" in output
    assert "over 4 run(s)" in output and json.loads((split / "pretrain.json").read_text())["runs"] == 4
    assert not (split / "pretrain-state.pt").exists() and not (tmp_path / "split.partial").exists()
    reference, resumed = _weights(whole), _weights(split)
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_a_run_killed_while_writing_its_state_or_checkpoint_resumes_and_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, aside = tmp_path / "run", tmp_path / "run.old"
    with pytest.raises(SystemExit, match=str(PAUSED_EXIT_STATUS)):
        main(["--out", str(out), *SMALL_RUN, "--budget-minutes", "1e-9"])
    (out / "pretrain-state.partial").write_bytes(b"cut off mid-write")  # killed while saving the next state
    with pytest.raises(SystemExit, match=str(PAUSED_EXIT_STATUS)):
        main(["--out", str(out), *SMALL_RUN, "--budget-minutes", "1e-9"])
    assert "resuming vae step 1" in capsys.readouterr().out
    out.rename(aside)  # killed between moving the run aside and moving the new checkpoint in
    (tmp_path / "run.partial").mkdir()
    main(["--out", str(out), *SMALL_RUN])
    assert "resuming vae step 2" in capsys.readouterr().out
    assert json.loads((out / "pretrain.json").read_text())["runs"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not (out / "pretrain-state.pt").exists()
    aside.mkdir()  # killed after the swap, before the old folder was deleted
    main(["--out", str(out), *SMALL_RUN])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_saved_state_of_other_settings_or_a_foreign_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=str(PAUSED_EXIT_STATUS)):
        main(["--out", str(out), *SMALL_RUN, "--budget-minutes", "1e-9"])
    saved = (out / "pretrain-state.pt").read_bytes()
    with pytest.raises(SystemExit, match="2"):
        main(["--out", str(out), *SMALL_RUN, "--unet-steps", "3"])
    assert "saved by a run with other settings: unet_steps 2 (asked 3); use another --out" in capsys.readouterr().err
    assert (out / "pretrain-state.pt").read_bytes() == saved
    (out / "pretrain-state.pt").write_bytes(saved[: len(saved) // 2])
    with pytest.raises(SystemExit, match="2"):
        main(["--out", str(out), *SMALL_RUN])
    assert "pretrain-state.pt: unreadable run state" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="2"):
        main(["--out", str(tmp_path), *SMALL_RUN])
    assert "holds ['notes.txt', 'run'], not a pretraining checkpoint" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_crops_larger_than_the_frames_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--size", "64"])
    error = capsys.readouterr().err
    assert "--crop 64 and --latent-crop 16 must fit in a --size 64 frame and its 8-cell latent" in error


def test_part_contrast_is_the_supervised_contrastive_loss_by_hand() -> None:
    e1, e2, e3 = torch.eye(3)
    features = torch.stack([e1, 2 * e1, e2, e2])  # scale does not matter: features are normalised
    # every anchor: one positive at cosine 1, two negatives at 0 -> -log(e / (e + 2)) at temperature 1
    expected = math.log(math.e + 2) - 1
    assert part_contrast(features, torch.tensor([1, 1, 2, 2]), 1.0).item() == pytest.approx(expected)
    # an anchor without positives is skipped; at temperature 0.5 the positive's logit is 2
    features = torch.stack([e1, e1, e2, e3])
    assert part_contrast(features, torch.tensor([1, 1, 2, 3]), 0.5).item() == pytest.approx(math.log(math.e**2 + 2) - 2)


def test_pairs_are_two_frames_of_each_drawn_kind() -> None:
    kinds = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    picks = paired_picks(kinds, 4, torch.Generator().manual_seed(0))
    assert len(picks) == 4 and len(set(picks.tolist())) == 4
    assert kinds[picks[0]] == kinds[picks[1]] != kinds[picks[2]] == kinds[picks[3]]


def test_pairs_come_from_kinds_with_frames_and_fill_the_batch() -> None:
    kinds = torch.tensor([3, 3, 4, 4])  # kinds 0-2 have no frames (--images 0)
    for seed in range(20):
        picks = paired_picks(kinds, 8, torch.Generator().manual_seed(seed))
        assert len(picks) == 8 and all(kinds[picks[i]] == kinds[picks[i + 1]] for i in range(0, 8, 2))
        assert set(kinds[picks].tolist()) == {3, 4}


def test_cells_are_labelled_by_kind_and_part_and_sampled_mostly_on_the_object() -> None:
    labels = torch.zeros(2, 8, 8, dtype=torch.uint8)
    labels[0, :4, :4], labels[1, 4:, 4:] = 3, 3  # the same fine label on two kinds
    ids = part_ids(labels, torch.tensor([0, 2]), stride=2)  # (2, 4, 4)
    assert ids.shape == (2, 4, 4) and set(ids[0].unique().tolist()) == {0, 1003}
    assert set(ids[1].unique().tolist()) == {0, 3003} and ids[1, 2:, 2:].eq(3003).all()
    features = torch.arange(2 * 3 * 16, dtype=torch.float32).reshape(2, 3, 16)
    cells, cell_ids = sample_cells(features, ids.flatten(1), 4, torch.Generator().manual_seed(0))
    assert cells.shape == (8, 3) and cell_ids.shape == (8,)
    for row, part in zip(cells, cell_ids, strict=True):  # each feature row travels with its own cell's id
        frame, cell = divmod(int(row[0]), 3 * 16)
        assert row.tolist() == features[frame, :, cell].tolist() and ids[frame].flatten()[cell] == part
    # 4 object cells at weight 1 against 12 background cells at 0.1: object cells dominate over many draws
    drawn = torch.cat([sample_cells(features, ids.flatten(1), 4, torch.Generator().manual_seed(s))[1]
                       for s in range(50)])
    assert (drawn > 0).float().mean() > 0.6


def test_a_contrastive_run_from_the_shipped_backbone_keeps_its_vae_and_text_encoder_and_moves_its_unet(
    tmp_path: Path
) -> None:
    out = tmp_path / "contrast"
    main(["--out", str(out), "--init", "tiny", "--seed", "5", "--images", "0", "--generic-layouts", "2",
          "--generic-images", "2", "--size", "64", "--latent-crop", "8", "--crop", "32", "--vae-steps", "0",
          "--unet-steps", "2", "--batch", "4", "--contrast-weight", "0.1", "--contrast-cells", "16"])
    shipped = load_backbone(str(SHIPPED), with_text_encoder=True)
    tuned = load_backbone(str(out), with_text_encoder=True)
    assert tuned.vae.config.scaling_factor == shipped.vae.config.scaling_factor
    for kept in ("vae", "text_encoder"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(tuned, kept).state_dict().values(),
                                                     getattr(shipped, kept).state_dict().values(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(tuned.unet.state_dict().values(),
                                                     shipped.unet.state_dict().values(), strict=True))


def test_contrast_needs_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--images", "0", "--generic-layouts", "3", "--generic-images", "1",
              "--contrast-weight", "0.1"])
    assert "--contrast-weight needs an even --batch (got 8) and 2 or more frames of every kind (got 1)" in (
        capsys.readouterr().err)


def test_a_missing_init_checkpoint_is_named_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="2"):
        main(["--out", str(tmp_path / "run"), "--init", str(tmp_path / "missing"), *SMALL_RUN])
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: no such checkpoint folder\n"
    assert not (tmp_path / "run").exists()
