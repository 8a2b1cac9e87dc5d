"""Contracts of :mod:`smite_ops.was` that ``test_was.py`` leaves open (issue 19, mutation).

Every shape check names the function, the layer and what it got (one condition broken at a time); the
smallest accepted sizes; a custom scale and the chunk size reach every layer; the result keeps the values'
dtype when the attention runs in another; the inference variant's per-frame background threshold, its
zeroing of the dropped background and its ``align_corners=False`` resize, each on a hand-computed case.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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


def random_layers(frames: int, n: int, heads: tuple[int, ...] = (2, 3), head_dim: int = 4,
                  seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Random float64 self-attention layers ``(q, k)``, each ``(frames, heads, n, head_dim)``."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(frames, h, n, head_dim, generator=gen, dtype=DT),
             torch.randn(frames, h, n, head_dim, generator=gen, dtype=DT)) for h in heads]


def dense_propagate(layers: list[tuple[Tensor, Tensor]], values: Tensor, scale: float) -> Tensor:
    """Reference ``Ā V`` with an explicit ``N x N`` attention: ``values`` ``(F, P, N)`` -> ``(F, P, N)``."""
    attention = torch.stack([torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1).mean(dim=1)
                             for q, k in layers]).mean(dim=0)
    return (attention @ values.transpose(1, 2)).transpose(1, 2)


def identity_layers(n: int) -> list[tuple[Tensor, Tensor]]:
    """One layer whose attention is exactly the identity (the float64 softmax of 1e4 on the diagonal)."""
    basis = 100.0 * torch.eye(n, dtype=DT)[None, None]
    return [(basis, basis)]


def error_of(call: Callable[[], object]) -> str:
    """The message of the :class:`MapShapeError` that ``call`` raises."""
    with pytest.raises(MapShapeError) as error:
        call()
    return str(error.value)


Q = torch.zeros(1, 2, 4, 8)


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (torch.zeros(2, 4, 8), "q and k must be (F, heads, tokens, head_dim), got (1, 2, 4, 8) and (2, 4, 8)"),
        (torch.zeros(1, 3, 4, 8), "q (1, 2, 4, 8) and k (1, 3, 4, 8) disagree on frames, heads or head_dim"),
        (torch.zeros(2, 2, 4, 8), "q (1, 2, 4, 8) and k (2, 2, 4, 8) disagree on frames, heads or head_dim"),
        (torch.zeros(1, 2, 4, 6), "q (1, 2, 4, 8) and k (1, 2, 4, 6) disagree on frames, heads or head_dim"),
    ],
)
def test_query_key_errors_name_function_layer_and_shapes(k: Tensor, message: str) -> None:
    """The checks of q against k, in both public functions, for the layer that is wrong (layer 1)."""
    good = (Q, torch.zeros(1, 2, 4, 8))
    assert error_of(lambda: cross_attention_logits([(*good, (2, 2)), (Q, k, (2, 2))], 2, 4)) == (
        f"cross_attention_logits layer 1: {message}"
    )
    assert error_of(lambda: propagate([good, (Q, k)], torch.zeros(1, 3, 4))) == f"propagate layer 1: {message}"


def test_cross_attention_logits_errors() -> None:
    """Token counts, class count and layer list: each error says what it got."""
    q = torch.zeros(1, 2, 6, 5)  # 6 query tokens, head_dim 5: the message must give the tokens
    assert error_of(lambda: cross_attention_logits([(q, torch.zeros(1, 2, 3, 5), (2, 2))], 2, 4)) == (
        "cross_attention_logits layer 0: q has 6 query tokens but (h, w) = (2, 2)"
    )
    assert error_of(lambda: cross_attention_logits([(q, torch.zeros(1, 2, 3, 5), (2, 3))], 4, 4)) == (
        "cross_attention_logits layer 0: k has 3 tokens, fewer than num_classes=4"
    )
    assert error_of(lambda: cross_attention_logits([(q, torch.zeros(1, 2, 3, 5), (2, 3))], 0, 4)) == (
        "cross_attention_logits: num_classes must be >= 1, got 0"
    )
    assert error_of(lambda: cross_attention_logits([], 2, 4)) == (
        "cross_attention_logits: at least one captured layer is required"
    )


def test_propagate_errors() -> None:
    """Values and q/k of other frames or pixels, values of the wrong rank, no layers."""
    q = torch.zeros(1, 2, 4, 8)
    for q_, k_ in [(q, torch.zeros(1, 2, 5, 8)), (torch.zeros(1, 2, 5, 8), q)]:
        assert error_of(lambda q_=q_, k_=k_: propagate([(q_, k_)], torch.zeros(1, 3, 4))) == (
            f"propagate layer 0: q {tuple(q_.shape)} / k {tuple(k_.shape)} do not match values (F=1, N=4)"
        )
    assert error_of(lambda: propagate([(q, q)], torch.zeros(2, 3, 4))) == (
        "propagate layer 0: q (1, 2, 4, 8) / k (1, 2, 4, 8) do not match values (F=2, N=4)"
    )
    assert error_of(lambda: propagate([(q, q)], torch.zeros(3, 4))) == (
        "propagate: values must be (F, P, N), got (3, 4)"
    )
    assert error_of(lambda: propagate([], torch.zeros(1, 3, 4))) == "propagate: at least one captured layer is required"


@pytest.mark.parametrize("function", [was_inference, was_training])
def test_was_errors_name_the_variant(function: Callable[..., Tensor]) -> None:
    """Logits of the wrong rank are refused by the variant's name."""
    args = (8,) if function is was_inference else ()
    assert error_of(lambda: function(torch.zeros(3, 4, 4), identity_layers(16), *args)) == (
        f"{function.__name__}: cross_logits must be (F, P, h, w), got (3, 4, 4)"
    )
    assert error_of(lambda: labels_from_was(torch.zeros(3, 4, 4))) == (
        "labels_from_was: expected (F, P, H, W), got (3, 4, 4)"
    )


