"""Catch a module that computes on a sub-batch without declaring owners: its cost would be spread.

Outside any `owners` scope an op's FLOPs are split evenly over the whole batch. That is right for
an op on every row (or on B*T rows: T tokens per sample), wrong for an op on a subset of the
samples, e.g. `layer(x[idx])`. The counter checks the rows of each counted op against the batch
size (a modulo) and, only when they disagree, walks the Python stack to name the module.
"""

from __future__ import annotations

import sys
import warnings
import weakref
from types import FrameType

import torch
from torch import nn
from torch._ops import OpOverloadPacket

aten = torch.ops.aten


class UnattributedCostWarning(UserWarning):
    """A module ran a counted op on a sub-batch outside any `owners` scope: its FLOPs were spread
    evenly over the batch instead of charged to the samples it ran on."""


def _row_args() -> dict:
    """Which positional argument of each counted op holds the samples' rows (in its dim 0).

    Only ops whose dim 0 is the batch (or batch x tokens/heads) of that argument: matmuls take
    the input matrix, batched matmuls the first batched operand, convolutions the input,
    attention the query. Backward ops and kernels with packed (varlen) rows are left out."""
    families = {
        "matmul": {"mm": 0, "addmm": 1},
        "batched matmul": {"bmm": 0, "baddbmm": 1},
        "convolution": {"convolution": 0, "_convolution": 0, "cudnn_convolution": 0,
                        "convolution_overrideable": 0, "_slow_conv2d_forward": 0},
        "attention": {"_scaled_dot_product_efficient_attention": 0,
                      "_scaled_dot_product_flash_attention": 0,
                      "_scaled_dot_product_cudnn_attention": 0,
                      "_scaled_dot_product_flash_attention_for_cpu": 0},
    }
    return {getattr(aten, name): (index, what)
            for what, ops in families.items() for name, index in ops.items() if hasattr(aten, name)}


#: Counted op (overload packet) -> (position of the argument whose dim 0 holds the rows, op word).
ROW_ARGS: dict = _row_args()

# Modules already warned about, per model counted: each (model, module) warns once.
_warned: weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet[nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def _is_users(module: object) -> bool:
    """Whether `module` is a module outside torch (whose layers only run on what they are given)."""
    return isinstance(module, nn.Module) and not type(module).__module__.startswith("torch.")


def _culprit(frame: FrameType | None, model: nn.Module) -> tuple[nn.Module, int]:
    """Nearest non-torch module whose `forward` is on the stack above `frame`, and its depth.

    The depth counts frames from `frame` (1) up, as `warnings.warn`'s stacklevel does, so the
    warning points at the line of that forward; the model itself (depth 1) when none is found."""
    depth = 1
    while frame is not None:
        code = frame.f_code
        if code.co_name == "forward" and code.co_argcount:
            owner = frame.f_locals.get(code.co_varnames[0])  # `self`, whatever it is called
            if _is_users(owner):
                return owner, depth
        frame, depth = frame.f_back, depth + 1
    return model, 1


def _label(module: nn.Module, model: nn.Module) -> str:
    """`<qualified name> (<Class>)` of `module` in `model`; the class alone if it isn't in it."""
    cls = type(module).__name__
    if module is model:
        return f"the model ({cls})"
    name = next((n for n, m in model.named_modules() if m is module), None)
    return f"{name} ({cls})" if name else cls


def warn_unattributed(model: nn.Module, packet: OpOverloadPacket, rows: int, batch: int) -> None:
    """Warn, once per (model, module), that the module running `packet` on `rows` rows of a batch
    of `batch` did so outside any `owners` scope. Called only once the modulo check failed."""
    module, depth = _culprit(sys._getframe(1), model)
    seen = _warned.setdefault(model, weakref.WeakSet())
    if module in seen:
        return
    seen.add(module)
    what = ROW_ARGS[packet][1]
    warnings.warn(
        f"{_label(module, model)} ran a {what} on {rows} rows of a batch of {batch} outside any "
        "condsearch.cost.owners scope; its FLOPs were spread evenly over the batch. Wrap the "
        "sub-batch computation in `with owners(rows): ...` (rows: the batch rows it computes "
        "on) so they are charged to the samples that own them.",
        UnattributedCostWarning,
        stacklevel=depth + 1,
    )
