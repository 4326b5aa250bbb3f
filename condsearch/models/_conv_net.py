"""The `conv_net` backbone: residual convolutional stages, with early exits after stages."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks import EarlyExit
from condsearch.models._layers import DenseTrunk
from condsearch.space.declared.early_exit import exit_positions


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:  # projection where the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class PoolHead(nn.Module):
    """Global average pooling then a linear classifier: an exit head or the final head."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class ConvNet(nn.Module):
    """A residual conv net: a 3x3 stem, then stages of basic blocks, each later stage at half the
    map (while it is at least 2x2); early exit, when enabled, puts pooled heads after stages."""

    def __init__(self, model: dict[str, Any], io: dict[str, Any]) -> None:
        super().__init__()
        if io["input_kind"] != "image":
            raise ValueError(f"conv_net is convolutional and needs images, got "
                             f"{io['input_kind']} inputs")
        widths, depths, kernel = list(model["widths"]), list(model["depths"]), int(model["kernel"])
        if len(widths) != len(depths):
            raise ValueError(f"conv_net: widths {widths} and depths {depths} must list one "
                             "entry per stage each")
        if kernel % 2 == 0:
            raise ValueError(f"conv_net: kernel {kernel} is even; an odd side keeps the map's size")
        channels, height, width = (int(s) for s in io["input_shape"])
        stem = int(model["stem"])
        self.stem = nn.Sequential(nn.Conv2d(channels, stem, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU())
        stages, c_in, side = [], stem, min(height, width)
        for i, (c_out, depth) in enumerate(zip(widths, depths, strict=True)):
            stride = 2 if i > 0 and side >= 2 else 1
            side = (side - 1) // stride + 1
            blocks = [BasicBlock(c_in if b == 0 else c_out, c_out, kernel, stride if b == 0 else 1)
                      for b in range(int(depth))]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        classes = int(io["num_classes"])

        def make_head(position: int) -> nn.Module:
            return PoolHead(widths[position - 1], classes)

        early = model["components"]["early_exit"]
        if early["enabled"]:
            self.trunk: nn.Module = EarlyExit(
                stages, make_head, exit_positions(early, len(stages)),
                criterion=early["criterion"], threshold=early["threshold"],
                loss_weight=early["loss_weight"])
        else:
            self.trunk = DenseTrunk(stages, make_head(len(stages)))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.stem(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
