"""Backbone loading from folders, fsspec URLs and the HF cache; the tiny SD-shaped checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import huggingface_hub.constants
import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler
from safetensors.torch import load_file

from smite_ops.backbone import BackboneError, content_hash, load_backbone, weight_file_names
from smite_ops.tiny_model import write_tiny_sd

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd", seed=0)


@pytest.fixture()
def broken_copy(tiny_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / "broken"))


def test_tiny_model_round_trip(tiny_dir: Path) -> None:
    backbone = load_backbone(str(tiny_dir), with_text_encoder=True)
    assert backbone.device == torch.device("cpu") and backbone.dtype == torch.float32
    assert backbone.root == tiny_dir and backbone.content_hash == content_hash(tiny_dir)
    unet, vae = backbone.unet, backbone.vae
    assert [type(b).__name__ for b in unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert sum(p.numel() for p in unet.parameters()) < 2_100_000
    assert not any(p.requires_grad for p in unet.parameters())
    saved = load_file(tiny_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in unet.state_dict().items())

    scheduler = backbone.scheduler
    assert type(scheduler).__name__ == "DDIMScheduler"
    assert (scheduler.config.steps_offset, scheduler.config.set_alpha_to_one, scheduler.config.clip_sample) == (
        1,
        False,
        False,
    )
    torch.testing.assert_close(scheduler.betas[[0, -1]], torch.tensor([0.00085, 0.012]))
    assert len(scheduler.betas) == 1000

    assert backbone.vae_scale_factor == 8 and vae.config.scaling_factor == 0.18215
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
        ids = backbone.tokenizer(
            ["background body wheel"], padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids
        text = backbone.text_encoder(ids).last_hidden_state
        noise = unet(latents, 10, text).sample
    assert latents.shape == (1, 4, 8, 8)
    assert ids[0, 0] == backbone.tokenizer.bos_token_id and text.shape == (1, 77, unet.config.cross_attention_dim)
    assert noise.shape == latents.shape and torch.isfinite(noise).all()


def test_tiny_model_is_deterministic_per_seed(tiny_dir: Path, tmp_path: Path) -> None:
    assert content_hash(write_tiny_sd(tmp_path / "again", seed=0)) == content_hash(tiny_dir)
    assert content_hash(write_tiny_sd(tmp_path / "other", seed=1)) != content_hash(tiny_dir)


def test_scheduler_is_ddim_whatever_the_checkpoint_names(broken_copy: Path) -> None:
    shutil.rmtree(broken_copy / "scheduler")
    PNDMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        skip_prk_steps=True,
        set_alpha_to_one=False,
    ).save_pretrained(broken_copy / "scheduler")
    scheduler = load_backbone(str(broken_copy)).scheduler
    assert isinstance(scheduler, DDIMScheduler) and scheduler.config.steps_offset == 1
    torch.testing.assert_close(scheduler.alphas_cumprod[0], torch.tensor(1 - 0.00085))


def test_dtype_override_and_no_text_encoder(tiny_dir: Path) -> None:
    backbone = load_backbone(str(tiny_dir), dtype=torch.bfloat16)
    assert backbone.text_encoder is None and backbone.tokenizer is None
    assert {p.dtype for p in backbone.unet.parameters()} == {torch.bfloat16}


def test_fsspec_sources(tiny_dir: Path, tmp_path: Path) -> None:
    local = load_backbone(f"file://{tiny_dir}")
    assert local.root == tiny_dir
    memory = fsspec.filesystem("memory")
    for path in tiny_dir.rglob("*"):
        if path.is_file():
            memory.pipe(f"/ckpt/{path.relative_to(tiny_dir).as_posix()}", path.read_bytes())
    try:
        copied = load_backbone("memory://ckpt", cache_dir=tmp_path / "cache")
        again = load_backbone("memory://ckpt", cache_dir=tmp_path / "cache")
    finally:
        memory.rm("/ckpt", recursive=True)
    assert copied.root.parent == tmp_path / "cache" and again.root == copied.root
    assert not (copied.root / "text_encoder").exists()
    assert copied.content_hash == local.content_hash == content_hash(tiny_dir)


def test_hub_id_resolves_from_local_cache_only(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "hub" / "models--smite-tests--tiny"
    shutil.copytree(tiny_dir, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert load_backbone("smite-tests/tiny").content_hash == content_hash(tiny_dir)
    with pytest.raises(BackboneError, match=r"smite-tests/absent: .*local Hugging Face cache"):
        load_backbone("smite-tests/absent")


def test_missing_unet_folder_names_the_config_path(broken_copy: Path) -> None:
    shutil.rmtree(broken_copy / "unet")
    with pytest.raises(BackboneError, match=rf"^{broken_copy}/unet/config.json not found"):
        load_backbone(str(broken_copy))


def test_missing_memory_checkpoint_names_the_url(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match=r"^memory://nowhere/unet/config.json not found"):
        load_backbone("memory://nowhere", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("scheduler/scheduler_config.json", "scheduler/scheduler_config.json not found"),
        ("vae/diffusion_pytorch_model.safetensors", "vae: no weight file"),
        ("tokenizer/tokenizer_config.json", "tokenizer/tokenizer_config.json not found"),
    ],
)
def test_incomplete_checkpoint_errors(broken_copy: Path, damage: str, message: str) -> None:
    (broken_copy / damage).unlink()
    with pytest.raises(BackboneError, match=message):
        load_backbone(str(broken_copy), with_text_encoder=True)


def test_unreadable_files_give_one_line_errors(broken_copy: Path) -> None:
    (broken_copy / "unet" / "config.json").write_text("{not json")
    with pytest.raises(BackboneError, match=r"unet: cannot load unet") as info:
        load_backbone(str(broken_copy))
    assert "\n" not in str(info.value)
    with pytest.raises(BackboneError, match="no such checkpoint folder"):
        load_backbone(str(broken_copy / "absent"))
    with pytest.raises(BackboneError, match="is a file"):
        load_backbone(str(broken_copy / "model_index.json"))


def test_weight_file_choice() -> None:
    names = ["config.json", "model.bin", "model.safetensors", "model.fp16.safetensors"]
    assert weight_file_names(names) == ["model.safetensors"]
    assert weight_file_names(["a.json", "model.bin", "model.fp16.bin"]) == ["model.bin"]
    shards = ["m-00001-of-00002.safetensors", "m-00002-of-00002.safetensors", "m.safetensors.index.json"]
    assert weight_file_names(shards) == shards[:2]
    assert weight_file_names(["config.json"]) == []
