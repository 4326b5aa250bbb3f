"""A trial's Ray Tune checkpoint: its fit state (model, optimizer, LR schedule, RNG streams) in
one small file, loaded without unpickling code (`torch.load(weights_only=True)`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

#: the fit state (`FitState.save()`) inside a checkpoint directory
STATE_FILE = "fit_state.pt"
#: what the checkpoint is: trial number and epoch, readable without torch
META_FILE = "condsearch.json"


def write_checkpoint(directory: str | Path, state: dict[str, Any], number: int) -> None:
    """Write a fit state and its description into `directory` (a Ray checkpoint's folder)."""
    folder = Path(directory)
    torch.save(state, folder / STATE_FILE)
    meta = {"trial": number, "epoch": int(state["epoch"]), "step": int(state["step"])}
    (folder / META_FILE).write_text(json.dumps(meta))


def read_checkpoint(directory: str | Path) -> dict[str, Any]:
    """The fit state a checkpoint folder holds, on the CPU (`fit` moves it to its device)."""
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def load_checkpoint(checkpoint: Any) -> dict[str, Any]:
    """The fit state of a `ray.tune.Checkpoint`."""
    with checkpoint.as_directory() as directory:
        return read_checkpoint(directory)
