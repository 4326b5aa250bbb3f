"""Token selection (survey arXiv 2403.07965): before chosen layers, only the best-scored
tokens continue. Block: `condsearch.blocks.TokenSelection`."""

from __future__ import annotations

from condsearch.space._declaration import CheckContext, Component
from condsearch.space._distributions import ParamSpec
from condsearch.space.declared.early_exit import positions_within

PARAMS = {
    "enabled": ParamSpec("bool", False, doc="switch the component on"),
    "keep_ratio": ParamSpec("float", 0.5, lo=0, lo_open=True, hi=1, doc="share of tokens kept"),
    "positions": ParamSpec("int_list", None, lo=1, nullable=True,
                           doc="layers before which tokens are selected (default: middle)"),
    "scorer": ParamSpec("enum", "learned", values=("learned", "cls_attention"),
                        doc="a learned score, or the CLS token's attention"),
}


def selection_layers(cfg: dict, depth: int) -> list[int]:
    """Layers (1-based) before which tokens are selected: `positions`, else the middle layer."""
    if cfg["positions"]:
        return sorted({int(p) for p in cfg["positions"] if 1 <= int(p) <= depth})
    return [depth // 2 + 1]


def _check(ctx: CheckContext) -> None:
    positions_within(ctx, False, "selection positions")


TOKEN_SELECTION = Component(
    name="token_selection", params=PARAMS,
    knobs={"keep_ratio": ParamSpec("float", lo=0.0, lo_open=True, hi=1.0)},
    check=_check, block="condsearch.blocks.token_selection:TokenSelection",
    doc="which tokens continue to later layers")
