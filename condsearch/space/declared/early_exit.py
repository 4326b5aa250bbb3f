"""Early exit (BranchyNet, MSDNet): classifier heads after chosen layers; a sample leaves at
the first head certain enough. Block: `condsearch.blocks.EarlyExit`."""

from __future__ import annotations

from condsearch.space._declaration import CheckContext, Component
from condsearch.space._distributions import Fixed, ParamSpec

PARAMS = {
    "enabled": ParamSpec("bool", False, doc="switch the component on"),
    "every": ParamSpec("int", 1, lo=1, doc="an exit head after every N-th layer"),
    "positions": ParamSpec("int_list", None, lo=1, nullable=True, doc="explicit exit layers"),
    "criterion": ParamSpec("enum", "confidence", values=("confidence", "entropy"),
                           doc="max softmax, or 1 - normalised entropy"),
    "threshold": ParamSpec("float", 0.9, lo=0, lo_open=True, hi=1, doc="exit certainty"),
    "loss_weight": ParamSpec("float", 0.5, lo=0, doc="weight of the exit heads' loss"),
}


def exit_positions(cfg: dict, depth: int) -> list[int]:
    """Layers (1-based) followed by an exit head: explicit `positions`, else every `every`."""
    if cfg["positions"]:
        return sorted({int(p) for p in cfg["positions"]})
    return list(range(int(cfg["every"]), depth, int(cfg["every"])))


def either_every_or_positions(ctx: CheckContext) -> None:
    """`every` and `positions` place the same layers two ways: one of them, not both."""
    if "every" in ctx.raw and ctx.raw.get("positions") is not None:
        ctx.add("positions", "set either every or positions, not both")


def positions_within(ctx: CheckContext, limit_below_last: bool, what: str) -> None:
    """Fixed positions must index layers of the host (before its last one for exits)."""
    positions = ctx.params["positions"]
    if ctx.host_declaration.depth is None or not isinstance(positions, Fixed) or not positions.value:
        return
    deepest = ctx.host_declaration.depth(ctx.host)[1]
    limit = deepest - 1 if limit_below_last else deepest
    late = [p for p in positions.value if p > limit]
    if late:
        span = "1..depth-1" if limit_below_last else "1..depth"
        ctx.add("positions", f"{what} {late} must lie "
                             f"{'before the last layer' if limit_below_last else 'within the network'}"
                             f" ({span}, and depth is at most {deepest})")


def _check(ctx: CheckContext) -> None:
    either_every_or_positions(ctx)
    positions_within(ctx, True, "exit positions")


EARLY_EXIT = Component(
    name="early_exit", params=PARAMS, knobs={"threshold": ParamSpec("float", lo=0.0, lo_open=True,
                                                                     hi=1.0)},
    check=_check, block="condsearch.blocks.early_exit:EarlyExit",
    doc="the depth at which a sample leaves")

