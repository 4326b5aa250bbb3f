"""The CIGT backbone: a convolutional trellis (conv blocks, then leaves with their own classifiers).

Section `model["cigt"]`: its keys, ranges and defaults are declared once, in
`condsearch/space/declared/cigt.py`; `channels` may also be a list with one entry per layer.

`thin_baseline` and `thick_baseline` give the unconditional networks CIGT is compared with.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks._eval_constants import CachesEvalConstants, eval_constants, fold_batchnorm
from condsearch.blocks.cigt import CIGTRouter, CIGTTrellis
from condsearch.space import complete
from condsearch.space.declared.cigt import CIGT as CIGT_DECLARATION

ROUTER_POOL = 4  # routers read features average-pooled to at most 4 x 4


def settings(section: dict[str, Any] | None) -> dict[str, Any]:
    """The section with its declared defaults filled in; unknown keys are an error."""
    section = dict(section or {})
    unknown = sorted(set(section) - set(CIGT_DECLARATION.params))
    if unknown:
        raise ValueError(f"unknown cigt settings {unknown}; known: {sorted(CIGT_DECLARATION.params)}")
    return complete(CIGT_DECLARATION.params, section)


def layer_channels(cfg: dict[str, Any]) -> list[int]:
    widths, channels = list(cfg["widths"]), cfg["channels"]
    if isinstance(channels, int):
        return [channels] * len(widths)
    if len(channels) != len(widths):
        raise ValueError(f"cigt.channels lists {len(channels)} values for {len(widths)} layers")
    return [int(c) for c in channels]


def thin_baseline(section: dict[str, Any] | None = None) -> dict[str, Any]:
    """One block per layer, each as wide as a CIGT block: a single path of the trellis."""
    cfg = settings(section)
    return {**cfg, "widths": [1] * len(cfg["widths"])}


def thick_baseline(section: dict[str, Any] | None = None) -> dict[str, Any]:
    """One block per layer, as wide as all blocks of the CIGT layer together: channels times
    the layer's width, and the leaf's hidden width times the number of leaves."""
    cfg = settings(section)
    widths = list(cfg["widths"])
    channels = [c * w for c, w in zip(layer_channels(cfg), widths, strict=True)]
    return {**cfg, "widths": [1] * len(widths), "channels": channels,
            "hidden": int(cfg["hidden"]) * widths[-1]}


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """`F.max_pool2d(x, 2)` as two elementwise maxima of strided views: the same values, several
    times faster on CPU for small batches of NCHW maps (the pooling kernel is slow there)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    rows = torch.maximum(x[..., 0:h:2, :w], x[..., 1:h:2, :w])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _inferring(module: nn.Module) -> bool:
    """Eval mode with no gradient: where folded weight-only constants may stand in for layers."""
    return not module.training and not torch.is_grad_enabled()


class ConvBlock(CachesEvalConstants, nn.Sequential):
    """conv k x k + BatchNorm + ReLU, then max-pool 2 when `pool`.

    In eval mode with no gradient the BatchNorm is folded into the convolution and ReLU follows
    the pooling (they commute): the same outputs from fewer, smaller operators.
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, pool: bool) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2),
                                   nn.BatchNorm2d(channels), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _inferring(self):
            return super().forward(x)
        conv, norm = self._modules["0"], self._modules["1"]
        weight, bias = eval_constants(self, (conv, norm), lambda: fold_batchnorm(conv, norm))
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if self.pool:
            y = max_pool_2x2(y)
        return y.relu_()


class Leaf(nn.Sequential):
    """conv 1x1 + ReLU, flatten, FC hidden + ReLU, FC hidden // 2 + ReLU, its own classifier."""

    def __init__(self, in_channels: int, channels: int, side: tuple[int, int], hidden: int,
                 num_classes: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, channels, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(channels * side[0] * side[1], hidden), nn.ReLU(),
            nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _inferring(self):
            return super().forward(x)
        # the same layers called directly: at batch size 1 a module call costs as much as a layer
        conv, fc1, fc2, fc3 = (self._modules[i] for i in "0357")
        y = F.conv2d(x, conv.weight, conv.bias).relu_().flatten(1)
        y = F.linear(F.linear(y, fc1.weight, fc1.bias).relu_(), fc2.weight, fc2.bias).relu_()
        return F.linear(y, fc3.weight, fc3.bias)


class CIGT(nn.Module):
    """Conditional Information Gain Trellis over images: `widths[l]` blocks in layer l; a sample
    runs one block per layer (more at a multipath threshold below 1) and is classified by the
    leaf (or the probability-weighted leaves) it reaches.

    `model` is an arch's model section ({"backbone": "cigt", "cigt": {...}}), `io` a task's
    `info()`. The routing is `self.trellis`, a `CIGTTrellis` (component name "cigt").
    """

    def __init__(self, model: dict[str, Any], io: dict[str, Any]) -> None:
        super().__init__()
        if io.get("input_kind") != "image":
            raise ValueError(f"the cigt backbone is convolutional and needs image inputs "
                             f"(C x H x W); this task's inputs are {io.get('input_kind')!r}")
        cfg = settings(model.get("cigt"))
        widths = [int(w) for w in cfg["widths"]]
        if len(widths) < 2 or min(widths) < 1 or widths[0] != 1:
            raise ValueError(f"cigt.widths needs 2 or more layers, the first with one block and "
                             f"every other with 1 or more; got {widths}")
        channels, kernel = layer_channels(cfg), int(cfg["kernel"])
        hidden, num_classes = int(cfg["hidden"]), int(io["num_classes"])
        if hidden < 2 or kernel < 1 or min(channels) < 1:
            raise ValueError(f"cigt needs hidden >= 2, kernel >= 1 and channels >= 1; got "
                             f"{hidden}, {kernel}, {channels}")
        in_channels, height, width = (int(s) for s in io["input_shape"])
        layers: list[list[nn.Module]] = []
        routers: dict[int, nn.Module] = {}
        for layer, blocks in enumerate(widths):
            if blocks > 1:
                pool = min(ROUTER_POOL, height, width)
                routers[layer] = CIGTRouter(in_channels * pool * pool, blocks,
                                            int(cfg["router_dim"]), pool)
            if layer == len(widths) - 1:
                layers.append([Leaf(in_channels, channels[layer], (height, width), hidden,
                                    num_classes) for _ in range(blocks)])
                break
            pool = min(height, width) // 2 >= 2
            layers.append([ConvBlock(in_channels, channels[layer], kernel, pool)
                           for _ in range(blocks)])
            in_channels = channels[layer]
            if pool:
                height, width = height // 2, width // 2
        self.widths = widths
        self.trellis = CIGTTrellis(
            layers, routers, num_classes, ig_weight=float(cfg["ig_weight"]),
            balance=float(cfg["balance"]), temperature=float(cfg["temperature"]),
            temperature_decay=float(cfg["temperature_decay"]),
            temperature_min=float(cfg["temperature_min"]),
            warmup_epochs=float(cfg["warmup_epochs"]),
            random_routing=float(cfg["random_routing"]),
            multipath_threshold=float(cfg["multipath_threshold"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trellis(x)
