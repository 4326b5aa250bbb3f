"""Turn inputs into tokens: patches for images, embeddings for token sequences."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping square patches of a (C, H, W) image, linearly projected."""

    def __init__(self, channels: int, height: int, width: int, patch: int, dim: int) -> None:
        super().__init__()
        if height % patch or width % patch:
            raise ValueError(f"patch_size {patch} does not divide the image size {height}x{width}")
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)
        self.num_tokens = (height // patch) * (width // patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TokenEmbed(nn.Module):
    """A learned vector per token id."""

    def __init__(self, vocab_size: int, length: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.num_tokens = length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


class Tokenizer(nn.Module):
    """Input -> token sequence with a CLS token in front and learned positions."""

    def __init__(self, embed: nn.Module, dim: int) -> None:
        super().__init__()
        self.embed = embed
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, embed.num_tokens + 1, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        cls = self.cls.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos


class BankEmbed(nn.Module):
    """AdaTape's input-driven bank: a second embedding of the input, one bank token per patch or
    sequence position, with learned positions so a bank token knows where it came from."""

    def __init__(self, embed: nn.Module, dim: int) -> None:
        super().__init__()
        self.embed = embed
        self.pos = nn.Parameter(torch.randn(1, embed.num_tokens, dim) * 0.02)
        self.num_tokens = embed.num_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x) + self.pos
