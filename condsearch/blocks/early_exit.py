"""Early exit: classifier heads after chosen layers; a sample leaves at the first confident one."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks._protocol import AdaptiveBlock
from condsearch.cost import owners

CRITERIA = ("confidence", "entropy")


def certainty(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """Per-sample certainty in [0, 1]: max softmax, or 1 - entropy / log(classes)."""
    probs = logits.float().softmax(-1)
    if criterion == "confidence":
        return probs.max(-1).values
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return 1.0 - entropy / math.log(logits.shape[-1])


class EarlyExit(AdaptiveBlock):
    """Runs `layers` in order; after each layer listed in `positions` an exit head may stop a sample.

    In eval mode the samples that exit are removed from the batch, so the remaining layers run
    only on the samples still alive. In training every head sees every sample and `aux_loss`
    is the weighted cross-entropy of the intermediate heads. `make_head(position)` builds the
    head that sits after `position` layers (1-based; `len(layers)` for the final head), so heads
    may differ where the layers' outputs do (e.g. the widths of a conv net's stages).
    """

    knob_prefix = "early_exit"

    def __init__(
        self,
        layers: Sequence[nn.Module],
        make_head: Callable[[int], nn.Module],
        positions: Sequence[int],
        criterion: str = "confidence",
        threshold: float = 0.9,
        loss_weight: float = 0.5,
    ) -> None:
        super().__init__()
        depth = len(layers)
        bad = [p for p in positions if not 1 <= p < depth]
        if bad:
            raise ValueError(f"exit positions {bad} must lie in 1..{depth - 1} for depth {depth}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        self.layers = nn.ModuleList(layers)
        self.positions = sorted(set(positions))
        self.exit_heads = nn.ModuleList(make_head(p) for p in self.positions)
        self.final_head = make_head(depth)
        self.criterion = criterion
        self.threshold = float(threshold)
        self.loss_weight = float(loss_weight)
        self._train_exit_logits: list[torch.Tensor] = []
        self.register_buffer("_exit_counts", torch.zeros(len(self.positions) + 1), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self._forward_all(h)
        return self._forward_alive(h)

    def _forward_all(self, h: torch.Tensor) -> torch.Tensor:
        self._train_exit_logits = []
        heads = iter(self.exit_heads)
        for i, layer in enumerate(self.layers, start=1):
            h = layer(h)
            if i in self.positions:
                self._train_exit_logits.append(next(heads)(h))
        return self.final_head(h)

    def _forward_alive(self, h: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | None = None
        alive = torch.arange(h.shape[0], device=h.device)  # rows of the input still running
        heads = iter(self.exit_heads)
        for i, layer in enumerate(self.layers, start=1):
            with owners(alive):
                h = layer(h)
                if i not in self.positions:
                    continue
                logits = next(heads)(h)
            if out is None:
                out = logits.new_empty(alive.shape[0], logits.shape[-1])
            done = certainty(logits, self.criterion) >= self.threshold
            out[alive[done]] = logits[done]
            self._exit_counts[self.positions.index(i)] += done.sum()
            keep = ~done
            alive, h = alive[keep], h[keep]
            if alive.numel() == 0:
                return out
        with owners(alive):
            logits = self.final_head(h)
        self._exit_counts[-1] += alive.numel()
        if out is None:
            return logits
        out[alive] = logits
        return out

    def aux_loss(self, targets: torch.Tensor) -> torch.Tensor | None:
        if not self.training or not self._train_exit_logits:
            return None
        losses = [F.cross_entropy(logits.float(), targets) for logits in self._train_exit_logits]
        return self.loss_weight * torch.stack(losses).sum()

    def routing_stats(self) -> dict[str, float]:
        total = float(self._exit_counts.sum())
        if total == 0:
            return {}
        frac = (self._exit_counts / total).tolist()
        depths = [*self.positions, len(self.layers)]
        stats = {f"exit_rate.layer{d}": f for d, f in zip(depths, frac, strict=True)}
        stats["mean_exit_layer"] = sum(d * f for d, f in zip(depths, frac, strict=True))
        return stats

    def reset_stats(self) -> None:
        self._exit_counts.zero_()

    def stats_state(self) -> dict[str, torch.Tensor]:
        return {"exit_counts": self._exit_counts.clone()}

    def load_stats_state(self, state: dict[str, torch.Tensor]) -> None:
        self._exit_counts.copy_(state["exit_counts"])

    def inference_knobs(self) -> dict[str, float]:
        return {"threshold": self.threshold}

    def set_inference_knobs(self, threshold: float | None = None, **rest: float) -> None:
        super().set_inference_knobs(**rest)
        if threshold is not None:
            self.threshold = float(threshold)
