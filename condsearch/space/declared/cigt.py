"""CIGT (Bicici et al., arXiv 2402.08345): a convolutional trellis whose routers pick one block
per layer for each sample. Builder: `condsearch.models.CIGT`."""

from __future__ import annotations

from condsearch.space._declaration import Backbone, CheckContext
from condsearch.space._distributions import ParamSpec

PARAMS = {
    "widths": ParamSpec("int_list", [1, 2, 4], lo=1, doc="blocks in each trellis layer"),
    "channels": ParamSpec("int", 32, lo=1, doc="conv channels of one block"),
    "kernel": ParamSpec("int", 5, lo=1, doc="conv kernel side of the non-leaf layers"),
    "hidden": ParamSpec("int", 128, lo=2, doc="FC width of one leaf block"),
    "router_dim": ParamSpec("int", 64, lo=1, doc="hidden width of each router"),
    "ig_weight": ParamSpec("float", 1.0, lo=0, doc="information-gain loss weight (lambda)"),
    "balance": ParamSpec("float", 1.0, lo=0, doc="weight of H(p(n)) in the gain (beta)"),
    "temperature": ParamSpec("float", 25.0, lo=0, lo_open=True, doc="router softmax T0"),
    "temperature_decay": ParamSpec("float", 0.9999, lo=0, lo_open=True, hi=1,
                                   doc="T multiplies by this each optimizer step"),
    "temperature_min": ParamSpec("float", 0.1, lo=0, lo_open=True, doc="floor of T"),
    "warmup_epochs": ParamSpec("int", 1, lo=0, doc="epochs of random routes at the start"),
    "random_routing": ParamSpec("float", 0.5, lo=0, hi=1,
                                doc="share of each batch routed at random after warm-up"),
    "multipath_threshold": ParamSpec("float", 1.0, lo=0, lo_open=True, hi=1,
                                     doc="at inference, also run paths more probable than this"),
}


def _check(ctx: CheckContext) -> None:
    if ctx.io is not None and ctx.io["input_kind"] != "image":
        ctx.add_at(("model", "backbone"), f"the cigt backbone is convolutional and needs images, "
                                          f"but {ctx.dataset} gives {ctx.io['input_kind']}s")
    if any(len(w) < 2 for w in ctx.params["widths"].values()):
        ctx.add("widths", "a trellis needs at least 2 layers (the last one holds the leaves)")


CIGT = Backbone(
    name="cigt", factory="condsearch.models._cigt:CIGT", params=PARAMS, section="cigt",
    knobs={"multipath_threshold": ParamSpec("float", lo=0.0, lo_open=True, hi=1.0)},
    check=_check, strict=True, origin="builtin",
    doc="which block of each trellis layer runs")