def test_cross_attention_logits_smallest_sizes_and_custom_scale() -> None:
    """One class (background only) read from a key with exactly P tokens, at a given scale.

    Pixel 0 has q = (1, 0), pixel 1 q = (0, 2); the single token k = (3, 1): logits (3, 2) * 0.5.
    """
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=DT)[None, None]
    k = torch.tensor([[3.0, 1.0]], dtype=DT)[None, None]
    out = cross_attention_logits([(q, k, (1, 2)), (q, k, (1, 2))], num_classes=1, out_size=2, scale=0.5)
    # out_size 2 from a 1 x 2 map: rows repeat, columns are kept
    torch.testing.assert_close(out, torch.tensor([[[[1.5, 1.0], [1.5, 1.0]]]], dtype=DT))
    default = cross_attention_logits([(q, k, (1, 2))], num_classes=1, out_size=2)
    torch.testing.assert_close(default[0, 0, 0], torch.tensor([3.0, 2.0], dtype=DT) / math.sqrt(2))


def test_custom_scale_reaches_every_propagation() -> None:
    """``scale`` is used by propagate, was_training and was_inference (here differently from the default)."""
    frames, num_classes, n = 2, 3, 6
    layers = random_layers(frames, n)
    logits = torch.randn(frames, num_classes, 2, 3, generator=torch.Generator().manual_seed(5), dtype=DT)
    probabilities = logits.softmax(dim=1).flatten(2)
    expected = dense_propagate(layers, probabilities, 1.3)
    assert (expected - dense_propagate(layers, probabilities, 0.5)).abs().max() > 1e-2  # the scale matters here
    torch.testing.assert_close(propagate(layers, probabilities, scale=1.3), expected)
    torch.testing.assert_close(was_training(logits, layers, scale=1.3, chunk_size=4), expected.reshape(logits.shape))
    # was_inference with out_size == (h, w) impossible here (2 x 3): compare against the same steps, scale 1.3
    inference = was_inference(logits[:, :, :2, :2], [(q[:, :, :4], k[:, :, :4]) for q, k in layers], out_size=2,
                              scale=1.3, chunk_size=3)
    flat = logits[:, :, :2, :2].flatten(2)
    background = flat[:, 0]
    kept = torch.where(background > background.mean(dim=1, keepdim=True), background, 0.0)
    sparse = torch.cat([kept[:, None], flat[:, 1:]], dim=1)
    propagated = dense_propagate([(q[:, :, :4], k[:, :, :4]) for q, k in layers], sparse, 1.3)
    low, high = flat.amin(2, keepdim=True), flat.amax(2, keepdim=True)
    w_min, w_max = propagated.amin(2, keepdim=True), propagated.amax(2, keepdim=True)
    remapped = low + (propagated - w_min) * (high - low) / (w_max - w_min)
    torch.testing.assert_close(inference, remapped.reshape(frames, num_classes, 2, 2))


