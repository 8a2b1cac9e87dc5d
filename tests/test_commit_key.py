"""The commit key (issue 11, item 3): it changes with the model, the baseline, the tracker checkpoint and the
output settings, and not with where or how wide the job runs. Real part-model folders and reference sets."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.batch.commit_key import commit_key, content_hash
from pipeline.batch.segmenters import NearestColourFactory, PartModelFactory
from pipeline.config import ConfigError, load_config
from pipeline.io.references import write_reference_set
from smite_ops.part_model import PartModel, save_part_model

TRACKS = ["output.tracks=true", "tracker.kind=cotracker3"]


def _part_model(folder: Path, seed: int, base_hash: str = "b" * 64) -> str:
    generator = torch.Generator().manual_seed(seed)
    model = PartModel(
        part_names=["background", "body"], base_model="tiny", base_hash=base_hash, resolution=64,
        conditioning=torch.randn(4, 8, generator=generator), tokens=torch.randn(1, 8, generator=generator),
        unet_weights={},
    )
    save_part_model(model, str(folder))
    return str(folder)


def _references(folder: Path, colour: int) -> str:
    image = np.full((8, 8, 3), colour, np.uint8)
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 1
    write_reference_set(str(folder), ["background", "body"], [image], [labels])
    return str(folder)


def test_the_key_follows_the_model_and_the_baseline(tmp_path: Path) -> None:
    config = load_config("tiny")
    model_a, model_b = _part_model(tmp_path / "a", seed=0), _part_model(tmp_path / "b", seed=1)
    same_as_a = _part_model(tmp_path / "a_copy", seed=0)
    other_base = _part_model(tmp_path / "c", seed=0, base_hash="c" * 64)
    refs = _references(tmp_path / "refs", 200)
    keys = {
        "a": commit_key(config, PartModelFactory(model_a, config)),
        "a copy": commit_key(config, PartModelFactory(same_as_a, config)),
        "b": commit_key(config, PartModelFactory(model_b, config)),
        "other backbone": commit_key(config, PartModelFactory(other_base, config)),
        "baseline": commit_key(config, NearestColourFactory(refs)),
        "other references": commit_key(config, NearestColourFactory(_references(tmp_path / "refs2", 100))),
    }
    assert keys["a"] == keys["a copy"]  # content, not location
    (Path(model_a) / "training_state.pt").write_bytes(b"optimizer state of a resumed training")
    assert commit_key(config, PartModelFactory(model_a, config)) == keys["a"]
    assert len(set(keys.values())) == len(keys) - 1
    assert all(len(key) == 32 and int(key, 16) >= 0 for key in keys.values())


def test_runtime_settings_keep_the_key_and_output_settings_change_it(tmp_path: Path) -> None:
    factory = NearestColourFactory(_references(tmp_path / "refs", 200))
    base = commit_key(load_config("tiny"), factory)
    for runtime in ("runtime.num_actors=4", "runtime.max_shards_in_flight=9", "runtime.device=cpu",
                    "runtime.ray_address=auto", "train.epochs=3"):
        assert commit_key(load_config("tiny", [runtime]), factory) == base, runtime
    for output in ("segment.window=9", "output.overlays=false", "model.resolution=128", "segment.seed=1"):
        assert commit_key(load_config("tiny", [output]), factory) != base, output


def test_the_tracker_checkpoint_content_is_in_the_key_when_tracks_are_computed(tmp_path: Path) -> None:
    factory = NearestColourFactory(_references(tmp_path / "refs", 200))
    first, second = tmp_path / "first.pth", tmp_path / "second.pth"
    first.write_bytes(b"weights one")
    second.write_bytes(b"weights two")
    key = commit_key(load_config("tiny", [*TRACKS, f"tracker.checkpoint={first}"]), factory)
    assert key != commit_key(load_config("tiny", [*TRACKS, f"tracker.checkpoint={second}"]), factory)
    first.write_bytes(b"weights one, retrained")  # same path, new content: relabel
    assert key != commit_key(load_config("tiny", [*TRACKS, f"tracker.checkpoint={first}"]), factory)
    assert content_hash(str(first)) != content_hash(str(second))
    with pytest.raises(ConfigError, match=r"^tracker.checkpoint: .*gone.pth: cannot read"):
        commit_key(load_config("tiny", [*TRACKS, f"tracker.checkpoint={tmp_path / 'gone.pth'}"]), factory)


@pytest.mark.parametrize("factory", ["model", "baseline"])
def test_a_segmenter_whose_files_are_missing_is_a_config_error(tmp_path: Path, factory: str) -> None:
    config = load_config(None)
    missing = str(tmp_path / "gone")
    made = PartModelFactory(missing, config) if factory == "model" else NearestColourFactory(missing)
    with pytest.raises(ConfigError, match=f"{tmp_path}/gone.*: cannot read the segmenter's files \\(not found\\)"):
        commit_key(config, made)
