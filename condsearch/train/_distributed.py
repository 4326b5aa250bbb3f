"""Data-parallel training and evaluation: what one of W processes does so that together they
train as one and evaluate exactly as one.

A `Dist` describes this process's place in a group that `torch.distributed` already set up
(whoever starts the processes initialises the group; this module only uses it). `SINGLE`, the
default everywhere, is a group of one: every method is then a no-op or the identity, so the
single-process code paths run exactly as they did before any of this existed.

Training (`fit(..., dist=...)`):

- Every rank draws the same global batch order from the same seeded generator; `batch_size`
  stays the *global* batch. Rank r trains rows `global_idx[r::W]` of each global batch
  (`rows`), so steps per epoch, the LR schedule and `training_progress` are those of a
  single-process fit, and each step sees a single-process step's rows.
- The model is trained through `wrap(model)`: DDP around `TrainingLoss(model)` (the
  cross-entropy plus every block's auxiliary loss), not around the model. Exit heads and
  routers reach the loss only through `aux_loss`, so a DDP around the model would not see them
  in its graph walk; with the loss as DDP's output every branch is in the graph, and an expert
  idle on one rank (`find_unused_parameters=True`) gets the other ranks' gradient.
- The local loss is scaled by `loss_weight` (n_r * W / n_global): DDP averages gradients over
  the ranks, which then equals the gradient of the global batch's mean loss.
- Once a step, before `backward`, the ranks `agree` (a MAX all-reduce of a few flags) on a
  non-finite loss and on a passed deadline, so all of them raise at the same step and none is
  left waiting in a collective.
- Aux losses and BatchNorm's batch statistics are per rank's share, as single-device code
  computes them on its batch (no SyncBatchNorm); running statistics are rank 0's
  (`sync_buffers` after each epoch). The weights of a W-rank fit differ from a 1-rank fit's; a
  resume is exact at the same W, from rank 0's `FitState.save()` alone, because each epoch
  re-seeds every rank's random streams from (seed, rank, epoch) (`seed_epoch`).

Evaluation (`evaluate`, `accuracy`, `sweep_knobs`, `interim_metrics` with `dist=...`): batch k
(the very slice a single process evaluates) runs on rank `k % eval_ranks`; correct counts are
summed (`sum_`), per-batch FLOPs gathered in batch order (`gather_batches`) and the blocks'
routing counters summed (`reduce_stats`) before `routing_stats()`. Every batch is the
single-process batch bit for bit, so every rank ends with numbers identical to a single process
evaluating the same weights.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from condsearch.blocks import adaptive_blocks


class TrainingTimedOut(RuntimeError):
    """The ranks agreed that the fit ran past its deadline (`Dist.deadline`)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel group: `rank` of `world`, computing on `device`.

    `eval_ranks` (1..world, default world) is how many ranks share an evaluation: batch k runs
    on rank k % eval_ranks, the others only join the merge. `deadline`, a `time.time()` value
    the same on every rank (rank 0's start plus the trial's timeout, broadcast once), makes
    `fit` stop at the step at which the ranks agree it passed. The default process group is
    used unless `group` names another.
    """

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    eval_ranks: int | None = None
    deadline: float | None = None
    group: Any = None

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} of world {self.world}: need 0 <= rank < world")
        if self.eval_ranks is None:
            object.__setattr__(self, "eval_ranks", self.world)
        if not 1 <= self.eval_ranks <= self.world:
            raise ValueError(f"eval_ranks must lie in 1..{self.world}, got {self.eval_ranks}")
        object.__setattr__(self, "device", torch.device(self.device))

    @classmethod
    def current(cls, device: torch.device | str = "cpu", eval_ranks: int | None = None,
                deadline: float | None = None) -> Dist:
        """This process's place in the initialised default group, or SINGLE's (on `device`)
        when no group is initialised."""
        if not (torch_dist.is_available() and torch_dist.is_initialized()):
            return cls(device=torch.device(device), deadline=deadline)
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), torch.device(device),
                   eval_ranks, deadline)

    @property
    def parallel(self) -> bool:
        """True with two or more ranks; every collective below is skipped otherwise."""
        return self.world > 1

    # ---- training ---------------------------------------------------------------------------

    def rows(self, global_idx: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch: `global_idx[rank::world]`. A share left empty (a
        global batch of fewer rows than ranks) is the batch's first row, whose `loss_weight`
        is 0, so every rank still joins every collective of the step."""
        if not self.parallel:
            return global_idx
        share = global_idx[self.rank :: self.world]
        return share if share.numel() else global_idx[:1]

    def own_rows(self, global_rows: int) -> int:
        """How many of a global batch's `global_rows` rows are this rank's (0 for an empty share)."""
        if not self.parallel:
            return global_rows
        return max(0, -(-(global_rows - self.rank) // self.world))

    def loss_weight(self, global_rows: int) -> float:
        """The factor on this rank's mean loss, own_rows * world / global_rows, under which
        DDP's average of the ranks' gradients is the gradient of the global batch's mean loss.
        The weights of all ranks sum to `world`; 1 for SINGLE."""
        if not self.parallel:
            return 1.0
        return self.own_rows(global_rows) * self.world / global_rows

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true on every rank when it is true on any: a MAX all-reduce of a small
        integer tensor (the flags as given for SINGLE)."""
        if not self.parallel:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int64, device=self.device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX, group=self.group)
        return tuple(bool(v) for v in t.tolist())

    def past_deadline(self) -> bool:
        """Whether `deadline` has passed on this rank's clock (never without a deadline)."""
        return self.deadline is not None and time.time() >= self.deadline

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """With two or more ranks, seed Python, NumPy and torch from (seed, rank, epoch), so
        router noise and dropout differ between ranks and a resume from rank 0's checkpoint
        alone continues exactly. Nothing for SINGLE, whose streams run on from `fit`'s seed."""
        if not self.parallel:
            return
        state = np.random.SeedSequence([int(seed) % 2**63, self.rank, int(epoch)]).generate_state(2)
        value = int(state[0]) | int(state[1]) << 32
        random.seed(value)
        np.random.seed(int(state[0]))
        torch.manual_seed(value % 2**63)

    def wrap(self, model: nn.Module) -> nn.Module:
        """What `fit` calls with (x, y) to get the training loss: `TrainingLoss(model)`, inside
        DistributedDataParallel with two or more ranks (see the module's docstring for why the
        loss and not the model). The model's own parameters are DDP's, so an optimizer built
        on `model.parameters()` steps the averaged gradients."""
        from condsearch.train._fit import TrainingLoss

        loss = TrainingLoss(model)
        if not self.parallel:
            return loss
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # DDP's default broadcasts rank 0's buffers before each forward (`broadcast_buffers`,
        # deprecated by name in newer torch, which keeps the behaviour as its default)
        return DistributedDataParallel(loss, device_ids=ids, output_device=ids[0] if ids else None,
                                       find_unused_parameters=True, process_group=self.group)

    def sync_buffers(self, model: nn.Module) -> None:
        """Broadcast rank 0's buffers (BatchNorm running statistics, ...) to every rank. DDP
        broadcasts them before each training forward, so after the last step each rank holds
        its own last batch's; evaluation and the checkpoint need one state."""
        if not self.parallel:
            return
        for buffer in model.buffers():
            torch_dist.broadcast(buffer.data, src=self._global(0), group=self.group)

    # ---- evaluation -------------------------------------------------------------------------

    def eval_batches(self, count: int) -> range:
        """The indices of the evaluation batches (of `count`) this rank runs: k % eval_ranks ==
        rank. All of them for SINGLE."""
        if self.rank >= self.eval_ranks:
            return range(0)
        return range(self.rank, count, self.eval_ranks)

    def sum_(self, *values: float) -> tuple[Any, ...]:
        """Each value summed over the ranks (in float64, exact for integer counts below 2**53);
        ints come back as ints. The values as given for SINGLE."""
        if not self.parallel:
            return values
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(t, group=self.group)
        return tuple(int(s) if isinstance(v, int) else float(s)
                     for v, s in zip(values, t.tolist(), strict=True))

    def gather_batches(self, pieces: dict[int, torch.Tensor], count: int) -> list[torch.Tensor]:
        """Per-batch results (batch k's on the rank that ran it) as one list in batch order,
        on every rank. Every one of the `count` batches must have been run by some rank."""
        if self.parallel:
            mine = {k: v.detach().cpu() for k, v in pieces.items()}
            everyone: list[Any] = [None] * self.world
            torch_dist.all_gather_object(everyone, mine, group=self.group)
            pieces = {k: v for part in everyone for k, v in part.items()}
        missing = [k for k in range(count) if k not in pieces]
        if missing:
            raise RuntimeError(f"no rank evaluated batches {missing}")
        return [pieces[k] for k in range(count)]

    def reduce_stats(self, model: nn.Module) -> None:
        """Sum every adaptive block's routing counters (`stats_state()`) over the ranks and load
        the sums (`load_stats_state`), so `routing_stats()` then reports the whole evaluation.
        One all-reduce of all the counters as float64 (exact for counts below 2**53)."""
        if not self.parallel:
            return
        states = [block.stats_state() for block in adaptive_blocks(model)]
        entries = [(i, key, value) for i, state in enumerate(states)
                   for key, value in sorted(state.items())]
        if not entries:
            return
        flat = torch.cat([torch.as_tensor(v).detach().reshape(-1).to(self.device, torch.float64)
                          for _, _, v in entries])
        torch_dist.all_reduce(flat, group=self.group)
        summed: list[dict[str, torch.Tensor]] = [{} for _ in states]
        offset = 0
        for i, key, value in entries:
            value = torch.as_tensor(value)
            part = flat[offset : offset + value.numel()].reshape(value.shape)
            summed[i][key] = part.to(value.device, value.dtype)
            offset += value.numel()
        for block, state in zip(adaptive_blocks(model), summed, strict=True):
            if state:
                block.load_stats_state(state)

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing for SINGLE)."""
        if self.parallel:
            if self.device.type == "cuda":
                torch_dist.barrier(group=self.group, device_ids=[self.device.index])
            else:
                torch_dist.barrier(group=self.group)

    def from_rank0(self, value: Any) -> Any:
        """Rank 0's `value` (any picklable object) on every rank; `value` itself for SINGLE."""
        if not self.parallel:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=self._global(0), group=self.group)
        return box[0]

    def _global(self, rank: int) -> int:
        return rank if self.group is None else torch_dist.get_global_rank(self.group, rank)


#: a group of one: every collective is skipped, every share is the whole
SINGLE = Dist()
