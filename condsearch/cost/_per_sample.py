"""Per-sample FLOPs of one batched forward pass, counted at the PyTorch dispatcher."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from condsearch.cost._formulas import FAST_FORMULAS
from condsearch.cost._owners import _counting_scope, current_owners
from condsearch.cost._unattributed import ROW_ARGS, warn_unattributed

_decomposable: dict = {}


def _can_decompose(func) -> bool:
    """Whether `func` has a composite decomposition (cached: asked for every op executed)."""
    known = _decomposable.get(func)
    if known is None:
        known = _decomposable[func] = func._can_decompose()
    return known


class _Attributor(TorchDispatchMode):
    """Counts each op's FLOPs and splits them evenly over the sample ids that own its rows.

    Shares are summed per owner scope (its sample-id tensor) and spread over the samples once,
    at the end, so a counted op costs a few Python operations rather than tensor ops. An op outside
    any scope whose rows are not a multiple of the batch ran on a sub-batch someone forgot to
    declare: `model` (the one being counted) is searched for the module to warn about."""

    def __init__(self, batch_size: int, model: torch.nn.Module) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.model = model
        self.total = 0
        self._everyone = 0.0
        self._scoped: dict[int, list] = {}

    @property
    def per_sample(self) -> torch.Tensor:
        """FLOPs of each sample so far."""
        out = torch.full((self.batch_size,), self._everyone, dtype=torch.float64)
        for ids, share in self._scoped.values():
            out.index_add_(0, ids, torch.full((ids.numel(),), share, dtype=torch.float64))
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        formula = FAST_FORMULAS.get(packet)
        if formula is None and _can_decompose(func):
            # Same rule as FlopCounterMode: count a composite op through what it decomposes into.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=out)
            if flops:
                self.total += flops
                ids = current_owners()
                if ids is None:
                    self._everyone += flops / self.batch_size
                    at = ROW_ARGS.get(packet)  # rows not whole batches: an undeclared sub-batch
                    if at is not None and args[at[0]].shape[0] % self.batch_size:  # never at 1
                        warn_unattributed(self.model, packet, args[at[0]].shape[0], self.batch_size)
                else:
                    entry = self._scoped.setdefault(id(ids), [ids, 0.0])
                    entry[1] += flops / ids.numel()
        return out


def per_sample_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Run `model(x)` once and return (output, FLOPs of each sample as if processed alone).

    FLOPs are 2 x multiply-adds of matmul, convolution and attention, as `FlopCounterMode`
    counts them. Blocks declare which samples own a sub-batch with `condsearch.cost.owners`; an
    op on a sub-batch outside any such scope issues an `UnattributedCostWarning` (once per module).
    """
    counter = _Attributor(x.shape[0], model)
    with torch.no_grad(), _counting_scope(), counter:
        out = model(x)
    return out, counter.per_sample
