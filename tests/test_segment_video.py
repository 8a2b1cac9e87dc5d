"""`smite segment-video`: a video's label PNGs appear all together, replace the previous ones, or not at all."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.batch.sequential import segment_video_file
from pipeline.config import load_config
from pipeline.io.video import VideoError, write_video
from pipeline.method.backbone_source import backbone_source
from smite_ops.backbone import load_backbone
from smite_ops.conditioning import encode_part_prompt
from smite_ops.part_model import PartModel, save_part_model

torch.set_num_threads(1)
PARTS = ["background", "body", "wheel"]
CONFIG = ["model.resolution=64", "segment.window=4"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An untrained part model of the tiny backbone: its prompt's embedding and initial tokens."""
    backbone = load_backbone(backbone_source("tiny"), device="cpu", dtype=torch.float32, with_text_encoder=True)
    base, tokens = encode_part_prompt(backbone.text_encoder, backbone.tokenizer, PARTS)
    folder = str(tmp_path_factory.mktemp("model") / "m")
    save_part_model(PartModel(PARTS, "tiny", backbone.content_hash, 64, base.cpu(), tokens.cpu()), folder)
    return folder


def _video(path: Path, frames: int) -> str:
    rng = np.random.default_rng(frames)
    write_video(str(path), rng.integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8), fps=8.0)
    return str(path)


def test_rerun_with_a_shorter_video_keeps_no_stale_frames(model_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = segment_video_file(_video(tmp_path / "long" / "clip.mp4", 8), model_dir, out, load_config("tiny", CONFIG),
                               progress=False)
    assert sorted(p.name for p in first.labels_dir.iterdir()) == [f"{i:05d}.png" for i in range(8)]
    second = segment_video_file(_video(tmp_path / "short" / "clip.mp4", 3), model_dir, out,
                                load_config("tiny", [*CONFIG, "output.overlays=false"]), progress=False)
    assert second.labels_dir == first.labels_dir and second.overlay is None
    assert sorted(p.name for p in second.labels_dir.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert sorted(p.name for p in out.iterdir()) == ["clip"]  # the first run's overlay of other labels is gone


def test_an_error_mid_video_leaves_the_previous_outputs_and_no_partial_frames(model_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = segment_video_file(_video(tmp_path / "clip.mp4", 3), model_dir, out, load_config("tiny", CONFIG),
                              progress=False)
    before = {p.name: p.read_bytes() for p in good.labels_dir.iterdir()}
    overlay = good.overlay.read_bytes()
    long = Path(_video(tmp_path / "cut" / "clip.mp4", 24))
    long.write_bytes(long.read_bytes()[: long.stat().st_size // 2])  # the sample table still says 24 frames
    (out / ".clip.partial-0123456789ab").mkdir()  # what a killed run leaves
    with pytest.raises(VideoError, match="frame"):
        segment_video_file(str(long), model_dir, out, load_config("tiny", CONFIG), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["clip", "clip.mp4"]  # no staging folder, no partial file
    assert {p.name: p.read_bytes() for p in good.labels_dir.iterdir()} == before
    assert good.overlay.read_bytes() == overlay
