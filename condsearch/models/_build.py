"""build_model: the one entry point from an arch dict to a module."""

from __future__ import annotations

from typing import Any

from torch import nn

from condsearch.blocks import set_inference_knobs
from condsearch.models._cigt import CIGT
from condsearch.models._nac import NAC
from condsearch.models._token_transformer import TokenTransformer

BACKBONES = {"token_transformer": TokenTransformer, "cigt": CIGT, "nac": NAC}


def _io(task: Any) -> dict[str, Any]:
    return task.info() if hasattr(task, "info") else dict(task)


def build_model(arch: dict[str, Any], task: Any) -> nn.Module:
    """Build the model an arch dict describes, for a task (a Task or its `info()` dict).

    Only `arch["model"]` and, when present, `arch["inference"]` (knob settings) are read.
    """
    model_cfg = arch["model"]
    backbone = model_cfg["backbone"]
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}")
    model = BACKBONES[backbone](model_cfg, _io(task))
    if arch.get("inference"):
        set_inference_knobs(model, arch["inference"])
    return model
