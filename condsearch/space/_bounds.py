"""What a space's costliest candidate would need, estimated before anything is built (no torch).

Validation refuses a space whose costliest candidate cannot train within the memory limit, whose
knob sweep or training length is absurd, naming the key that drives the cost. Each trial checks
its own candidate again before training (`condsearch.train._footprint`), with the same constants,
so a candidate the estimate here cannot see (a user's backbone) still fails in milliseconds.
Documented under "Bounds" in docs/search-space.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from condsearch.space._declaration import Backbone
from condsearch.space._distributions import (
    Distribution,
    FloatRange,
    IntRange,
    ParamSpec,
    highest,
)
from condsearch.space._schema import TRAIN_PARAMS
from condsearch.space.declared import BUILTIN_COMPONENTS

#: bytes one trainable parameter costs in training: fp32 weight, gradient and AdamW's two moments
TRAINING_BYTES_PER_PARAM = 16
#: bytes of one activation value kept for the backward pass (fp32)
ACTIVATION_BYTES = 4
#: the share of the machine's memory (a CUDA device's, when training on one) a trial may plan to
#: use when `search.max_memory_gb` is not set
MEMORY_SHARE = 0.5
#: the most evaluations one trial's knob sweep may make (the product of the sweep's list lengths)
MAX_SWEEP_POINTS = 1_000
#: the most optimizer steps a trial may plan (`train.steps`, or epochs x batches per epoch)
MAX_TRAIN_STEPS = 10_000_000
#: samples in each built-in data set before it is split (parity's is `task.size`)
DATASET_SAMPLES = {"digits": 1797, "fashion_mnist": 70000}

Add = Callable[[tuple[Any, ...], str], None]


@dataclass(frozen=True)
class TrialLimits:
    """What a trial may cost: `constraints.max_params` / `max_flops`, `search.max_memory_gb`
    (None: `MEMORY_SHARE` of the device's memory) and `search.trial_timeout` (seconds, None:
    no limit). Plain data: it travels with a trial to a remote worker."""

    max_params: float | None = None
    max_flops: float | None = None
    max_memory_gb: float | None = None
    timeout: float | None = None
    #: CPU threads the trial computes on; None: `usable_cpus()` where it runs
    cpus: float | None = None

    @classmethod
    def of(cls, space: Any) -> TrialLimits:
        """The limits a `SearchSpace` sets."""
        return cls(space.constraints.get("max_params"), space.constraints.get("max_flops"),
                   space.execution.get("max_memory_gb"), space.execution.get("trial_timeout"),
                   space.execution.get("cpus_per_trial"))

    def threads(self, own: int = 0) -> int:
        """The intra-op threads a trial computes on: `cpus`, else `free_cpus(own)`."""
        return max(1, int(self.cpus)) if self.cpus is not None else free_cpus(own)


def free_cpus(own: int = 0) -> int:
    """The CPUs this process may use (`usable_cpus`) less those other work keeps busy: the
    1-minute load average less `own`, the threads this process itself kept running (its last
    trial's). At least 1. On a shared machine more threads than idle cores make every op wait
    for its slowest, descheduled thread (README, "Speed on a shared machine")."""
    cap = usable_cpus()
    try:
        others = max(0.0, os.getloadavg()[0] - own)
    except (AttributeError, OSError):
        return cap
    return max(1, min(cap, int(cap - others + 0.5)))


def usable_cpus() -> int:
    """The CPUs this process may use: its CPU affinity, within a cgroup's CPU quota (a
    container's limit) and `OMP_NUM_THREADS` when set (Ray sets it in its workers to the CPUs a
    trial reserved; batch schedulers set it to a job's share)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        count = min(count, int(omp))
    return max(1, count)


def machine_memory_bytes() -> int:
    """This machine's physical memory in bytes (0 when the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def memory_limit(max_memory_gb: float | None, total_bytes: int | None = None,
                 where: str = "this machine") -> tuple[float, str]:
    """(bytes a trial may plan to use, how that limit was set): `search.max_memory_gb`, else
    `MEMORY_SHARE` of `total_bytes` (default: this machine's memory); inf when unknown."""
    if max_memory_gb is not None:
        return float(max_memory_gb) * 1e9, f"search.max_memory_gb = {max_memory_gb:g}"
    total = machine_memory_bytes() if total_bytes is None else total_bytes
    if total <= 0:
        return math.inf, "no limit (the machine's memory is unknown)"
    return (MEMORY_SHARE * total, f"{MEMORY_SHARE:.0%} of {where}'s {total / 1e9:.1f} GB, as "
                                  "search.max_memory_gb is not set")


def training_bytes(params: float, activations_per_sample: float, batch_size: int) -> float:
    """Memory to train: parameters with their gradients and optimizer state, plus the
    activations a batch keeps for the backward pass."""
    return (params * TRAINING_BYTES_PER_PARAM
            + activations_per_sample * batch_size * ACTIVATION_BYTES)


def gb(value: float) -> str:
    return f"{value / 1e9:,.1f} GB"


def train_samples(task: dict[str, Any]) -> int | None:
    """About how many training samples a built-in data set yields after splitting."""
    total = int(task.get("size", 12000)) if task.get("dataset") == "parity" else (
        DATASET_SAMPLES.get(task.get("dataset", "")))
    if total is None:
        return None
    share = 1 - float(task.get("val_fraction", 0.2)) - float(task.get("test_fraction", 0.2))
    count = max(1, int(total * share))
    limit = task.get("train_limit")
    return min(count, int(limit)) if limit else count


def check_sweep(sweep: dict[str, Any], add: Add) -> None:
    """A sweep evaluates every combination of its values: their count must stay under
    `MAX_SWEEP_POINTS`; the knob with the most values is named."""
    lengths = {k: len(v) for k, v in sweep.items() if isinstance(v, list) and v}
    points = math.prod(lengths.values()) if lengths else 0
    if points > MAX_SWEEP_POINTS:
        knob = max(lengths, key=lengths.__getitem__)
        add(("sweep", knob), f"the sweep evaluates {points:,} knob settings per trial (every "
                             f"combination of {' x '.join(str(n) for n in lengths.values())} "
                             f"values), more than the limit of {MAX_SWEEP_POINTS:,}; list "
                             f"fewer values")


def check_train_length(train: dict[str, Distribution], task: dict[str, Any], add: Add) -> None:
    """The most optimizer steps a trial can plan must stay under `MAX_TRAIN_STEPS`."""
    steps = train.get("steps")
    if steps is not None and highest_or_none(steps) is not None:
        most = highest(steps)
        if most > MAX_TRAIN_STEPS:
            add(("train", "steps"), f"{most:,} optimizer steps is more than the limit of "
                                    f"{MAX_TRAIN_STEPS:,} a trial may plan")
        return
    epochs, batch = train.get("epochs"), train.get("batch_size")
    if epochs is None or highest_or_none(epochs) is None:
        return
    samples = train_samples(task) or 1
    smallest_batch = min(_numbers(batch)) if batch is not None and _numbers(batch) else 1
    per_epoch = max(1, math.ceil(samples / smallest_batch))
    most = highest(epochs) * per_epoch
    if most > MAX_TRAIN_STEPS:
        add(("train", "epochs"), f"{highest(epochs):,} epochs of {per_epoch:,} batches is "
                                 f"{most:,} optimizer steps, more than the limit of "
                                 f"{MAX_TRAIN_STEPS:,} a trial may plan")


def highest_or_none(dist: Distribution) -> Any:
    values = _numbers(dist)
    return max(values) if values else None


def _numbers(dist: Distribution) -> list[float]:
    if isinstance(dist, (IntRange, FloatRange)):
        return [dist.lo, highest(dist)]
    return [v for v in (dist.values() or []) if isinstance(v, (int, float))
            and not isinstance(v, bool)]


def _candidates(dist: Distribution) -> list[Any]:
    """The values worth trying for the costliest point: a range's ends, a choice's items."""
    if isinstance(dist, (IntRange, FloatRange)):
        return [highest(dist), dist.lo]
    return [v for v in (dist.values() or [])]


def costliest_point(decl: Backbone, keys: dict[str, Distribution],
                    components: dict[str, dict[str, Distribution]],
                    cost: Callable[[dict[str, Any]], float], stop_above: float = math.inf
                    ) -> tuple[dict[str, Any], float]:
    """The model section of the space's most expensive candidate by `cost`, and that cost:
    each key starts at its highest value (components on where they can be), then one pass
    tries each key's other values and keeps the costlier. Keys whose cost is not monotone
    (MoE's `every`) are thereby handled; the result is an estimate, not a proof. The search
    stops once the cost passes `stop_above`."""
    point: dict[str, Any] = {name: _candidates(d)[0] for name, d in keys.items() if _candidates(d)}
    comps: dict[str, dict[str, Any]] = {}
    for comp, params in components.items():
        chosen = {name: _candidates(d)[0] for name, d in params.items() if _candidates(d)}
        chosen["enabled"] = True in params["enabled"].values()
        comps[comp] = chosen
    model = {"backbone": decl.name, **point, "components": comps}
    best = cost(model)
    if best > stop_above:
        return model, best
    slots = [(point, name, keys[name]) for name in point] + [
        (comps[c], name, components[c][name]) for c in comps for name in comps[c]
        if name != "enabled"]
    for holder, name, dist in slots:
        for value in _candidates(dist)[1:8]:
            kept = holder[name]
            holder[name] = value
            try:
                value_cost = cost(model)
            except (ValueError, ZeroDivisionError, TypeError):
                value_cost = -math.inf
            if value_cost > best:
                best = value_cost
                if best > stop_above:
                    return model, best
            else:
                holder[name] = kept
    return model, best


def driving_key(model: dict[str, Any], cost: Callable[[dict[str, Any]], float],
                specs: Callable[[tuple[str, ...]], ParamSpec | None],
                extra: dict[str, Callable[[float], float]] | None = None) -> str:
    """The dotted key under `model` (or a name of `extra`) whose value, brought back to its
    default (else its typical value, else halved), cuts the cost most."""
    base = cost(model)
    best, best_share = "", 1.0
    holders = [((), model)] + [(("components", c), cfg) for c, cfg in
                               (model.get("components") or {}).items() if cfg.get("enabled")]
    for at, holder in holders:
        for name, value in list(holder.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            spec = specs((*at, name))
            ref = None if spec is None else spec.default if spec.default is not None else (
                spec.typical)
            if isinstance(ref, bool) or not isinstance(ref, (int, float)):
                ref = value / 2 if isinstance(value, float) else value // 2
            if ref >= value or ref <= 0:
                continue
            holder[name] = type(value)(ref)
            try:
                share = cost(model) / base if base else 1.0
            except (ValueError, ZeroDivisionError, TypeError):
                share = 1.0
            holder[name] = value
            if share < best_share:
                best, best_share = ".".join(("model", *at, name)), share
    for name, reduced in (extra or {}).items():
        share = reduced(base) / base if base else 1.0
        if share < best_share:
            best, best_share = name, share
    return best


def check_memory(decl: Backbone, keys: dict[str, Distribution],
                 components: dict[str, dict[str, Distribution]], train: dict[str, Distribution],
                 io: dict[str, Any], max_memory_gb: float | None, add: Add) -> None:
    """Refuse a space whose costliest candidate needs more memory to train than the limit,
    naming the key that drives it. Needs the backbone's torch-free `param_count` and
    `activations`; other backbones are checked by each trial before it trains."""
    if decl.param_count is None or decl.activations is None:
        return
    default_batch = int(TRAIN_PARAMS["batch_size"].default)
    batch = int(highest_or_none(train["batch_size"]) or 1) if "batch_size" in train else (
        default_batch)
    limit, how = memory_limit(max_memory_gb)

    def cost(model: dict[str, Any]) -> float:
        return training_bytes(decl.param_count(model, io), decl.activations(model, io), batch)

    model, need = costliest_point(decl, keys, components, cost, stop_above=limit)
    if need <= limit:
        return
    params = decl.param_count(model, io)

    def spec(path: tuple[str, ...]) -> ParamSpec | None:
        if len(path) == 1:
            return decl.params.get(path[0])
        return BUILTIN_COMPONENTS[path[1]].params.get(path[2]) if (
            path[1] in BUILTIN_COMPONENTS) else None

    smaller = default_batch if batch > default_batch else max(1, batch // 2)
    key = driving_key(model, cost, spec, {"train.batch_size": lambda _: training_bytes(
        params, decl.activations(model, io), smaller)})
    shown = ", ".join(f"{k} {_show(v)}" for k, v in model.items()
                      if k not in ("backbone", "components"))
    on = [c for c, cfg in model["components"].items() if cfg.get("enabled")]
    at = tuple(key.split(".", 1)[1].split(".")) if key.startswith("model.") else tuple(
        key.split("."))
    add(("model", *at) if key.startswith("model.") else at,
        f"the costliest candidate ({shown}{', with ' + ', '.join(on) if on else ''}) needs about "
        f"{gb(need)} to train at batch {batch} ({params:,.0f} parameters), more than the "
        f"{gb(limit)} limit ({how}); {key} drives it: lower it, or raise "
        "search.max_memory_gb")


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:g}" if isinstance(value, float) else str(value)
