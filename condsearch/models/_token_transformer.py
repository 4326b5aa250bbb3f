"""The token transformer backbone, with its adaptive components plugged in from the arch dict."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from condsearch.blocks import AdaTape, EarlyExit, MoEFeedForward, TokenSelection
from condsearch.models._embed import BankEmbed, PatchEmbed, TokenEmbed, Tokenizer
from condsearch.models._layers import ClassHead, DenseTrunk, TransformerLayer
from condsearch.space._layout import (
    EXCLUDES,
    component,
    exit_positions,
    moe_layers,
    selection_layers,
)


class TokenTransformer(nn.Module):
    """A ViT-style encoder over patches or tokens, classifying from the CLS token.

    Components: early exit (heads after chosen layers), mixture-of-experts MLPs, token selection
    before chosen layers, and AdaTape (a tape of adaptive length appended after `insert_after`
    layers). Each is off unless the arch enables it.
    """

    def __init__(self, model: dict[str, Any], io: dict[str, Any]) -> None:
        super().__init__()
        dim, depth, heads = int(model["dim"]), int(model["depth"]), int(model.get("heads", 4))
        mlp_ratio, dropout = float(model.get("mlp_ratio", 2.0)), float(model.get("dropout", 0.0))
        num_classes = int(io["num_classes"])
        patch = int(model.get("patch_size", 2))
        self.tokenizer = Tokenizer(_embed(io, patch, dim), dim)
        layers = _layers(model, dim, depth, heads, mlp_ratio, dropout)

        def make_head() -> nn.Module:
            return ClassHead(dim, num_classes)

        tape = component(model, "adatape")
        clash = [c for c in EXCLUDES["adatape"] if component(model, c)] if tape else []
        if clash:
            raise ValueError(f"adatape cannot be combined with {' or '.join(clash)}")
        after = int(tape.get("insert_after", 0)) if tape else 0
        if not 0 <= after < depth:
            raise ValueError(f"adatape.insert_after must lie in 0..depth-1 ({depth - 1}), got {after}")
        self.pre_layers = nn.ModuleList(layers[:after])
        rest = layers[after:]
        early = component(model, "early_exit")
        if tape:
            bank = tape.get("bank", "learned")
            trunk: nn.Module = AdaTape(
                dim, rest, make_head(), bank=bank, bank_size=int(tape.get("bank_size", 32)),
                bank_embed=BankEmbed(_embed(io, patch, dim), dim) if bank == "input" else None,
                max_tape=int(tape.get("max_tape", 8)),
                tokens_per_step=int(tape.get("tokens_per_step", 2)),
                theta=float(tape.get("theta", 2.0)),
                ponder_weight=float(tape.get("ponder_weight", 0.01)))
        elif early:
            trunk = EarlyExit(
                rest, make_head, exit_positions(early, depth),
                criterion=early.get("criterion", "confidence"),
                threshold=early.get("threshold", 0.9), loss_weight=early.get("loss_weight", 0.5))
        else:
            trunk = DenseTrunk(rest, make_head())
        self.trunk = trunk
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokenizer(x)
        for layer in self.pre_layers:
            h = layer(h)
        if isinstance(self.trunk, AdaTape):
            return self.trunk(h, x)
        return self.trunk(h)


def _embed(io: dict[str, Any], patch: int, dim: int) -> nn.Module:
    if io["input_kind"] == "image":
        c, h, w = io["input_shape"]
        return PatchEmbed(c, h, w, patch, dim)
    return TokenEmbed(int(io["vocab_size"]), int(io["input_shape"][0]), dim)


def _layers(model: dict[str, Any], dim: int, depth: int, heads: int, mlp_ratio: float,
            dropout: float) -> list[nn.Module]:
    hidden = int(dim * mlp_ratio)
    moe, select = component(model, "moe"), component(model, "token_selection")
    moe_at = set(moe_layers(moe, depth)) if moe else set()
    select_at = set(selection_layers(select, depth)) if select else set()
    layers = []
    for i in range(1, depth + 1):
        mlp = MoEFeedForward(
            dim, hidden, experts=int(moe.get("experts", 4)), top_k=int(moe.get("top_k", 1)),
            capacity_factor=float(moe.get("capacity_factor", 1.25)),
            eval_capacity_factor=float(moe.get("eval_capacity_factor", 2.0)),
            router_noise=float(moe.get("router_noise", 0.0)),
            aux_loss_weight=float(moe.get("aux_loss_weight", 0.01)),
        ) if i in moe_at else None
        selection = TokenSelection(dim, keep_ratio=float(select.get("keep_ratio", 0.5)),
                                   scorer=select.get("scorer", "learned")) if i in select_at else None
        layers.append(TransformerLayer(dim, heads, mlp_ratio, dropout, mlp=mlp, select=selection))
    return layers


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
