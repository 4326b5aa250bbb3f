"""The token transformer backbone, with its adaptive components plugged in from the arch dict."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from condsearch.blocks import EarlyExit
from condsearch.models._embed import PatchEmbed, TokenEmbed, Tokenizer
from condsearch.models._layers import ClassHead, DenseTrunk, TransformerLayer


def exit_positions(cfg: dict[str, Any], depth: int) -> list[int]:
    """Layers (1-based) followed by an exit head: explicit `positions`, else every `every` layers."""
    if cfg.get("positions"):
        return [int(p) for p in cfg["positions"]]
    every = int(cfg.get("every") or 1)
    return list(range(every, depth, every))


class TokenTransformer(nn.Module):
    """A ViT-style encoder over patches or tokens, classifying from the CLS token."""

    def __init__(self, model: dict[str, Any], io: dict[str, Any]) -> None:
        super().__init__()
        dim, depth, heads = int(model["dim"]), int(model["depth"]), int(model.get("heads", 4))
        mlp_ratio, dropout = float(model.get("mlp_ratio", 2.0)), float(model.get("dropout", 0.0))
        num_classes = int(io["num_classes"])
        shape = list(io["input_shape"])
        if io["input_kind"] == "image":
            c, h, w = shape
            embed: nn.Module = PatchEmbed(c, h, w, int(model.get("patch_size", 2)), dim)
        else:
            embed = TokenEmbed(int(io["vocab_size"]), shape[0], dim)
        self.tokenizer = Tokenizer(embed, dim)
        layers = [TransformerLayer(dim, heads, mlp_ratio, dropout) for _ in range(depth)]

        def make_head() -> nn.Module:
            return ClassHead(dim, num_classes)

        exit_cfg = (model.get("components") or {}).get("early_exit") or {}
        if exit_cfg.get("enabled"):
            self.trunk: nn.Module = EarlyExit(
                layers,
                make_head,
                exit_positions(exit_cfg, depth),
                criterion=exit_cfg.get("criterion", "confidence"),
                threshold=exit_cfg.get("threshold", 0.9),
                loss_weight=exit_cfg.get("loss_weight", 0.5),
            )
        else:
            self.trunk = DenseTrunk(layers, make_head())
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.tokenizer(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
