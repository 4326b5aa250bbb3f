"""A user's backbone that misbehaves on purpose, for the fault suite (`run.py` copies this file
beside the search space it writes, and names it as `backbone: "faulty_nets:build"`).

`model.mode` says how it fails; the fault strikes once per search, on the first trial that meets
it, so the trials after it show whether the search went on:

- `ok`: a small MLP that trains normally;
- `nan`: the first model built for real returns NaN logits in training, so its loss turns NaN;
- `raise`: the first call of the factory raises;
- `hang`: the first model built for real never returns from a training-mode forward (it sleeps
  in a loop).

"Once" is kept across processes by a marker file in $RELIABILITY_FAULT_DIR (where run.py tells
the search to keep it); without that variable every model or call fails. A build on the meta
device (a size estimate that allocates nothing) does not count as the first, and copies of a
struck model stay struck. Only training-mode forwards hang or turn NaN, so evaluation passes
that other code runs (FLOPs counts) are left alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn


def _first(tag: str) -> bool:
    """True for the first caller across every process of this search, False afterwards."""
    folder = os.environ.get("RELIABILITY_FAULT_DIR")
    if not folder:
        return True
    try:
        fd = os.open(Path(folder) / f"{tag}.struck", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class FaultyNet(nn.Module):
    def __init__(self, features: int, width: int, classes: int, mode: str, struck: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(features, width), nn.ReLU(),
                                  nn.Linear(width, classes))
        self.mode = mode
        self._struck = struck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.body(x.float())
        if self._struck and self.mode == "hang":
            while True:  # a trial that never finishes
                time.sleep(0.05)
        y = self.body(x.float())
        if self._struck and self.mode == "nan":
            y = y * float("nan")
        return y


def build(model: dict, io: dict) -> nn.Module:
    mode = str(model.get("mode", "ok"))
    if mode == "raise" and _first("raise"):
        raise RuntimeError("faulty_nets: the factory raised on purpose (injected crash)")
    features = 1
    for size in io["input_shape"]:
        features *= int(size)
    on_meta = torch.empty(0).device.type == "meta"
    struck = mode in ("nan", "hang") and not on_meta and _first(mode)
    return FaultyNet(features, int(model.get("width", 16)), int(io["num_classes"]), mode, struck)
