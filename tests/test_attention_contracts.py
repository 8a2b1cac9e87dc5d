"""The attention module's contracts at their edges (issue 19: mutants of ``smite_ops.attention`` that the behaviour
tests let through): exact error messages, the conditional half of any even batch, capture-layer choice on UNets
that lack the reference's levels."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from smite_ops.attention import (
    AttentionCapture,
    VideoAttnProcessor,
    VideoState,
    _join_mask,
    auto_capture_layers,
    configure_video_unet,
    level_size,
)
from smite_ops.tiny_model import tiny_unet_config

torch.set_num_threads(1)


def unet_with(**changes: object) -> UNet2DConditionModel:
    """The tiny SD-shaped UNet with some of its config changed."""
    return UNet2DConditionModel(**{**tiny_unet_config(), **changes})


def test_conditional_half_keeps_the_second_half_of_any_even_batch() -> None:
    capture = AttentionCapture({"layer": "self"}, conditional_half=True)
    q, k = torch.arange(4.0).view(4, 1, 1, 1), torch.arange(4.0, 8.0).view(4, 1, 1, 1)
    capture.record("layer", q, k, (1, 1))
    assert torch.equal(capture.layers["layer"].q[0], q[2:]) and torch.equal(capture.layers["layer"].k[0], k[2:])
    odd = torch.zeros(3, 1, 1, 1)
    with pytest.raises(ValueError, match="^conditional_half capture needs an even batch, got 3$"):
        capture.record("layer", odd, odd, (1, 1))


def test_level_size_errors_name_the_tokens_and_the_latent() -> None:
    with pytest.raises(ValueError, match=r"^cannot infer the spatial size of 12 tokens \(not a square\)$"):
        level_size(None, 12)
    with pytest.raises(ValueError, match=re.escape("5 tokens match no UNet level of a (4, 4) latent")):
        level_size((4, 4), 5)
    with pytest.raises(ValueError, match=re.escape("0 tokens match no UNet level of a (4, 4) latent")):
        level_size((4, 4), 0)  # halving stops at (1, 1)
    assert level_size((4, 2), 1) == (1, 1)


def test_cross_frame_attention_refuses_full_masks() -> None:
    with pytest.raises(ValueError, match=r"^cross-frame attention supports key masks only \(one mask row per frame\)$"):
        _join_mask(torch.zeros(2, 1, 3, 4), 2)
    assert _join_mask(torch.zeros(4, 1, 1, 3), 2).shape == (2, 1, 1, 6)


def test_capture_layers_need_the_reference_levels() -> None:
    """Two attentions per up block cannot give the three of the 1/4 level; plain up blocks give none; a UNet without
    a 1/4 level has nothing to choose."""
    with pytest.raises(ValueError, match=r"^cannot choose capture layers: up_blocks\.1 lacks the needed attentions$"):
        auto_capture_layers(unet_with(layers_per_block=1))
    plain_up = ["UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    with pytest.raises(ValueError, match=r"^cannot choose capture layers: up_blocks\.1 lacks the needed attentions$"):
        auto_capture_layers(unet_with(up_block_types=plain_up))
    two_levels = {
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 48],
        "attention_head_dim": [2, 3],
    }
    with pytest.raises(ValueError, match=r"^cannot choose capture layers: no up block at 1/4 resolution$"):
        auto_capture_layers(unet_with(**two_levels))


def test_a_capture_layer_that_is_not_attention_is_named_with_its_type() -> None:
    with pytest.raises(ValueError, match=r"^capture layer 'conv_in' is a Conv2d, not an Attention$"):
        configure_video_unet(unet_with(), capture_layers=["conv_in"])


def test_image_shaped_inputs_match_the_stock_processor() -> None:
    """``(B, C, h, w)`` inputs, a group norm, a residual and an output rescale (as in a VAE's attention block): the
    processor with one frame per clip equals diffusers' own."""
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4, norm_num_groups=2, residual_connection=True,
                     rescale_output_factor=2.0, bias=True)
    images = torch.randn(3, 8, 4, 5)
    ours = VideoAttnProcessor(VideoState(num_frames=1, cross_frame=True), "block")(attn, images)
    torch.testing.assert_close(ours, AttnProcessor2_0()(attn, images))
    assert ours.shape == images.shape


@pytest.mark.parametrize("options", [{}, {"qk_norm": "layer_norm"}, {"cross_attention_norm": "layer_norm"}])
def test_masked_cross_attention_with_norms_matches_the_stock_processor(options: dict[str, str]) -> None:
    """Cross-attention with a full (query x key) additive mask, query/key norms or a context norm: the processor
    (never cross-frame for cross-attention) equals diffusers' own."""
    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4, **options)
    hidden, context, mask = torch.randn(2, 5, 8), torch.randn(2, 7, 6), torch.randn(2, 5, 7)
    ours = VideoAttnProcessor(VideoState(num_frames=2, cross_frame=True), "block")(attn, hidden, context, mask)
    torch.testing.assert_close(ours, AttnProcessor2_0()(attn, hidden, context, mask))


def test_cross_frame_attention_refuses_a_batch_of_partial_clips() -> None:
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    with pytest.raises(ValueError, match="^batch of 2 is not a whole number of 3-frame clips$"):
        VideoAttnProcessor(VideoState(num_frames=3, cross_frame=True), "block")(attn, torch.randn(2, 5, 8))


def test_a_default_capture_keeps_every_sample_and_its_gradient() -> None:
    capture = AttentionCapture({"block": "self"})
    q = torch.randn(3, 1, 2, 4, requires_grad=True)
    capture.record("block", q, q, (1, 2))
    layer = capture.layers["block"]
    assert layer.name == "block" and layer.q[0] is q and layer.q[0].requires_grad


@torch.no_grad()
def test_the_video_unet_reads_its_sample_by_keyword_and_checks_its_batch() -> None:
    """Defaults: one frame per clip, cross-frame attention on; ``sample=`` works as well as a positional sample; a
    batch that is not whole clips is refused, naming the sample count; configuring twice is refused."""
    unet = unet_with()
    video = configure_video_unet(unet)
    assert (video.num_frames, video.cross_frame) == (1, True)
    video.restore()
    assert not configure_video_unet(unet, 2, cross_frame=False).cross_frame
    sample, text = torch.randn(4, 4, 8, 6), torch.randn(4, 77, 32)
    assert unet(sample=sample, timestep=torch.tensor(50), encoder_hidden_states=text).sample.shape == sample.shape
    with pytest.raises(ValueError, match="^UNet batch of 3 samples is not a whole number of 2-frame clips$"):
        unet(sample[:3], torch.tensor(50), text[:3])
    already = "UNet is already configured for video; call restore() on its handle first"
    with pytest.raises(ValueError, match=f"^{re.escape(already)}$"):
        configure_video_unet(unet)


def test_a_spatially_normed_attention_matches_the_stock_processor() -> None:
    """Attention with a spatial norm conditioned on ``temb`` (MoVQ-style decoders): the processor applies it as
    diffusers does."""
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=2, dim_head=4, spatial_norm_dim=3)  # its group norm has 32 groups
    images, temb = torch.randn(2, 32, 4, 5), torch.randn(2, 3, 2, 2)
    ours = VideoAttnProcessor(VideoState(), "block")(attn, images, temb=temb)
    torch.testing.assert_close(ours, AttnProcessor2_0()(attn, images, temb=temb))
