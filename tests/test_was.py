"""WAS maps (smite_ops.was) against direct dense computations and hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from smite_ops.was import (
    MapShapeError,
    cross_attention_logits,
    labels_from_was,
    propagate,
    was_inference,
    was_training,
)

torch.set_num_threads(1)
DT = torch.float64


def dense_self_attention(self_layers: list[tuple[Tensor, Tensor]], scale: float | None = None) -> Tensor:
    """Reference Ā: mean over heads and layers of the intra-frame row softmax, ``(F, N, N)``."""
    maps = []
    for q, k in self_layers:
        s = q.shape[-1] ** -0.5 if scale is None else scale
        maps.append(torch.softmax(q @ k.transpose(-1, -2) * s, dim=-1).mean(dim=1))
    return torch.stack(maps).mean(dim=0)


def random_self_layers(frames: int, n: int, heads: tuple[int, ...] = (2, 3), head_dim: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(frames, h, n, head_dim, generator=gen, dtype=DT),
            torch.randn(frames, h, n, head_dim, generator=gen, dtype=DT),
        )
        for h in heads
    ]


def identity_self_layers(n: int) -> list[tuple[Tensor, Tensor]]:
    """One layer whose intra-frame attention is exactly the identity (float64 softmax underflows)."""
    basis = 100.0 * torch.eye(n, dtype=DT)[None, None]
    return [(basis, basis)]


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 7, 35, 64])
def test_propagate_matches_dense(chunk_size: int | None) -> None:
    frames, n, num_classes = 2, 35, 4  # N = 5 x 7, not divisible by most chunk sizes
    layers = random_self_layers(frames, n)
    values = torch.randn(frames, num_classes, n, dtype=DT)
    expected = (dense_self_attention(layers) @ values.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(propagate(layers, values, chunk_size=chunk_size), expected)


def test_propagate_more_classes_than_head_dim_and_custom_scale() -> None:
    layers = random_self_layers(1, 12, heads=(2,), head_dim=4)
    values = torch.randn(1, 9, 12, dtype=DT)
    expected = (dense_self_attention(layers, scale=0.3) @ values.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(propagate(layers, values, scale=0.3, chunk_size=5), expected)


def test_dense_rows_sum_to_one_and_propagate_keeps_constants() -> None:
    layers = random_self_layers(2, 20)
    attention = dense_self_attention(layers)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 20, dtype=DT))
    constant = torch.full((2, 3, 20), 2.5, dtype=DT)
    torch.testing.assert_close(propagate(layers, constant, chunk_size=6), constant)


def test_propagate_gradcheck() -> None:
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 2, 6, 4, generator=gen, dtype=DT, requires_grad=True)
    k = torch.randn(1, 2, 6, 4, generator=gen, dtype=DT, requires_grad=True)
    v = torch.randn(1, 3, 6, generator=gen, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v: propagate([(q, k)], v, chunk_size=4), (q, k, v))


def test_cross_attention_logits_hand_case() -> None:
    # layer A: 2x2 map, 1 head, head_dim 2, 3 tokens of which P=2 are read; scale 1/sqrt(2)
    q_a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]], dtype=DT)[None, None]
    k_a = torch.tensor([[1.0, 2.0], [3.0, 0.0], [50.0, 50.0]], dtype=DT)[None, None]
    # q.k per pixel for token 0 = (1, 2, 3, 0), token 1 = (3, 0, 3, 6)
    expected_a = torch.tensor([[[1.0, 2.0], [3.0, 0.0]], [[3.0, 0.0], [3.0, 6.0]]], dtype=DT) / math.sqrt(2)
    # layer B: a single pixel (1x1), upsampling to 2x2 is constant; token logits (4, -2) / sqrt(2)
    q_b = torch.tensor([[2.0, 1.0]], dtype=DT)[None, None]
    k_b = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [0.0, 0.0]], dtype=DT)[None, None]
    expected_b = torch.tensor([4.0, -2.0], dtype=DT)[:, None, None].expand(2, 2, 2) / math.sqrt(2)
    out = cross_attention_logits([(q_a, k_a, (2, 2)), (q_b, k_b, (1, 1))], num_classes=2, out_size=2)
    assert out.shape == (1, 2, 2, 2)
    torch.testing.assert_close(out[0], (expected_a + expected_b) / 2)


def test_cross_attention_logits_equals_resize_then_mean_over_heads() -> None:
    gen = torch.Generator().manual_seed(2)
    layers = []
    for heads, (h, w) in [(3, (4, 4)), (2, (8, 8))]:
        q = torch.randn(2, heads, h * w, 8, generator=gen, dtype=DT)
        k = torch.randn(2, heads, 77, 8, generator=gen, dtype=DT)
        layers.append((q, k, (h, w)))
    expected = []
    for q, k, (h, w) in layers:
        logits = (q @ k.transpose(-1, -2) / 8**0.5)[..., :5]  # (F, H, N, P): full L, then columns
        per_head = logits.permute(0, 1, 3, 2).reshape(2 * q.shape[1], 5, h, w)
        resized = F.interpolate(per_head, size=(16, 16), mode="bilinear", align_corners=False)
        expected.append(resized.reshape(2, q.shape[1], 5, 16, 16).mean(dim=1))
    out = cross_attention_logits(layers, num_classes=5, out_size=16)
    torch.testing.assert_close(out, torch.stack(expected).mean(dim=0))


def test_was_inference_spans_logit_range_per_class() -> None:
    frames, num_classes, h, w = 2, 4, 6, 6
    logits = torch.randn(frames, num_classes, h, w, generator=torch.Generator().manual_seed(3), dtype=DT) * 3
    out = was_inference(logits, random_self_layers(frames, h * w), out_size=13, chunk_size=10)
    assert out.shape == (frames, num_classes, 13, 13)
    torch.testing.assert_close(out.amin(dim=(2, 3)), logits.amin(dim=(2, 3)))
    torch.testing.assert_close(out.amax(dim=(2, 3)), logits.amax(dim=(2, 3)))


def test_was_inference_background_sparsification_hand_case() -> None:
    # identity attention and out_size == h: S_c is the min-max re-map of the (sparsified) logits
    background = torch.tensor([[1.0, 3.0], [3.0, 5.0]], dtype=DT)  # mean 3: only 5 survives
    part = torch.tensor([[4.0, 3.0], [2.0, 1.0]], dtype=DT)  # unchanged
    logits = torch.stack([background, part])[None]
    out = was_inference(logits, identity_self_layers(4), out_size=2)
    # background: W = (0, 0, 0, 5) re-mapped onto [1, 5]
    torch.testing.assert_close(out[0, 0], torch.tensor([[1.0, 1.0], [1.0, 5.0]], dtype=DT))
    torch.testing.assert_close(out[0, 1], part)


def test_was_inference_constant_map_is_finite() -> None:
    # zero queries: uniform attention, every propagated map is constant
    q = torch.zeros(1, 2, 9, 4, dtype=DT)
    k = torch.randn(1, 2, 9, 4, dtype=DT)
    logits = torch.randn(1, 3, 3, 3, dtype=DT, requires_grad=True)
    out = was_inference(logits, [(q, k)], out_size=5)
    torch.testing.assert_close(out, logits.amin(dim=(2, 3), keepdim=True).expand(1, 3, 5, 5))
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_was_training_is_propagated_softmax() -> None:
    frames, num_classes, h, w = 2, 3, 4, 5
    logits = torch.randn(frames, num_classes, h, w, dtype=DT)
    layers = random_self_layers(frames, h * w)
    out = was_training(logits, layers, chunk_size=3)
    probabilities = logits.softmax(dim=1).flatten(2)
    expected = (dense_self_attention(layers) @ probabilities.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, expected.reshape(frames, num_classes, h, w))
    torch.testing.assert_close(out.sum(dim=1), torch.ones(frames, h, w, dtype=DT))


def test_was_float32_input_keeps_dtype() -> None:
    layers = [(q.float(), k.float()) for q, k in random_self_layers(1, 16)]
    logits = torch.randn(1, 3, 4, 4)
    assert was_inference(logits, layers, out_size=8).dtype == torch.float32
    assert was_training(logits, layers).dtype == torch.float32


def test_labels_from_was() -> None:
    was = torch.tensor([[[[0.1, 2.0]], [[0.5, -1.0]], [[0.2, 3.0]]]])  # (1, 3, 1, 2)
    labels = labels_from_was(was)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[[1, 2]]]


def test_bad_shapes_raise_clear_errors() -> None:
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(MapShapeError, match="fewer than num_classes"):
        cross_attention_logits([(q, torch.randn(1, 2, 3, 8), (2, 2))], num_classes=5, out_size=4)
    with pytest.raises(MapShapeError, match=r"\(h, w\) = \(3, 3\)"):
        cross_attention_logits([(q, torch.randn(1, 2, 7, 8), (3, 3))], num_classes=2, out_size=4)
    with pytest.raises(MapShapeError, match="do not match values"):
        propagate([(q, q)], torch.randn(1, 3, 5))
    with pytest.raises(MapShapeError, match="chunk_size"):
        propagate([(q, q)], torch.randn(1, 3, 4), chunk_size=0)
    with pytest.raises(MapShapeError, match="at least one"):
        propagate([], torch.randn(1, 3, 4))
