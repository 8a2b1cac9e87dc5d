"""Video attention processors, Q/K capture and frame-pooled group norm on the stock diffusers UNet."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from torch import nn

from smite_ops.attention import (
    VideoAttnProcessor,
    VideoState,
    auto_capture_layers,
    configure_video_unet,
    level_size,
)
from smite_ops.group_norm import FramePooledGroupNorm, pool_group_norms
from smite_ops.tiny_model import tiny_unet_config

torch.set_num_threads(1)

SD_TABLE = [  # METHOD.md §2.3
    *(f"up_blocks.1.attentions.{i}.transformer_blocks.0.attn2" for i in range(3)),
    *(f"up_blocks.2.attentions.{i}.transformer_blocks.0.attn2" for i in range(2)),
    *(f"up_blocks.3.attentions.{i}.transformer_blocks.0.attn1" for i in range(3)),
]
SD15 = {"sample_size": 64, "cross_attention_dim": 768}
SD21 = {
    "sample_size": 64,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**tiny_unet_config()).eval()


def unet_inputs(frames: int, clips: int = 1, size: tuple[int, int] = (16, 16)) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(clips * frames, 4, *size, generator=generator)
    text = torch.randn(1, 77, 32, generator=generator).expand(clips * frames, -1, -1)
    return sample, torch.tensor(50), text


@torch.no_grad()
def run(unet: UNet2DConditionModel, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return unet(*inputs).sample


def test_single_frame_and_per_frame_modes_equal_stock_unet() -> None:
    unet = tiny_unet()
    inputs = unet_inputs(frames=2)
    stock = run(unet, inputs)
    video = configure_video_unet(unet, num_frames=1, cross_frame=True)
    assert torch.equal(run(unet, inputs), stock)  # F = 1: joint attention over one frame
    video.num_frames = 2
    with video.settings(cross_frame=False):
        assert torch.equal(run(unet, inputs), stock)  # per-frame attention = plain 2D UNet
    joint = run(unet, inputs)
    assert (joint - stock).abs().max() > 1e-3
    video.restore()
    assert torch.equal(run(unet, inputs), stock)


def test_cross_frame_attention_equals_attention_over_concatenated_tokens() -> None:
    attn = tiny_unet().up_blocks[3].attentions[0].transformer_blocks[0].attn1
    clips, frames, tokens, channels = 2, 3, 5, attn.to_q.in_features
    hidden = torch.randn(clips * frames, tokens, channels, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(clips * frames, 1, tokens)
    mask[1, 0, 2] = mask[4, 0, :3] = -1e4  # additive key mask, as diffusers expects it
    state = VideoState(num_frames=frames, cross_frame=True)
    attn.set_processor(VideoAttnProcessor(state, "attn1"))
    with torch.no_grad():
        out = attn(hidden, attention_mask=mask)
        state.cross_frame = False
        per_frame = attn(hidden, attention_mask=mask)

        heads = attn.heads
        expected = []
        for clip in range(clips):
            x = hidden[clip * frames : (clip + 1) * frames].reshape(frames * tokens, channels)
            key_mask = mask[clip * frames : (clip + 1) * frames].reshape(frames * tokens)
            q, k, v = (
                proj(x).reshape(frames * tokens, heads, -1).transpose(0, 1)
                for proj in (attn.to_q, attn.to_k, attn.to_v)
            )
            weights = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5 + key_mask, dim=-1)
            mixed = (weights @ v).transpose(0, 1).reshape(frames * tokens, -1)
            expected.append(attn.to_out[0](mixed).reshape(frames, tokens, channels))
    torch.testing.assert_close(out, torch.cat(expected), rtol=1e-5, atol=1e-6)
    assert (out - per_frame).abs().max() > 1e-4


def test_capture_shapes_sizes_and_conditional_half() -> None:
    unet = tiny_unet()
    frames = 3
    inputs = unet_inputs(frames, clips=2, size=(16, 12))  # CFG-doubled: [uncond clip, cond clip]
    video = configure_video_unet(unet, frames, conditional_half=True)
    run(unet, inputs)
    full = configure_video_unet(tiny_unet(), frames)
    run(full.unet, inputs)
    sizes = {"up_blocks.1": (4, 3), "up_blocks.2": (8, 6), "up_blocks.3": (16, 12)}
    heads = {"up_blocks.1": 3, "up_blocks.2": 3, "up_blocks.3": 2}
    assert list(video.capture.layers) == SD_TABLE
    for name, layer in video.capture.layers.items():
        block = name[:11]
        h, w = sizes[block]
        assert layer.size == (h, w)
        assert len(layer.q) == len(layer.k) == 1
        assert layer.q[0].shape == (frames, heads[block], h * w, 16)
        keys = h * w if layer.kind == "self" else 77
        assert layer.k[0].shape == (frames, heads[block], keys, 16)
        assert torch.equal(layer.q[0], full.capture.layers[name].q[0][frames:])
    assert [layer.kind for layer in video.capture.of_kind("self")] == ["self"] * 3
    cross, self_ = video.capture.cross_layers(), video.capture.self_layers()
    assert [size for _, _, size in cross] == [(4, 3)] * 3 + [(8, 6)] * 2 and len(self_) == 3
    assert cross[0][0] is video.capture.layers[SD_TABLE[0]].q[0]
    run(unet, unet_inputs(frames, clips=2, size=(8, 8)))
    assert video.capture.layers[SD_TABLE[5]].sizes == [(16, 12), (8, 8)]
    assert video.capture.self_layers(call=0)[0][0].shape[2] == 16 * 12
    video.capture.clear()
    assert all(not layer.q and layer.size is None for layer in video.capture.layers.values())


def test_explicit_or_no_capture_layers() -> None:
    unet = tiny_unet()
    names = [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1",
        "mid_block.attentions.0.transformer_blocks.0.attn2",
    ]
    video = configure_video_unet(unet, 2, capture_layers=names)
    run(unet, unet_inputs(frames=2))
    assert {name: layer.kind for name, layer in video.capture.layers.items()} == {names[0]: "self", names[1]: "cross"}
    assert [layer.size for layer in video.capture.layers.values()] == [(16, 16), (2, 2)]
    video.capture.enabled = False
    run(unet, unet_inputs(frames=2))
    assert [len(layer.q) for layer in video.capture.layers.values()] == [1, 1]
    video.restore()
    assert configure_video_unet(unet, capture_layers=None).capture.layers == {}


def test_capture_keeps_gradients_unless_detached() -> None:
    unet = tiny_unet()
    sample, timestep, text = unet_inputs(frames=2)
    sample.requires_grad_(True)
    video = configure_video_unet(unet, 2)
    unet(sample, timestep, text)
    self_layer = video.capture.of_kind("self")[0]
    self_layer.q[0].square().sum().backward()
    assert sample.grad is not None and sample.grad.abs().sum() > 0
    video.restore()
    detached = configure_video_unet(unet, 2, detach=True)
    unet(sample, timestep, text)
    assert not detached.capture.of_kind("cross")[0].q[0].requires_grad


def test_query_maps_are_the_query_projections_resized_and_stacked() -> None:
    unet = tiny_unet()
    projections: list[torch.Tensor] = []
    names = [name for name, kind in auto_capture_layers(unet).items() if kind == "cross"]
    hooks = [unet.get_submodule(name).to_q.register_forward_hook(lambda m, i, out: projections.append(out))
             for name in names]
    video = configure_video_unet(unet, 2)
    sample, timestep, text = unet_inputs(frames=2, size=(16, 12))
    sample.requires_grad_(True)
    unet(sample, timestep, text)
    maps = video.capture.query_maps((6, 5))
    expected = []
    for projection, (_, _, (h, w)) in zip(projections, video.capture.cross_layers(), strict=True):
        grid = projection.transpose(1, 2).reshape(2, -1, h, w)  # (B, N, C) -> (B, C, h, w)
        expected.append(nn.functional.interpolate(grid, size=(6, 5), mode="bilinear", align_corners=False))
    assert maps.shape == (2, 3 * 48 + 2 * 48, 6, 5)
    assert torch.allclose(maps, torch.cat(expected, dim=1))
    maps.square().sum().backward()
    assert sample.grad is not None and sample.grad.abs().sum() > 0
    assert video.capture.query_maps((6, 5), heights={8}).shape == (2, 2 * 48, 6, 5)
    with pytest.raises(ValueError, match=r"no captured cross layer has a map height in \[7\]"):
        video.capture.query_maps((6, 5), heights={7})
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("config", [SD15, SD21], ids=["sd15", "sd21"])
def test_auto_layers_for_sd_configs_match_method_table(config: dict[str, object]) -> None:
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    assert list(auto_capture_layers(unet)) == SD_TABLE
    assert set(auto_capture_layers(unet).values()) == {"cross", "self"}


def test_sd21_shaped_capture_shapes_on_meta_device() -> None:
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD21)
        video = configure_video_unet(unet, num_frames=2)
        unet(torch.empty(2, 4, 64, 64), torch.tensor(100), torch.empty(2, 77, 1024))
    shapes = {
        name: (layer.size, tuple(layer.q[0].shape), tuple(layer.k[0].shape))
        for name, layer in video.capture.layers.items()
    }
    assert shapes[SD_TABLE[0]] == ((16, 16), (2, 20, 256, 64), (2, 20, 77, 64))
    assert shapes[SD_TABLE[3]] == ((32, 32), (2, 10, 1024, 64), (2, 10, 77, 64))
    assert shapes[SD_TABLE[5]] == ((64, 64), (2, 5, 4096, 64), (2, 5, 4096, 64))


def test_frame_pooled_group_norm_statistics() -> None:
    norm = nn.GroupNorm(4, 8)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    state = VideoState(num_frames=1)
    pooled = FramePooledGroupNorm(norm, state)
    x = torch.randn(6, 8, 5, 7, generator=torch.Generator().manual_seed(3)) * 3 + 1
    assert torch.equal(pooled(x), norm(x))
    state.num_frames = 3
    groups = x.reshape(2, 3, 4, 2, 5, 7)  # (clip, frame, group, channel in group, h, w)
    mean = groups.mean(dim=(1, 3, 4, 5), keepdim=True)
    var = groups.var(dim=(1, 3, 4, 5), keepdim=True, unbiased=False)
    normed = ((groups - mean) / torch.sqrt(var + norm.eps)).reshape_as(x)
    expected = normed * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(pooled(x), expected, rtol=1e-5, atol=1e-5)
    assert pooled.weight is norm.weight and pooled.bias is norm.bias


def test_pooled_group_norm_swaps_resnet_norms_keeping_state_dict() -> None:
    unet = tiny_unet()
    inputs = unet_inputs(frames=2)
    stock, keys = run(unet, inputs), list(unet.state_dict())
    video = configure_video_unet(unet, 1, pooled_group_norm=True)
    swapped = [m for m in unet.modules() if isinstance(m, FramePooledGroupNorm)]
    resnets = sum(len(b.resnets) for b in (*unet.down_blocks, unet.mid_block, *unet.up_blocks))
    assert len(swapped) == 2 * resnets + 1
    assert list(unet.state_dict()) == keys
    assert torch.equal(run(unet, inputs), stock)
    video.num_frames = 2
    assert (run(unet, inputs) - stock).abs().max() > 1e-4
    video.restore()
    assert not any(isinstance(m, FramePooledGroupNorm) for m in unet.modules())
    assert pool_group_norms(nn.Module(), VideoState()) == []


def test_bad_configuration_and_batch_raise_clear_errors() -> None:
    unet = tiny_unet()
    with pytest.raises(ValueError, match="no such module"):
        configure_video_unet(unet, capture_layers=["up_blocks.9.attn1"])
    with pytest.raises(ValueError, match="not an Attention"):
        configure_video_unet(unet, capture_layers=["conv_in"])
    video = configure_video_unet(unet, 3)
    with pytest.raises(ValueError, match="not a whole number of 3-frame clips"):
        run(unet, unet_inputs(frames=2))
    with pytest.raises(ValueError, match="already configured"):
        configure_video_unet(unet)
    with pytest.raises(ValueError, match="positive integer"):
        video.num_frames = 0
    video.restore()
    with pytest.raises(ValueError, match="positive integer"):
        configure_video_unet(unet, 2.5)
    configure_video_unet(unet, 2)  # the failed call above left nothing installed


def test_level_size_follows_ceil_halving() -> None:
    assert level_size((64, 64), 4096) == (64, 64)
    assert level_size((64, 64), 256) == (16, 16)
    assert level_size((15, 9), 8 * 5) == (8, 5)
    assert level_size(None, 49) == (7, 7)
    with pytest.raises(ValueError):
        level_size((16, 16), 50)
