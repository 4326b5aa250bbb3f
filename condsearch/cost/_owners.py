"""Which samples own the rows an op computes on, so each op's FLOPs can be split over them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# The stack of sample-id tensors (on the CPU) of the enclosing `owners` scopes. It is only
# maintained while a counter is active, so blocks pay nothing for declaring owners otherwise.
_stack: list[torch.Tensor] = []
_active = 0


def counting() -> bool:
    """True while a per-sample FLOP counter is running."""
    return _active > 0


@contextmanager
def owners(rows: torch.Tensor) -> Iterator[None]:
    """Declare that ops in this scope compute on `rows` of the enclosing sub-batch.

    `rows` indexes the rows of the enclosing scope (the whole batch at top level), one entry per
    row of the sub-batch, repeated where a sample owns several rows (e.g. its tokens routed to an
    expert). Every op in the scope must do the same work per entry of `rows`.

    Outside any scope an op's FLOPs are spread evenly over the batch. A block that computes on a
    sub-batch (`layer(x[idx])`) must declare it here; where the counter can tell (a matmul,
    convolution or attention outside any scope whose rows are not a multiple of the batch size)
    it issues an `UnattributedCostWarning` naming the module, once per model and module.
    """
    if not _active:
        yield
        return
    rows = rows.detach().to("cpu", torch.long)
    _stack.append(_stack[-1][rows] if _stack else rows)
    try:
        yield
    finally:
        _stack.pop()


def current_owners() -> torch.Tensor | None:
    """Sample ids owning the rows of the innermost scope; None outside any scope (all samples)."""
    return _stack[-1] if _stack else None


@contextmanager
def _counting_scope() -> Iterator[None]:
    global _active
    saved = list(_stack)
    _stack.clear()
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        _stack[:] = saved
