"""Transformer building blocks shared by the backbones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: attention then MLP, each with a residual.

    `mlp` replaces the dense MLP (e.g. a mixture of experts); `select` runs first and may drop
    tokens (token selection), so the layer itself computes only on the tokens it keeps.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0,
                 mlp: nn.Module | None = None, select: nn.Module | None = None) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.select = select
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp if mlp is not None else nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.select is not None:
            x = self.select(x)
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ClassHead(nn.Module):
    """Classifier on the CLS token."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x[:, 0]))


class DenseTrunk(nn.Module):
    """Every layer on every sample, then the head: the 'component off' point of a space."""

    def __init__(self, layers: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_head = head

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h)
        return self.final_head(h)
