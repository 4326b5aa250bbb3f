"""Eval-time constants computed from the weights alone, once per weight version.

Blocks that stand folded or precomputed tensors in for their layers at inference (a BatchNorm
folded into the layer before it, weights transposed once, a kernel over learned signatures) keep
them with `eval_constants` on a `CachesEvalConstants` module. The cache is keyed by the
(version, storage) of every parameter and buffer it is built from: in-place updates (optimizer
steps, load_state_dict, no-grad edits) bump a version; moves and casts change the storage. Edits
through `.data` bump nothing, so `train()` and `eval()` drop the cache, as `_apply` does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
from torch.utils._python_dispatch import _disable_current_modes

T = TypeVar("T")

_CACHE = "_eval_constants_cache"  # kept in the owner's __dict__: no module attribute lookups


def eval_constants(owner: nn.Module, sources: Sequence[nn.Module], build: Callable[[], T], *,
                   extra: tuple[Hashable, ...] = (), uncounted: bool = False) -> T:
    """`build()`, cached on `owner` until a tensor of `sources` or a value of `extra` changes."""
    # plain dict reads: at batch size 1 module attribute lookups would cost more than the check
    key = (*extra, *[(t._version, t.data_ptr()) for m in sources
                     for t in (*m._parameters.values(), *m._buffers.values()) if t is not None])
    cache = owner.__dict__.get(_CACHE)
    if cache is None or cache[0] != key:
        # outside inference mode, so that later no-grad passes may use the constants too;
        # `uncounted` hides them from FLOP counters, which would charge them per sample
        hidden = _disable_current_modes() if uncounted else nullcontext()
        with hidden, torch.inference_mode(False), torch.no_grad():
            cache = (key, build())
        owner.__dict__[_CACHE] = cache
    return cache[1]


class CachesEvalConstants(nn.Module):
    """A module whose `eval_constants` are dropped when its mode is set or it is moved or cast."""

    def train(self, mode: bool = True) -> CachesEvalConstants:
        self.__dict__.pop(_CACHE, None)
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> CachesEvalConstants:
        self.__dict__.pop(_CACHE, None)
        return super()._apply(fn, recurse)


def fold_batchnorm(layer: nn.Linear | nn.modules.conv._ConvNd,
                   norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of `layer` followed by `norm` in eval mode as one layer, by torch's fusion."""
    mean, var = norm.running_mean, norm.running_var
    if mean is None or var is None:
        raise ValueError("a BatchNorm without running statistics uses batch ones: it cannot fold")
    if isinstance(layer, nn.Linear):
        gamma = torch.ones_like(mean) if norm.weight is None else norm.weight
        beta = torch.zeros_like(mean) if norm.bias is None else norm.bias
        weight, bias = fuse_linear_bn_weights(layer.weight, layer.bias, mean, var, norm.eps,
                                              gamma, beta)
    else:
        weight, bias = fuse_conv_bn_weights(layer.weight, layer.bias, mean, var, norm.eps,
                                            norm.weight, norm.bias, transpose=layer.transposed)
    return weight.detach(), bias.detach()  # plain tensors, not the Parameters fusion returns
