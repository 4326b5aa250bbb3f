"""Where the adaptive components go in a token transformer, read from the arch dict.

Shared by the model builder and the parameter formula in `condsearch.space`; like the rest of
`condsearch.space` it imports no torch, so validation stays fast.
"""

from __future__ import annotations

from typing import Any

#: when the key is on, the listed components are off (they restructure the same layers)
EXCLUDES = {"adatape": ("early_exit", "token_selection")}


def component(model: dict[str, Any], name: str) -> dict[str, Any]:
    """The component's resolved settings, or {} when it is absent or switched off."""
    cfg = (model.get("components") or {}).get(name) or {}
    return cfg if cfg.get("enabled") else {}


def exit_positions(cfg: dict[str, Any], depth: int) -> list[int]:
    """Layers (1-based) followed by an exit head: explicit `positions`, else every `every` layers."""
    if cfg.get("positions"):
        return sorted({int(p) for p in cfg["positions"]})
    every = int(cfg.get("every") or 1)
    return list(range(every, depth, every))


def moe_layers(cfg: dict[str, Any], depth: int) -> list[int]:
    """Layers (1-based) whose MLP is a mixture of experts: `positions`, else every `every`-th
    layer (V-MoE's every other layer by default), else the last layer."""
    if cfg.get("positions"):
        return sorted({int(p) for p in cfg["positions"] if 1 <= int(p) <= depth})
    every = int(cfg.get("every") or 2)
    return list(range(every, depth + 1, every)) or [depth]


def selection_layers(cfg: dict[str, Any], depth: int) -> list[int]:
    """Layers (1-based) before which tokens are selected: `positions`, else the middle layer."""
    if cfg.get("positions"):
        return sorted({int(p) for p in cfg["positions"] if 1 <= int(p) <= depth})
    return [depth // 2 + 1]
