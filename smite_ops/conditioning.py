"""Learned part tokens spliced into a fixed prompt embedding (METHOD.md §2.5).

Class 0 (background) reads the attention of token position 0 (the start-of-text token), which is never
learned; class ``k >= 1`` is the learned vector at position ``k``. The rest of the prompt embedding is fixed.

Two deliberate differences from the reference, both recorded in the part model's manifest:

* the same base embedding (the encoded prompt of part names) is used for training and inference, where
  the reference trains on the full prompt but segments with the empty string;
* token ``k`` is initialised from the encoder output of part name ``k`` (mean over its sub-word tokens), where
  the reference's initialisation is shifted by one word.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PartTokens(nn.Module):
    """``P - 1`` learnable vectors written over positions ``1..P-1`` of a fixed ``(L, D)`` prompt embedding."""

    def __init__(self, base_embedding: Tensor, init_tokens: Tensor) -> None:
        """
        Args:
            base_embedding: ``(L, D)`` encoded prompt (kept fixed, stored as a buffer).
            init_tokens: ``(P - 1, D)`` initial values of the learned tokens.
        """
        super().__init__()
        length, dim = base_embedding.shape
        if init_tokens.dim() != 2 or init_tokens.shape[1] != dim or not 1 <= init_tokens.shape[0] < length:
            raise ValueError(f"init_tokens must be (P-1, {dim}) with P <= {length}, got {tuple(init_tokens.shape)}")
        self.register_buffer("base_embedding", base_embedding.detach().clone())
        self.tokens = nn.Parameter(init_tokens.detach().clone())

    @property
    def num_parts(self) -> int:
        return self.tokens.shape[0] + 1

    def forward(self) -> Tensor:
        """The conditioning ``(L, D)``: the base embedding with the learned tokens at positions ``1..P-1``."""
        base = self.base_embedding.to(self.tokens.dtype)
        return torch.cat([base[:1], self.tokens, base[self.num_parts :]], dim=0)


@torch.no_grad()
def encode_prompt(text_encoder: nn.Module, tokenizer, text: str) -> Tensor:
    """Encode ``text`` padded to the tokenizer's length: ``(L, D)`` float32 on the encoder's device."""
    device = next(text_encoder.parameters()).device
    ids = tokenizer(
        text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)
    return text_encoder(ids).last_hidden_state[0].float()


@torch.no_grad()
def encode_part_prompt(text_encoder: nn.Module, tokenizer, part_names: list[str]) -> tuple[Tensor, Tensor]:
    """Encode the prompt of part names and derive one initial token per foreground part.

    Args:
        text_encoder: a transformers CLIP text model (``last_hidden_state`` is the conditioning).
        tokenizer: its tokenizer (padding to ``model_max_length``).
        part_names: ``P`` names, ``background`` first.

    Returns:
        ``(base_embedding (L, D), init_tokens (P - 1, D))`` in float32 on the encoder's device: the encoded
        space-separated prompt, and for each foreground part the mean encoder output over its word's tokens.
    """
    embedding = encode_prompt(text_encoder, tokenizer, " ".join(part_names))
    word_lengths = [len(tokenizer(name, add_special_tokens=False).input_ids) for name in part_names]
    if 1 + sum(word_lengths) > tokenizer.model_max_length - 1:
        raise ValueError(f"the part names {part_names} do not fit in {tokenizer.model_max_length} text tokens")
    starts = torch.tensor([1, *word_lengths[:-1]]).cumsum(0).tolist()
    init = [embedding[start : start + length].mean(0) for start, length in zip(starts, word_lengths, strict=True)]
    return embedding, torch.stack(init[1:])
