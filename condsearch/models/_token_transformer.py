"""The token transformer backbone, with its adaptive components plugged in from the arch dict."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from condsearch.blocks import AdaTape, EarlyExit, MoEFeedForward, TokenSelection
from condsearch.models._embed import BankEmbed, PatchEmbed, TokenEmbed, Tokenizer
from condsearch.models._layers import ClassHead, DenseTrunk, TransformerLayer
from condsearch.space.declared.adatape import EXCLUDES
from condsearch.space.declared.early_exit import exit_positions
from condsearch.space.declared.moe import moe_layers
from condsearch.space.declared.token_selection import selection_layers


class TokenTransformer(nn.Module):
    """A ViT-style encoder over patches or tokens, classifying from the CLS token.

    Components: early exit (heads after chosen layers), mixture-of-experts MLPs, token selection
    before chosen layers, and AdaTape (a tape of adaptive length appended after `insert_after`
    layers). Each is off unless the arch enables it. `model` is a completed model section
    (`build_model` fills in every declared default first), `io` a task's `info()`.
    """

    def __init__(self, model: dict[str, Any], io: dict[str, Any]) -> None:
        super().__init__()
        dim, depth, heads = int(model["dim"]), int(model["depth"]), int(model["heads"])
        mlp_ratio, dropout = float(model["mlp_ratio"]), float(model["dropout"])
        num_classes = int(io["num_classes"])
        patch = int(model["patch_size"])
        self.tokenizer = Tokenizer(_embed(io, patch, dim), dim)
        layers = _layers(model, dim, depth, heads, mlp_ratio, dropout)

        def make_head(_position: int = 0) -> nn.Module:
            return ClassHead(dim, num_classes)

        tape = _on(model, "adatape")
        clash = [c for c in EXCLUDES if _on(model, c)] if tape else []
        if clash:
            raise ValueError(f"adatape cannot be combined with {' or '.join(clash)}")
        after = int(tape["insert_after"]) if tape else 0
        if not 0 <= after < depth:
            raise ValueError(f"adatape.insert_after must lie in 0..depth-1 ({depth - 1}), got {after}")
        self.pre_layers = nn.ModuleList(layers[:after])
        rest = layers[after:]
        early = _on(model, "early_exit")
        if tape:
            bank = tape["bank"]
            trunk: nn.Module = AdaTape(
                dim, rest, make_head(), bank=bank, bank_size=int(tape["bank_size"]),
                bank_embed=BankEmbed(_embed(io, patch, dim), dim) if bank == "input" else None,
                max_tape=int(tape["max_tape"]), tokens_per_step=int(tape["tokens_per_step"]),
                theta=float(tape["theta"]), ponder_weight=float(tape["ponder_weight"]))
        elif early:
            trunk = EarlyExit(
                rest, make_head, exit_positions(early, depth), criterion=early["criterion"],
                threshold=early["threshold"], loss_weight=early["loss_weight"])
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


def _on(model: dict[str, Any], name: str) -> dict[str, Any]:
    """A component's settings when it is enabled, else {}."""
    cfg = model["components"][name]
    return cfg if cfg["enabled"] else {}


def _embed(io: dict[str, Any], patch: int, dim: int) -> nn.Module:
    if io["input_kind"] == "image":
        c, h, w = io["input_shape"]
        return PatchEmbed(c, h, w, patch, dim)
    return TokenEmbed(int(io["vocab_size"]), int(io["input_shape"][0]), dim)


def _layers(model: dict[str, Any], dim: int, depth: int, heads: int, mlp_ratio: float,
            dropout: float) -> list[nn.Module]:
    hidden = int(dim * mlp_ratio)
    moe, select = _on(model, "moe"), _on(model, "token_selection")
    moe_at = set(moe_layers(moe, depth)) if moe else set()
    select_at = set(selection_layers(select, depth)) if select else set()
    layers = []
    for i in range(1, depth + 1):
        mlp = MoEFeedForward(
            dim, hidden, experts=int(moe["experts"]), top_k=int(moe["top_k"]),
            capacity_factor=float(moe["capacity_factor"]),
            eval_capacity_factor=float(moe["eval_capacity_factor"]),
            router_noise=float(moe["router_noise"]), aux_loss_weight=float(moe["aux_loss_weight"]),
        ) if i in moe_at else None
        selection = TokenSelection(dim, keep_ratio=float(select["keep_ratio"]),
                                   scorer=select["scorer"]) if i in select_at else None
        layers.append(TransformerLayer(dim, heads, mlp_ratio, dropout, mlp=mlp, select=selection))
    return layers


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
