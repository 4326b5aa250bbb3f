"""Train one candidate: AdamW, linear warm-up then cosine decay, an epoch or step budget."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks import adaptive_blocks, total_aux_loss
from condsearch.space import TRAIN_PARAMS, complete
from condsearch.train._device import seed_everything
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


def training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the model's output plus every adaptive block's auxiliary loss."""
    loss = F.cross_entropy(model(x).float(), y)
    aux = total_aux_loss(model, y)
    return loss if aux is None else loss + aux


def fit(
    model: nn.Module,
    task: Any,
    cfg: dict[str, Any],
    *,
    device: torch.device,
    seed: int,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train `model` on task.train and return one record per epoch (train_loss, val_accuracy).

    `cfg` is the arch's `train` section; a key it lacks takes its declared default
    (`condsearch.space.TRAIN_PARAMS`). `steps`, when set, is the budget; otherwise `epochs`.
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
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    step = 0
    blocks = adaptive_blocks(model)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        running, seen = 0.0, 0
        for start in range(0, n, batch):
            if step >= total:
                break
            idx = order[start : start + batch]
            for block in blocks:
                block.training_progress(step, per_epoch)
            with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext():
                loss = training_loss(model, x_train[idx], y_train[idx])
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} at step {step + 1} (epoch {epoch})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running += loss.item() * idx.numel()
            seen += idx.numel()
        record = {
            "train_loss": running / max(1, seen),
            "val_accuracy": accuracy(model, task.val, int(cfg["eval_batch_size"]), device),
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, epochs, record)
    del optimizer, scheduler
    return history
