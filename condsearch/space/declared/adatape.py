"""AdaTape (Xue et al., ICML 2023): an elastic tape of tokens read from a bank and appended to
the sequence, its length decided per input by ACT-style halting. Block: `condsearch.blocks.AdaTape`."""

from __future__ import annotations

from condsearch.space._declaration import CheckContext, Component
from condsearch.space._distributions import Fixed, ParamSpec, highest, lowest

PARAMS = {
    "enabled": ParamSpec("bool", False, doc="switch the component on"),
    "bank": ParamSpec("enum", "learned", values=("learned", "input"),
                      doc="learned bank, or one bank token per input patch / position"),
    "bank_size": ParamSpec("int", 32, lo=1, doc="rows of a learned bank"),
    "max_tape": ParamSpec("int", 8, lo=1, doc="most tape tokens a sample may read"),
    "tokens_per_step": ParamSpec("int", 2, lo=1, doc="bank entries merged per tape token"),
    "theta": ParamSpec("float", 2.0, lo=0, lo_open=True, doc="halting budget"),
    "ponder_weight": ParamSpec("float", 0.01, lo=0, doc="weight of the ponder loss"),
    "insert_after": ParamSpec("int", 0, lo=0, doc="layers run before the tape is appended"),
}
EXCLUDES = ("early_exit", "token_selection")


def _check(ctx: CheckContext) -> None:
    tape = ctx.params
    if True not in tape["enabled"].values():
        return
    if ctx.host_declaration.depth is not None:
        shallowest = ctx.host_declaration.depth(ctx.host)[0]
        if highest(tape["insert_after"]) > shallowest - 1:
            ctx.add("insert_after",
                    f"insert_after can reach {highest(tape['insert_after'])} but depth can be "
                    f"{shallowest}; at least one layer must follow the tape")
    if tape["enabled"] == Fixed(True):
        for other in EXCLUDES:
            if other in ctx.components and ctx.components[other]["enabled"] == Fixed(True):
                ctx.add_at(("model", "components", other, "enabled"),
                           f"{other} cannot be on while adatape is on; with adatape enabled "
                           f"it is switched off (give it a choice or set it false)")
    reads = highest(tape["max_tape"]) * highest(tape["tokens_per_step"])
    banks = tape["bank"].values()
    if "learned" in banks and lowest(tape["bank_size"]) < reads:
        ctx.add("bank_size",
                f"a learned bank needs at least max_tape x tokens_per_step = {reads} rows, "
                f"but bank_size can be {lowest(tape['bank_size'])}")
    if "input" in banks and ctx.io is not None:
        if ctx.io["input_kind"] == "image":
            _, h, w = ctx.io["input_shape"]
            patches = ctx.host["patch_size"].values() if "patch_size" in ctx.host else None
            rows = min((h // p) * (w // p) for p in patches or [1])
        else:
            rows = int(ctx.io["input_shape"][0])
        if rows < reads:
            ctx.add("bank", f"an input bank has one row per patch or position ({rows} here), "
                            f"fewer than max_tape x tokens_per_step = {reads}")


ADATAPE = Component(
    name="adatape", params=PARAMS, knobs={"theta": ParamSpec("float", lo=0.0, lo_open=True)},
    excludes=EXCLUDES, check=_check, block="condsearch.blocks.adatape:AdaTape",
    doc="how many tape tokens a sample reads, and which")
