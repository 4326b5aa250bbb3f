"""FLOP formulas: PyTorch's own (`torch.utils.flop_counter`) plus the ones it lacks."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import flop_registry, sdpa_flop_count, shape_wrapper

aten = torch.ops.aten


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


#: PyTorch has no formula for the CPU flash-attention kernel that `scaled_dot_product_attention`
#: dispatches to on CPU, so its counter reports 0 there; this mapping adds it (shape-based, as
#: FlopCounterMode's `custom_mapping` expects).
EXTRA_FORMULAS: dict = {}
if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    EXTRA_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flop

FORMULAS: dict = {**flop_registry, **{k: shape_wrapper(f) for k, f in EXTRA_FORMULAS.items()}}


def _shape(x):
    if isinstance(x, torch.Tensor):
        return x.shape
    if isinstance(x, (list, tuple)):
        return type(x)(_shape(v) for v in x)
    return x


def _on_shapes(formula):
    inner = formula.__wrapped__

    def count(*args, out_val=None, **kwargs):
        return inner(*[_shape(a) for a in args], out_shape=_shape(out_val),
                     **{k: _shape(v) for k, v in kwargs.items()})
    return count


#: The same formulas taking shapes directly: `shape_wrapper`'s generic tree_map costs more than
#: the op itself on small models, and the arguments of these ops are only tensors, lists of them
#: and scalars.
FAST_FORMULAS: dict = {k: _on_shapes(f) if hasattr(f, "__wrapped__") else f
                       for k, f in FORMULAS.items()}


def reference_counter(**kwargs) -> torch.utils.flop_counter.FlopCounterMode:
    """PyTorch's FlopCounterMode with the formulas it lacks: the yardstick for our counts."""
    kwargs.setdefault("display", False)
    return torch.utils.flop_counter.FlopCounterMode(custom_mapping=EXTRA_FORMULAS, **kwargs)
