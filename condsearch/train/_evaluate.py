"""Score a trained candidate on a split: accuracy, per-sample FLOPs, routing statistics.

Each function takes `dist` (default: one process): with a data-parallel group, batch k (the
same slice a single process evaluates) runs on rank k % dist.eval_ranks and the results are
merged, so every rank returns what a single process would have for the same weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from condsearch.blocks import (
    inference_knobs,
    observe_targets,
    reset_routing_stats,
    routing_stats,
    set_inference_knobs,
)
from condsearch.cost import per_sample_flops
from condsearch.train._distributed import SINGLE, Dist


@dataclass
class Evaluation:
    """What a model did on one split: accuracy, FLOPs of each sample, routing statistics."""

    accuracy: float
    flops: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Accuracy and the FLOPs distribution (mean is the `flops` objective)."""
        f = self.flops.double()
        return {
            "accuracy": self.accuracy,
            "flops": float(f.mean()),
            "flops_p50": float(f.quantile(0.5)),
            "flops_p90": float(f.quantile(0.9)),
            "flops_max": float(f.max()),
        }


def _split(task: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    return getattr(task, split)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch_size: int,
             device: torch.device, dist: Dist = SINGLE) -> float:
    """Plain eval-mode accuracy (no FLOP counting), for per-epoch monitoring."""
    was_training = model.training
    model.eval()
    x, y = data
    correct = 0
    starts = range(0, x.shape[0], batch_size)
    with torch.inference_mode():
        for k in dist.eval_batches(len(starts)):
            start = starts[k]
            xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
            correct += int((model(xb).argmax(-1) == yb).sum())
    model.train(was_training)
    (correct,) = dist.sum_(correct)
    return correct / max(1, x.shape[0])


def evaluate(model: nn.Module, task: Any, split: str = "val", batch_size: int = 256,
             device: torch.device | str | None = None, dist: Dist = SINGLE) -> Evaluation:
    """Accuracy and per-sample FLOPs of `model` on a split, in one counted pass per batch.

    With `dist`, every rank returns the same Evaluation, and the blocks' routing counters
    hold the whole split's afterwards on every rank."""
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device).eval()
    reset_routing_stats(model)
    x, y = _split(task, split)
    correct, flops = 0, {}
    starts = range(0, x.shape[0], batch_size)
    for k in dist.eval_batches(len(starts)):
        start = starts[k]
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        out, f = per_sample_flops(model, xb)
        observe_targets(model, yb)
        correct += int((out.argmax(-1) == yb).sum())
        flops[k] = f
    (correct,) = dist.sum_(correct)
    dist.reduce_stats(model)
    stats = routing_stats(model)
    return Evaluation(correct / max(1, x.shape[0]),
                      torch.cat(dist.gather_batches(flops, len(starts))), stats)


def sweep_knobs(model: nn.Module, task: Any, knobs: dict[str, list[float]], split: str = "val",
                batch_size: int = 256, dist: Dist = SINGLE
                ) -> list[tuple[dict[str, float], Evaluation]]:
    """Evaluate every combination of inference-knob values on the same weights.

    Settings equal to the model's current knobs are skipped (the trial itself is that point);
    the model's knobs are restored afterwards. With `dist` the ranks run the settings in
    lock-step, each evaluation sharded.
    """
    original = inference_knobs(model)
    relevant = {k: v for k, v in knobs.items() if k in original}
    names = sorted(relevant)
    points = []
    try:
        for values in itertools.product(*(relevant[k] for k in names)):
            setting = {k: float(v) for k, v in zip(names, values, strict=True)}
            if all(original[k] == v for k, v in setting.items()):
                continue
            set_inference_knobs(model, setting)
            points.append((setting, evaluate(model, task, split, batch_size, dist=dist)))
    finally:
        set_inference_knobs(model, original)
    return points
