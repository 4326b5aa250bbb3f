"""Mixture of experts: each token runs only the k experts its router picks.

Each sample's tokens form their own capacity group (as V-MoE groups tokens), so what a sample
costs does not depend on its batch-mates: expert e takes at most
ceil(capacity_factor * k * tokens / experts) of a sample's tokens, top-1 choices first, then
top-2 and so on, in token order. Tokens over capacity skip the expert (the residual carries them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from condsearch.blocks._protocol import AdaptiveBlock
from condsearch.cost import owners


class MoEFeedForward(AdaptiveBlock):
    """A drop-in for a transformer layer's MLP: `experts` MLPs and a top-k router."""

    knob_prefix = "moe"

    def __init__(self, dim: int, hidden: int, experts: int = 4, top_k: int = 1,
                 capacity_factor: float = 1.25, eval_capacity_factor: float = 2.0,
                 router_noise: float = 0.0, aux_loss_weight: float = 0.01) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must lie in 1..experts ({experts}), got {top_k}")
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            for _ in range(experts)
        )
        self.top_k = top_k
        self.capacity_factor = float(capacity_factor)
        self.eval_capacity_factor = float(eval_capacity_factor)
        self.router_noise = float(router_noise)
        self.aux_loss_weight = float(aux_loss_weight)
        self._aux: torch.Tensor | None = None
        self.register_buffer("_load", torch.zeros(experts), persistent=False)
        self.register_buffer("_dropped", torch.zeros(()), persistent=False)
        self.register_buffer("_assigned", torch.zeros(()), persistent=False)

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def capacity(self, tokens: int) -> int:
        factor = self.capacity_factor if self.training else self.eval_capacity_factor
        return max(1, math.ceil(factor * self.top_k * tokens / self.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        logits = self.router(x).float()
        if self.training and self.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.router_noise
        probs = logits.softmax(-1)  # [n, t, E]
        gates, choice = probs.topk(self.top_k, dim=-1)  # [n, t, k]
        if self.top_k > 1:
            gates = gates / gates.sum(-1, keepdim=True)
        kept = self._within_capacity(choice, self.capacity(t))  # [n, t, k] bool
        if self.training:
            self._aux = self._balance_loss(probs, choice[..., 0])
        else:
            self._record(choice, kept)

        flat = x.reshape(n * t, d)
        out = torch.zeros_like(flat)
        # One nonzero over the (token, choice) slots that run, then index_select gathers: boolean
        # masks and fancy indexing cost several times more on the CPU.
        slots = kept.reshape(-1).nonzero().squeeze(1)
        experts = choice.reshape(-1).index_select(0, slots)
        order = torch.argsort(experts, stable=True)
        slots, experts = slots.index_select(0, order), experts.index_select(0, order)
        rows = torch.div(slots, self.top_k, rounding_mode="floor")
        weights = gates.reshape(-1).index_select(0, slots)
        counts = torch.bincount(experts, minlength=self.num_experts).tolist()
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            r = rows[start : start + count]
            with owners(torch.div(r, t, rounding_mode="floor")):
                y = self.experts[e](flat.index_select(0, r))
            # under autocast an expert returns bf16 rows; `out` keeps the input's dtype
            out.index_add_(0, r, (y * weights[start : start + count, None].to(y.dtype)).to(out.dtype))
            start += count
        return out.view(n, t, d)

    def _within_capacity(self, choice: torch.Tensor, capacity: int) -> torch.Tensor:
        """Per sample and expert, keep the first `capacity` assignments: rank 1 choices first."""
        n, t, k = choice.shape
        onehot = F.one_hot(choice.transpose(1, 2).reshape(n, k * t), self.num_experts)  # [n, k*t, E]
        position = (onehot.cumsum(1) - 1).gather(2, choice.transpose(1, 2).reshape(n, k * t, 1))
        return (position.squeeze(2) < capacity).view(n, k, t).transpose(1, 2)

    def _balance_loss(self, probs: torch.Tensor, top1: torch.Tensor) -> torch.Tensor:
        """Switch-style load balancing: weight * E * sum_i (token share_i * mean prob_i)."""
        share = F.one_hot(top1, self.num_experts).float().mean((0, 1))
        mean_prob = probs.mean((0, 1))
        return self.aux_loss_weight * self.num_experts * (share * mean_prob).sum()

    def _record(self, choice: torch.Tensor, kept: torch.Tensor) -> None:
        self._load += torch.bincount(choice[kept], minlength=self.num_experts).to(self._load.dtype)
        self._assigned += kept.numel()
        self._dropped += (~kept).sum()

    def aux_loss(self, targets: torch.Tensor) -> torch.Tensor | None:
        return self._aux if self.training else None

    def routing_stats(self) -> dict[str, float]:
        total = float(self._load.sum())
        if total == 0:
            return {}
        load = self._load / total
        stats = {f"load.expert{i}": float(v) for i, v in enumerate(load)}
        stats["load_cv"] = float(load.std(unbiased=False) / load.mean())
        stats["dropped_fraction"] = float(self._dropped / self._assigned)
        return stats

    def reset_stats(self) -> None:
        self._load.zero_()
        self._dropped.zero_()
        self._assigned.zero_()

    def stats_state(self) -> dict[str, torch.Tensor]:
        return {"load": self._load.clone(), "dropped": self._dropped.clone(),
                "assigned": self._assigned.clone()}

    def load_stats_state(self, state: dict[str, torch.Tensor]) -> None:
        self._load.copy_(state["load"])
        self._dropped.copy_(state["dropped"])
        self._assigned.copy_(state["assigned"])

    def inference_knobs(self) -> dict[str, float]:
        return {"eval_capacity_factor": self.eval_capacity_factor}

    def set_inference_knobs(self, eval_capacity_factor: float | None = None, **rest: float
                            ) -> None:
        super().set_inference_knobs(**rest)
        if eval_capacity_factor is not None:
            self.eval_capacity_factor = float(eval_capacity_factor)
