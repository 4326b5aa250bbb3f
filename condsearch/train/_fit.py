"""Train one candidate: AdamW, linear warm-up then cosine decay, an epoch or step budget.

A fit can be saved after any epoch and resumed from it (`FitState`): the resumed fit continues
the same schedule, batch order and random streams, so it ends where an uninterrupted one would.
With `dist` (a `condsearch.train._distributed.Dist` of two or more ranks) each rank trains its
share of every global batch under DDP; that module's docstring says what changes.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks import adaptive_blocks, total_aux_loss
from condsearch.space import TRAIN_PARAMS, complete
from condsearch.train._device import seed_everything
from condsearch.train._distributed import SINGLE, Dist, TrainingTimedOut
from condsearch.train._evaluate import accuracy


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _schedule(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class FitState:
    """A handle on one fit: `save()` after an epoch gives its state as tensors and plain data;
    a FitState made from that state and passed to `fit` resumes training where it stood.
    In a data-parallel fit every rank holds the same model, optimizer and batch order after
    each epoch, so rank 0's `save()` is the checkpoint and every rank resumes from it.

    While the fit runs it holds the live `model`, `task`, `device`, `epoch` and `step`, so an
    epoch callback can measure the model or save a checkpoint.
    """

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        self.saved = saved
        self.model: nn.Module | None = None
        self.task: Any = None
        self.device: torch.device | None = None
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._scheduler: Any = None
        self._generator: torch.Generator | None = None

    @property
    def resumed_epoch(self) -> int:
        """The epoch a saved state ended (0 for a fresh fit)."""
        return int(self.saved["epoch"]) if self.saved else 0

    def save(self) -> dict[str, Any]:
        """Model, optimizer, LR schedule, batch-order generator and every RNG, as of now."""
        if self.model is None or self._optimizer is None:
            raise RuntimeError("FitState.save() is only possible while its fit runs")
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "epoch": self.epoch, "step": self.step, "history": [dict(h) for h in self.history],
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self._optimizer.state_dict(), "scheduler": self._scheduler.state_dict(),
            "generator": self._generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_rng": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python_rng": random.getstate(),
        }

    def _attach(self, model: nn.Module, task: Any, device: torch.device, optimizer: Any,
                scheduler: Any, generator: torch.Generator) -> None:
        """Hold the live fit's objects; restore them from `saved` when resuming."""
        self.model, self.task, self.device = model, task, device
        self._optimizer, self._scheduler, self._generator = optimizer, scheduler, generator
        if not self.saved:
            return
        saved = self.saved
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        kind, keys, pos, has_gauss, gauss = saved["numpy_rng"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = saved["python_rng"]
        random.setstate((version, tuple(internal), gauss_next))
        self.epoch, self.step = int(saved["epoch"]), int(saved["step"])
        self.history = [dict(h) for h in saved["history"]]

    def _detach(self) -> None:
        """Let go of the live objects when the fit ends, so a trial frees its model and data."""
        self.model = self.task = self._optimizer = self._scheduler = self._generator = None


def training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the model's output plus every adaptive block's auxiliary loss."""
    loss = F.cross_entropy(model(x).float(), y)
    aux = total_aux_loss(model, y)
    return loss if aux is None else loss + aux


class TrainingLoss(nn.Module):
    """`training_loss` of `model` as a module, `forward(x, y)`: what a data-parallel fit wraps
    in DDP, so every branch that reaches the loss (aux losses included) is in DDP's graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return training_loss(self.model, x, y)


def fit(
    model: nn.Module,
    task: Any,
    cfg: dict[str, Any],
    *,
    device: torch.device,
    seed: int,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    state: FitState | None = None,
    dist: Dist = SINGLE,
) -> list[dict[str, float]]:
    """Train `model` on task.train and return one record per epoch (train_loss, val_accuracy).

    `cfg` is the arch's `train` section; a key it lacks takes its declared default
    (`condsearch.space.TRAIN_PARAMS`). `steps`, when set, is the budget; otherwise `epochs`.
    `state`, when given, is filled with the live fit (see FitState); a state holding a saved
    fit resumes it after its last epoch (the history returned includes the earlier epochs).

    `dist` (default: one process) trains data-parallel: rank r takes rows [r::W] of each
    global batch of `batch_size`, DDP averages the gradients, the ranks agree on a non-finite
    loss (`TrainingDiverged` on all of them at the same step) and on `dist.deadline`
    (`TrainingTimedOut`), the epoch's loss is summed over the ranks, rank 0's buffers are
    broadcast before each epoch's evaluation and callback, and `val_accuracy` is sharded. Every
    rank returns the same history.
    """
    cfg = complete(TRAIN_PARAMS, cfg)
    seed_everything(seed)
    x_train, y_train = (t.to(device) for t in task.train)
    n, batch = x_train.shape[0], int(cfg["batch_size"])
    per_epoch = max(1, math.ceil(n / batch))
    total = int(cfg["steps"]) if cfg["steps"] else int(cfg["epochs"]) * per_epoch
    epochs = math.ceil(total / per_epoch)
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"])
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(total, float(cfg["warmup_fraction"]))
    )
    bf16 = cfg["precision"] == "bf16" and device.type == "cuda"
    if cfg["precision"] == "bf16" and not bf16:
        warnings.warn(f"train.precision bf16 applies on CUDA only; training on {device} in fp32",
                      stacklevel=2)
    generator = torch.Generator().manual_seed(seed)
    state = state if state is not None else FitState()
    state._attach(model, task, device, optimizer, scheduler, generator)
    # Wrapped after a resumed state is loaded, so DDP starts from the same weights everywhere.
    trainee = dist.wrap(model)
    history, step = state.history, state.step
    blocks = adaptive_blocks(model)
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            dist.seed_epoch(seed, epoch)
            model.train()
            order = torch.randperm(n, generator=generator).to(device)
            running, seen = 0.0, 0
            for start in range(0, n, batch):
                if step >= total:
                    break
                idx = order[start : start + batch]
                rows = dist.rows(idx)
                for block in blocks:
                    block.training_progress(step, per_epoch)
                with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext():
                    loss = trainee(x_train[rows], y_train[rows])
                finite = bool(torch.isfinite(loss))
                diverged, late = dist.agree(not finite, dist.past_deadline())
                if diverged:
                    where = f"at step {step + 1} (epoch {epoch})"
                    raise TrainingDiverged(f"loss became {loss.item()} {where}" if not finite
                                           else f"loss became non-finite on another rank {where}")
                if late:
                    raise TrainingTimedOut(f"past the deadline at step {step + 1} (epoch {epoch})")
                optimizer.zero_grad(set_to_none=True)
                weight = dist.loss_weight(idx.numel())
                (loss if weight == 1.0 else loss * weight).backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                own = dist.own_rows(idx.numel())
                running += loss.item() * own
                seen += own
            running, seen = dist.sum_(running, seen)
            dist.sync_buffers(model)
            record = {
                "train_loss": running / max(1, seen),
                "val_accuracy": accuracy(model, task.val, int(cfg["eval_batch_size"]), device,
                                         dist),
            }
            history.append(record)
            state.epoch, state.step = epoch, step
            if on_epoch is not None:
                on_epoch(epoch, epochs, record)
    finally:
        state._detach()
        del trainee
    del optimizer, scheduler
    return list(history)
