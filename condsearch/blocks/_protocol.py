"""The interface every adaptive block shares: auxiliary loss, routing statistics, inference knobs."""

from __future__ import annotations

import torch
from torch import nn


class AdaptiveBlock(nn.Module):
    """Base class of blocks that decide per input how much of themselves to run.

    Subclasses set `knob_prefix` (the component's name in a search space) and override what
    applies; the model-level helpers below gather these over every block of a model.
    """

    knob_prefix: str = ""

    def aux_loss(self, targets: torch.Tensor) -> torch.Tensor | None:
        """Extra training loss from the last forward pass (None when the block adds none)."""
        return None

    def training_progress(self, step: int, steps_per_epoch: int) -> None:
        """Told before each optimizer step (from 0), for blocks whose routing follows a schedule."""

    def observe_targets(self, targets: torch.Tensor) -> None:
        """Told the labels of the batch just evaluated, for statistics that need them."""

    def routing_stats(self) -> dict[str, float]:
        """Statistics of the routing decisions taken since the last `reset_stats` in eval mode."""
        return {}

    def reset_stats(self) -> None:
        """Forget accumulated routing statistics."""

    def stats_state(self) -> dict[str, torch.Tensor]:
        """The counters `routing_stats` is computed from, as tensors that add up: the state of
        two evaluations run apart (two ranks sharing one) is the sum of theirs, and
        `load_stats_state(sum)` makes `routing_stats()` report them together. Empty for a
        block without statistics; a block whose statistics are no sums of counters reports,
        in a sharded evaluation, what its own rank saw."""
        return {}

    def load_stats_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the counters with `state` (keys and shapes as `stats_state` gives them)."""
        if state:
            raise KeyError(f"{type(self).__name__} keeps no statistics counters {sorted(state)}")

    def inference_knobs(self) -> dict[str, float]:
        """Settings that change what runs at inference without retraining."""
        return {}

    def set_inference_knobs(self, **knobs: float) -> None:
        """Change inference knobs; unknown names are an error."""
        if knobs:
            raise KeyError(f"{type(self).__name__} has no inference knobs {sorted(knobs)}")


def adaptive_blocks(model: nn.Module) -> list[AdaptiveBlock]:
    return [m for m in model.modules() if isinstance(m, AdaptiveBlock)]


def total_aux_loss(model: nn.Module, targets: torch.Tensor) -> torch.Tensor | None:
    """Sum of the auxiliary losses of every adaptive block (None when there are none)."""
    losses = [loss for b in adaptive_blocks(model) if (loss := b.aux_loss(targets)) is not None]
    return torch.stack(losses).sum() if losses else None


def routing_stats(model: nn.Module) -> dict[str, float]:
    """Routing statistics of every adaptive block, keyed `<component>.<stat>`; where a component
    has several blocks (e.g. MoE in two layers), `<component>.block<i>.<stat>`, i from 0."""
    by_prefix: dict[str, list[AdaptiveBlock]] = {}
    for block in adaptive_blocks(model):
        by_prefix.setdefault(block.knob_prefix, []).append(block)
    stats: dict[str, float] = {}
    for prefix, blocks in by_prefix.items():
        for i, block in enumerate(blocks):
            name = prefix if len(blocks) == 1 else f"{prefix}.block{i}"
            stats.update({f"{name}.{k}": v for k, v in block.routing_stats().items()})
    return stats


def training_progress(model: nn.Module, step: int, steps_per_epoch: int) -> None:
    for block in adaptive_blocks(model):
        block.training_progress(step, steps_per_epoch)


def observe_targets(model: nn.Module, targets: torch.Tensor) -> None:
    for block in adaptive_blocks(model):
        block.observe_targets(targets)


def reset_routing_stats(model: nn.Module) -> None:
    for block in adaptive_blocks(model):
        block.reset_stats()


def inference_knobs(model: nn.Module) -> dict[str, float]:
    """Current inference knobs, keyed `<component>.<knob>` (as a search space's `sweep` names them)."""
    knobs: dict[str, float] = {}
    for block in adaptive_blocks(model):
        for k, v in block.inference_knobs().items():
            knobs.setdefault(f"{block.knob_prefix}.{k}", v)
    return knobs


def set_inference_knobs(model: nn.Module, knobs: dict[str, float]) -> None:
    """Apply `<component>.<knob>` settings to every block of that component."""
    known = inference_knobs(model)
    unknown = sorted(set(knobs) - set(known))
    if unknown:
        raise KeyError(f"unknown inference knobs {unknown}; this model has {sorted(known)}")
    for block in adaptive_blocks(model):
        mine = {
            k.split(".", 1)[1]: v for k, v in knobs.items() if k.split(".", 1)[0] == block.knob_prefix
        }
        if mine:
            block.set_inference_knobs(**mine)
