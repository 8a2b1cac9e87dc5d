"""CoTracker3 update transformer: attention blocks over time and space with virtual tracks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN_DIM = 384
NUM_HEADS = 8
NUM_VIRTUAL_TRACKS = 64
DEPTH = 3


class Attention(nn.Module):
    """Multi-head attention with a fused key/value projection (8 heads of 48 channels)."""

    def __init__(self, dim: int = HIDDEN_DIM, heads: int = NUM_HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Attend from ``x`` ``(S, M, D)`` to ``context`` ``(S, K, D)``; returns ``(S, M, D)``."""
        s, m, d = x.shape
        q = self.to_q(x).view(s, m, self.heads, d // self.heads).transpose(1, 2)
        k, v = self.to_kv(context).view(s, -1, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(s, m, d))


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2``; the GELU form (exact or tanh) is a constructor argument."""

    def __init__(self, dim: int, hidden: int, out: int, approximate: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., dim)`` -> ``(..., out)``."""
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class AttnBlock(nn.Module):
    """Pre-norm self-attention block: ``x + Attn(LN x)``, then ``x + MLP(LN x)``."""

    def __init__(self, dim: int = HIDDEN_DIM) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim, dim, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(S, M, D)`` -> ``(S, M, D)``."""
        h = self.norm1(x)
        x = x + self.attn(h, h)
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block; the context gets its own affine LayerNorm."""

    def __init__(self, dim: int = HIDDEN_DIM) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim, dim, approximate="tanh")

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x`` ``(S, M, D)`` attends to ``context`` ``(S, K, D)``; returns ``(S, M, D)``."""
        x = x + self.cross_attn(self.norm1(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """Maps per-track, per-frame tokens to coordinate / visibility / confidence updates."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.input_transform = nn.Linear(input_dim, HIDDEN_DIM)
        # The misspelt name is the checkpoint's key; keep it.
        self.virual_tracks = nn.Parameter(torch.randn(1, NUM_VIRTUAL_TRACKS, 1, HIDDEN_DIM))
        self.time_blocks = nn.ModuleList(AttnBlock() for _ in range(DEPTH))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock() for _ in range(DEPTH))
        self.space_point2virtual_blocks = nn.ModuleList(CrossAttnBlock() for _ in range(DEPTH))
        self.space_virtual2point_blocks = nn.ModuleList(CrossAttnBlock() for _ in range(DEPTH))
        self.flow_head = nn.Linear(HIDDEN_DIM, 2)
        self.vis_conf_head = nn.Linear(HIDDEN_DIM, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the update transformer.

        Args:
            tokens: ``(B, N, T, input_dim)`` float, one token per track and frame.

        Returns:
            ``(B, N, T, 4)``: ``[dx, dy]`` in feature units (pixels / 4), then the visibility and
            confidence logit increments.
        """
        b, n, t, _ = tokens.shape
        x = self.input_transform(tokens)
        virtual = self.virual_tracks.expand(b, -1, t, -1)
        x = torch.cat([x, virtual], dim=1)
        m = x.shape[1]
        for i in range(DEPTH):
            x = self.time_blocks[i](x.reshape(b * m, t, HIDDEN_DIM)).view(b, m, t, HIDDEN_DIM)
            space = x.permute(0, 2, 1, 3).reshape(b * t, m, HIDDEN_DIM)
            real, virt = space[:, :n], space[:, n:]
            virt = self.space_virtual2point_blocks[i](virt, real)
            virt = self.space_virtual_blocks[i](virt)
            real = self.space_point2virtual_blocks[i](real, virt)
            x = torch.cat([real, virt], dim=1).view(b, t, m, HIDDEN_DIM).permute(0, 2, 1, 3)
        x = x[:, :n]
        return torch.cat([self.flow_head(x), self.vis_conf_head(x)], dim=-1)
