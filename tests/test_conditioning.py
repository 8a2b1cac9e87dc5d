"""Part-token conditioning with the tiny byte-level tokenizer: prompt encoding, token init and splicing."""

from __future__ import annotations

import pytest
import torch

from smite_ops.conditioning import PartTokens, encode_part_prompt, encode_prompt
from smite_ops.tiny_model import TINY_CROSS_ATTENTION_DIM, TINY_TEXT_LENGTH, build_tiny_components

torch.set_num_threads(1)
PARTS = ["background", "body", "wheel", "window"]


@pytest.fixture(scope="module")
def text_model() -> tuple[torch.nn.Module, object]:
    parts = build_tiny_components(seed=0)
    return parts.text_encoder.eval(), parts.tokenizer


def test_byte_level_tokenizer_gives_one_token_per_character(text_model: tuple[torch.nn.Module, object]) -> None:
    _, tokenizer = text_model
    ids = tokenizer("body wheel", add_special_tokens=False).input_ids
    assert len(ids) == len("body") + len("wheel")
    assert tokenizer.convert_ids_to_tokens(ids[:4]) == ["b", "o", "d", "y</w>"]


def test_part_prompt_init_is_the_mean_over_each_word(text_model: tuple[torch.nn.Module, object]) -> None:
    encoder, tokenizer = text_model
    base, init = encode_part_prompt(encoder, tokenizer, PARTS)
    assert base.shape == (TINY_TEXT_LENGTH, TINY_CROSS_ATTENTION_DIM) and base.dtype == torch.float32
    torch.testing.assert_close(base, encode_prompt(encoder, tokenizer, " ".join(PARTS)))
    assert init.shape == (len(PARTS) - 1, TINY_CROSS_ATTENTION_DIM)
    start = 1  # after the start-of-text token
    for index, name in enumerate(PARTS):
        if index > 0:
            torch.testing.assert_close(init[index - 1], base[start : start + len(name)].mean(0))
        start += len(name)


def test_tokens_are_spliced_after_the_start_token(text_model: tuple[torch.nn.Module, object]) -> None:
    encoder, tokenizer = text_model
    base, init = encode_part_prompt(encoder, tokenizer, PARTS)
    tokens = PartTokens(base, init)
    with torch.no_grad():
        tokens.tokens.add_(1.0)
    out = tokens()
    assert tokens.num_parts == len(PARTS) and out.shape == base.shape
    torch.testing.assert_close(out[0], base[0])
    torch.testing.assert_close(out[1 : len(PARTS)], init + 1.0)
    torch.testing.assert_close(out[len(PARTS) :], base[len(PARTS) :])
    out.sum().backward()
    assert torch.equal(tokens.tokens.grad, torch.ones_like(init))
    assert not tokens.base_embedding.requires_grad


def test_bad_token_shapes_and_overlong_prompts_are_rejected(text_model: tuple[torch.nn.Module, object]) -> None:
    encoder, tokenizer = text_model
    base, init = encode_part_prompt(encoder, tokenizer, PARTS)
    with pytest.raises(ValueError, match="init_tokens must be"):
        PartTokens(base, init[:, :5])
    with pytest.raises(ValueError, match="init_tokens must be"):
        PartTokens(base, torch.zeros(TINY_TEXT_LENGTH, TINY_CROSS_ATTENTION_DIM))
    with pytest.raises(ValueError, match="do not fit"):
        encode_part_prompt(encoder, tokenizer, ["background", *(f"part{i:02d}" for i in range(12))])
