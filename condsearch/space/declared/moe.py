"""Mixture of experts (Shazeer 2017; Switch; V-MoE): each token runs k of E expert MLPs.
Block: `condsearch.blocks.MoEFeedForward`."""

from __future__ import annotations

from condsearch.space._declaration import CheckContext, Component
from condsearch.space._distributions import ParamSpec, highest, lowest
from condsearch.space.declared.early_exit import either_every_or_positions, positions_within

PARAMS = {
    "enabled": ParamSpec("bool", False, doc="switch the component on"),
    "experts": ParamSpec("int", 4, lo=1, doc="experts per MoE layer"),
    "top_k": ParamSpec("int", 1, lo=1, doc="experts each token runs"),
    "capacity_factor": ParamSpec("float", 1.25, lo=0, lo_open=True, doc="in training"),
    "eval_capacity_factor": ParamSpec("float", 2.0, lo=0, lo_open=True, doc="at inference"),
    "router_noise": ParamSpec("float", 0.0, lo=0, doc="std of noise on router logits"),
    "aux_loss_weight": ParamSpec("float", 0.01, lo=0, doc="load-balancing loss weight"),
    "every": ParamSpec("int", 2, lo=1, doc="an MoE MLP in every N-th layer"),
    "positions": ParamSpec("int_list", None, lo=1, nullable=True, doc="explicit MoE layers"),
}


def moe_layers(cfg: dict, depth: int) -> list[int]:
    """Layers (1-based) whose MLP is a mixture of experts: `positions`, else every `every`-th
    layer (V-MoE's every other layer by default), else the last layer."""
    if cfg["positions"]:
        return sorted({int(p) for p in cfg["positions"] if 1 <= int(p) <= depth})
    every = int(cfg["every"])
    return list(range(every, depth + 1, every)) or [depth]


def _check(ctx: CheckContext) -> None:
    either_every_or_positions(ctx)
    positions_within(ctx, False, "MoE positions")
    if True not in ctx.params["enabled"].values():
        return
    experts, top_k = ctx.params["experts"], ctx.params["top_k"]
    if highest(top_k) > lowest(experts):
        ctx.add("top_k", f"top_k can reach {highest(top_k)} but experts can be as few as "
                         f"{lowest(experts)}; top_k must never exceed experts")


MOE = Component(
    name="moe", params=PARAMS,
    knobs={"eval_capacity_factor": ParamSpec("float", lo=0.0, lo_open=True)},
    check=_check, block="condsearch.blocks.moe:MoEFeedForward",
    doc="which k of E experts run for each token")
