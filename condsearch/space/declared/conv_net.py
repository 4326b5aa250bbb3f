"""`conv_net`: a residual convolutional network in stages, with early exits after stages.

It is registered through the `condsearch.backbones` entry point that `pyproject.toml` declares,
the public path a user's package takes: this module is what that entry point names, and it
imports no torch (the builder is named by its import path, `condsearch.models._conv_net:ConvNet`).
"""

from __future__ import annotations

from condsearch.space._declaration import Backbone, CheckContext, Params
from condsearch.space._distributions import ParamSpec

PARAMS = {
    "stem": ParamSpec("int", 16, lo=1, doc="channels of the 3x3 stem convolution"),
    "widths": ParamSpec("int_list", [16, 32, 64], lo=1,
                        doc="channels of each stage; every stage after the first halves the map"),
    "depths": ParamSpec("int_list", [1, 1, 1], lo=1,
                        doc="residual blocks in each stage (one entry per stage, as widths)"),
    "kernel": ParamSpec("int", 3, lo=1, doc="odd kernel side of the residual blocks' convolutions"),
}


def _stages(params: Params) -> tuple[int, int]:
    lengths = [len(v) for key in ("widths", "depths") for v in params[key].values()]
    return min(lengths), max(lengths)


def _check(ctx: CheckContext) -> None:
    if ctx.io is not None and ctx.io["input_kind"] != "image":
        ctx.add_at(("model", "backbone"), f"conv_net is convolutional and needs images, but "
                                          f"{ctx.dataset} gives {ctx.io['input_kind']}s")
    widths = {len(v) for v in ctx.params["widths"].values()}
    depths = {len(v) for v in ctx.params["depths"].values()}
    if len(widths | depths) > 1:
        ctx.add("depths", f"widths and depths must list one entry per stage, the same number in "
                          f"every value; widths list {sorted(widths)}, depths {sorted(depths)}")
    for k in ctx.params["kernel"].values() or []:
        if k % 2 == 0:
            ctx.add("kernel", f"kernel {k} is even; an odd side keeps the map's size")
            break


CONV_NET = Backbone(
    name="conv_net", factory="condsearch.models._conv_net:ConvNet", params=PARAMS,
    hosts=("early_exit",), check=_check, depth=_stages, strict=True, origin="entry point",
    doc="residual convolutional stages; early exits after stages")