def test_chunk_size_bounds_the_query_rows_of_every_attention_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``chunk_size``, no attention call sees more query rows than that (the forward memory bound)."""
    rows: list[int] = []
    original = F.scaled_dot_product_attention

    def recording(q: Tensor, *args: object, **kwargs: object) -> Tensor:
        """Record the number of query rows, then attend as usual."""
        rows.append(q.shape[2])
        return original(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    layers = random_layers(1, 10, heads=(2,))
    logits = torch.randn(1, 3, 2, 5, dtype=DT)
    propagate(layers, torch.randn(1, 3, 10, dtype=DT), chunk_size=4)
    assert rows == [4, 4, 2]
    rows.clear()
    was_training(logits, layers, chunk_size=3)
    assert rows == [3, 3, 3, 1]
    rows.clear()
    was_inference(logits, layers, out_size=4, chunk_size=6)
    assert rows == [6, 4]
    rows.clear()
    propagate(layers, torch.randn(1, 3, 10, dtype=DT))
    assert rows == [10]


def test_propagate_returns_the_values_dtype_when_attention_runs_in_another() -> None:
    """float32 attention on float64 values: the values are cast for the attention, the result cast back."""
    layers = [(q.float(), k.float()) for q, k in random_layers(1, 6)]
    values = torch.randn(1, 3, 6, dtype=DT)
    out = propagate(layers, values, chunk_size=4)
    assert out.dtype == DT
    expected = dense_propagate([(q.double(), k.double()) for q, k in layers], values, 0.5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_was_inference_background_threshold_is_per_frame_and_dropped_pixels_are_zero() -> None:
    """Identity attention, out_size = h: the background map is the min-max re-map of the kept logits.

    Frame 0: background (1, 2, 4, 5), mean 3: kept (0, 0, 4, 5), re-mapped onto [1, 5]: (1, 1, 4.2, 5).
    Frame 1: the same + 10 (mean 13): kept (0, 0, 14, 15) onto [11, 15]: (11, 11, 11 + 56/15, 15). A threshold over
    both frames (mean 8) would drop all of frame 0.
    """
    background = torch.tensor([[1.0, 2.0], [4.0, 5.0]], dtype=DT)
    part = torch.tensor([[4.0, 3.0], [2.0, 1.0]], dtype=DT)
    logits = torch.stack([torch.stack([background, part]), torch.stack([background + 10, part])])
    out = was_inference(logits, [(q.expand(2, 1, 4, 4), k.expand(2, 1, 4, 4)) for q, k in identity_layers(4)], 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[1.0, 1.0], [4.2, 5.0]], dtype=DT))
    torch.testing.assert_close(out[1, 0], torch.tensor([[11.0, 11.0], [11 + 56 / 15, 15.0]], dtype=DT))
    torch.testing.assert_close(out[:, 1], part.expand(2, 2, 2))


def test_was_inference_resizes_without_aligned_corners() -> None:
    """Rows (0, 1) of a 2 x 2 map to 4 x 4: ``align_corners=False`` samples at -0.25, 0.25, 0.75, 1.25 (clamped)."""
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=DT)[None, None].expand(1, 2, 2, 2).clone()
    logits[0, 0] = torch.tensor([[0.0, 0.0], [9.0, 0.0]], dtype=DT)  # background: only 9 survives the threshold
    out = was_inference(logits, identity_layers(4), out_size=4)
    torch.testing.assert_close(out[0, 1], torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=DT).expand(4, 4))
