"""Benchmark: how much of each adaptive block's FLOPs saving shows up as wall-clock saving.

realized speedup = time saving / FLOPs saving, with saving = 1 - adaptive / baseline. FLOPs are
per-sample means from `condsearch.cost.per_sample_flops` (a few samples cross-checked against
`reference_counter` run on each sample alone). Times come from interleaved repeats (after a
warm-up, in eval mode under `torch.inference_mode`): each step, one batch or at batch 1 one
sample, runs for adaptive and baseline back to back in alternating order, and the time ratio is
the median over repeats of adaptive / baseline, so drifts in machine load cancel. The verdict is
on wall-clock; the table also shows the figure over the middle half of the repeats (how much the
machine's noise moves it), and the JSON the same figure from the thread's CPU time.

- MoE (batch 256, 17 tokens = 16 patches + CLS): a stack of `TransformerLayer`s whose MLP is
  `MoEFeedForward(dim, hidden, E, k)`, against (a) the same stack with a dense MLP of hidden
  k*hidden, equal active FLOPs: figure = MoE time / dense time, target <= 1/0.7 (docs/architecture.md: >= 0.7 of its
  speed); and (b) the dense MLP of hidden E*hidden, "all experts", which is what MoE saves
  against: figure = realized speedup, target >= 0.7.
- Token selection (batch 1 and 256): `TokenSelection` before the second half of the layers against
  the same stack without it; figure = realized speedup, target >= 0.8 (ours: docs/architecture.md names none).
  A larger model (more tokens, wider) is also run at batch 1, to show where batch 1 pays off.
- Early exit (batch 1 over many distinct samples; batch 256 for information): `build_model` with an
  exit after every layer (random weights, heads scaled to a common certainty so exits spread over
  the layers), thresholds set so a known share of samples leaves at some exit before the last
  layer, against the same model with threshold 2 (never exits; its exit heads still run): target
  >= 0.8 at batch 1. For information also against the same layers with no exit heads.
- CIGT routing (batch 1 over many distinct samples, and batch 256): `condsearch.models.CIGT` with
  a [1, 2, 4] trellis in eval mode (each sample runs one block per layer; rows are grouped by
  route), against the unconditional thick network (`thick_baseline`: every layer as wide as all
  of its blocks together); figure = realized speedup, target >= 0.8 at batch 1 (ours: docs/architecture.md
  names none for CIGT; it is the early exit / NAC one). Random weights, BatchNorm statistics
  calibrated on random inputs and router biases shifted so routes spread evenly over the blocks.
  For information also against the thin network (`thin_baseline`, one path and no routers):
  t(CIGT) / t(thin) is the cost of routing. A wider trellis is also run at batch 1.
- NAC module dropping (batch 1 and 256): `condsearch.models.NAC` on 28x28 images (patch 4) with
  `nac.keep_ratio` r against the same weights at keep 1; figure = realized speedup, target >= 0.8
  at batch 1 (docs/architecture.md). A larger circuit is also run at batch 1.

`--only SECTION ...` re-measures some sections and merges their rows into the existing report.
`--batches 1 256` keeps only the rows at those batch sizes (of the 1 and 256 the configurations
name). `--device cuda` measures on a GPU: models are built and calibrated on the CPU as here, then
moved with their inputs to the device, and every timed step ends with `torch.cuda.synchronize()`.

Threads default to 1: on a small shared machine a second OpenMP thread that has been descheduled
stalls every parallel op at its barrier (milliseconds each), which swamps what is being measured.

    python experiments/benchmarks/realized_savings.py [--quick] [--threads N] [--out PATH]
        [--only SECTION ...] [--batches N ...] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from condsearch.blocks import (
    MoEFeedForward,
    TokenSelection,
    reset_routing_stats,
    routing_stats,
    set_inference_knobs,
)
from condsearch.blocks.early_exit import certainty
from condsearch.cost import per_sample_flops, reference_counter
from condsearch.models import CIGT, NAC, build_model
from condsearch.models._cigt import thick_baseline, thin_baseline
from condsearch.models._embed import PatchEmbed, Tokenizer
from condsearch.models._layers import ClassHead, DenseTrunk, TransformerLayer

TARGETS = {
    "moe_time_ratio_vs_equal_active": 1 / 0.7,  # docs/architecture.md: >= 0.7 against equal active FLOPs
    "moe_realized_vs_all_experts": 0.7,
    "token_selection_realized": 0.8,  # ours: docs/architecture.md names no target for token selection
    "early_exit_realized_batch1": 0.8,  # docs/architecture.md
    "cigt_realized_batch1": 0.8,  # ours: docs/architecture.md names none; the early exit / NAC one
    "nac_realized_batch1": 0.8,  # docs/architecture.md (module dropping)
}

#: how the table names a time-ratio figure, by component
TIME_RATIO_LABELS = {"moe": "t(MoE)/t(dense)", "cigt": "t(CIGT)/t(thin)"}

T = TypeVar("T", torch.Tensor, nn.Module)

IMAGE = {"input_kind": "image", "input_shape": [1, 28, 28], "num_classes": 10, "vocab_size": None}

Timing = dict[str, list[float]]  # "wall" and "cpu": seconds of each repeat

#: where models and inputs are measured (`--device`); built and calibrated on the CPU first
DEVICE = torch.device("cpu")


def _on(item: T) -> T:
    """A model or an input tensor, built on the CPU, moved to DEVICE."""
    return item.to(DEVICE)


def _sync() -> None:
    """Wait for the device's queued work, so that a timed step ends when its work does."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


# ---------------------------------------------------------------------------------------------
# measurement helpers


def _machine(threads: int) -> dict:
    """The machine; on a GPU also its name (CPU reports keep their fields as they were)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    found = {"platform": platform.platform(), "cpu_model": cpu or platform.processor(),
             "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads,
             "python": platform.python_version()}
    if DEVICE.type == "cuda":
        found.update(device=str(DEVICE), gpu=torch.cuda.get_device_name(DEVICE),
                     cuda=torch.version.cuda)
    return found


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _interleaved(variants: list[list[Callable[[], object]]], repeats: int,
                 warmup: int = 1) -> list[Timing]:
    """Wall and thread-CPU seconds per repeat of each variant, a variant being a list of steps.

    Every step (one batch, or one sample at batch 1) is run for all variants back to back, in an
    order that alternates, so the variants see the same machine from moment to moment.
    """
    steps = len(variants[0])
    with torch.inference_mode():
        for _ in range(warmup):
            for variant in variants:
                for step in variant:
                    step()
        out: list[Timing] = [{"wall": [], "cpu": []} for _ in variants]
        for r in range(repeats):
            wall, cpu = [0.0] * len(variants), [0.0] * len(variants)
            for j in range(steps):
                order = range(len(variants))
                for i in order if (r + j) % 2 == 0 else reversed(order):
                    c, w = time.thread_time(), time.perf_counter()
                    variants[i][j]()
                    _sync()
                    wall[i] += time.perf_counter() - w
                    cpu[i] += time.thread_time() - c
            for i in range(len(variants)):
                out[i]["wall"].append(wall[i])
                out[i]["cpu"].append(cpu[i])
    return out


def _paired_ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _flops(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    _, flops = per_sample_flops(model, x)
    return flops


def _cross_check(model: nn.Module, x: torch.Tensor, flops: torch.Tensor, samples: int) -> float:
    """Largest relative gap between per_sample_flops and FlopCounterMode on the sample alone."""
    worst = 0.0
    for i in range(min(samples, x.shape[0])):
        with reference_counter() as counter, torch.no_grad():
            model(x[i : i + 1])
        alone = counter.get_total_flops()
        worst = max(worst, abs(float(flops[i]) - alone) / alone)
    return worst


def _row(component: str, setting: str, batch: int, baseline: str, figure: str,
         flops_a: torch.Tensor, flops_b: torch.Tensor, timing_a: Timing, timing_b: Timing,
         per_call: int, target: float | None, extra: dict | None = None) -> dict:
    """One table row. `per_call`: samples run one at a time in each timed call (1 if batched)."""
    flops_a_mean, flops_b_mean = flops_a.mean().item(), flops_b.mean().item()
    flops_saving = 1 - flops_a_mean / flops_b_mean

    def figure_of(ratio: float) -> float:
        if figure == "time_ratio":
            return ratio
        return (1 - ratio) / flops_saving if flops_saving > 0 else float("nan")

    ratios = _paired_ratios(timing_a["wall"], timing_b["wall"])
    ratio = statistics.median(ratios)
    cpu_ratio = statistics.median(_paired_ratios(timing_a["cpu"], timing_b["cpu"]))
    time_saving, value = 1 - ratio, figure_of(ratio)
    # the figure over the middle half of the repeats: how much the machine's noise moves it
    spread = sorted(figure_of(q) for q in _quartiles(ratios)[::2])
    met = None
    if target is not None:
        met = value <= target if figure == "time_ratio" else value >= target

    def ms(t: list[float]) -> float:
        return statistics.median(t) / per_call * 1e3

    return {"component": component, "setting": setting, "batch": batch, "baseline": baseline,
            "figure": figure, "flops_per_sample_adaptive": flops_a_mean,
            "flops_per_sample_baseline": flops_b_mean, "flops_saving": flops_saving,
            "time_adaptive_ms": ms(timing_a["wall"]), "time_baseline_ms": ms(timing_b["wall"]),
            "cpu_time_adaptive_ms": ms(timing_a["cpu"]),
            "cpu_time_baseline_ms": ms(timing_b["cpu"]),
            "time_saving": time_saving, "cpu_time_saving": 1 - cpu_ratio, "value": value,
            "value_interquartile": spread, "value_from_cpu_time": figure_of(cpu_ratio),
            "target": target, "target_met": met,
            "repeats": len(timing_a["wall"]), **(extra or {})}


# ---------------------------------------------------------------------------------------------
# 1. mixture of experts


def _moe_stack(dim: int, depth: int, heads: int, hidden: int, moe: tuple[int, int] | None,
               seed: int) -> nn.Module:
    """`depth` transformer layers; MLP hidden `hidden`, or MoE with (experts, top_k) of `hidden`."""
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layer = TransformerLayer(dim, heads, hidden / dim)
        if moe is not None:
            experts, top_k = moe
            layer.mlp = MoEFeedForward(dim, hidden, experts=experts, top_k=top_k)
        layers.append(layer)
    return nn.Sequential(*layers).eval()


def bench_moe(cfg: dict, repeats: int, checks: list) -> list[dict]:
    dim, depth, heads, hidden = cfg["dim"], cfg["depth"], cfg["heads"], cfg["hidden"]
    batch, tokens = cfg["batch"], cfg["tokens"]
    rows = []
    if batch not in cfg.get("batches", [batch]):  # --batches left this section's batch out
        return rows
    x = _on(torch.randn(batch, tokens, dim, generator=torch.Generator().manual_seed(1)))
    for experts, top_k in cfg["experts_topk"]:
        moe = _on(_moe_stack(dim, depth, heads, hidden, (experts, top_k), seed=0))
        active = _on(_moe_stack(dim, depth, heads, top_k * hidden, None, seed=0))
        every = _on(_moe_stack(dim, depth, heads, experts * hidden, None, seed=0))
        reset_routing_stats(moe)
        f_moe = _flops(moe, x)
        stats = [b.routing_stats() for b in moe.modules() if isinstance(b, MoEFeedForward)]
        f_active, f_every = _flops(active, x), _flops(every, x)
        setting = f"dim {dim} E{experts} k{top_k} h{hidden}"
        checks.append({"model": f"moe {setting}",
                       "max_rel_error": _cross_check(moe, x, f_moe, cfg["check_samples"])})
        t_moe, t_active, t_every = _interleaved(
            [[lambda m=moe: m(x)], [lambda m=active: m(x)], [lambda m=every: m(x)]], repeats)
        extra = {"experts": experts, "top_k": top_k, "dim": dim, "hidden": hidden,
                 "depth": depth, "tokens": tokens,
                 "dropped_fraction_per_layer": [s["dropped_fraction"] for s in stats],
                 "load_cv_per_layer": [s["load_cv"] for s in stats]}
        rows.append(_row("moe", setting, batch, f"dense MLP h={top_k * hidden} (equal active)",
                         "time_ratio", f_moe, f_active, t_moe, t_active, 1,
                         TARGETS["moe_time_ratio_vs_equal_active"], extra))
        rows.append(_row("moe", setting, batch, f"dense MLP h={experts * hidden} (all experts)",
                         "realized", f_moe, f_every, t_moe, t_every, 1,
                         TARGETS["moe_realized_vs_all_experts"], extra))
    return rows


# ---------------------------------------------------------------------------------------------
# 2. token selection


class _SelectingViT(nn.Module):
    """Patch tokens -> layers, with an optional block between the halves -> CLS head."""

    def __init__(self, tokenizer: nn.Module, layers: nn.ModuleList, head: nn.Module,
                 select: nn.Module | None) -> None:
        super().__init__()
        self.tokenizer, self.layers, self.head = tokenizer, layers, head
        self.select = select
        self.at = len(layers) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokenizer(x)
        for i, layer in enumerate(self.layers):
            if i == self.at and self.select is not None:
                h = self.select(h)
            h = layer(h)
        return self.head(h)


def _steps(model: nn.Module, xs: torch.Tensor, batch: int) -> list[Callable[[], object]]:
    """One step per sample at batch 1, else one step for the whole batch."""
    if batch == 1:
        return [lambda xi=xi: model(xi[None]) for xi in xs]
    return [lambda: model(xs)]


def bench_token_selection(cfg: dict, repeats: int, checks: list) -> list[dict]:
    dim, depth, heads, patch = cfg["dim"], cfg["depth"], cfg["heads"], cfg["patch"]
    c, hgt, wid = cfg["input_shape"]
    torch.manual_seed(0)
    tokenizer = Tokenizer(PatchEmbed(c, hgt, wid, patch, dim), dim)
    layers = nn.ModuleList(TransformerLayer(dim, heads, 2.0) for _ in range(depth))
    head = ClassHead(dim, 10)
    plain = _on(_SelectingViT(tokenizer, layers, head, None).eval())
    tokens = tokenizer.embed.num_tokens + 1
    gen = torch.Generator().manual_seed(2)
    rows = []
    for keep in cfg["keep_ratios"]:
        selecting = _on(_SelectingViT(tokenizer, layers, head, TokenSelection(dim, keep)).eval())
        for batch in cfg["batches"]:
            n = cfg["batch1_samples"] if batch == 1 else batch  # batch 1: distinct samples
            xs = _on(torch.randn(n, c, hgt, wid, generator=gen))
            per_call = n if batch == 1 else 1
            f_sel, f_plain = _flops(selecting, xs), _flops(plain, xs)
            if batch == cfg["batches"][0]:
                checks.append({"model": f"token selection keep {keep}, dim {dim}",
                               "max_rel_error": _cross_check(selecting, xs, f_sel,
                                                             cfg["check_samples"])})
            t_sel, t_plain = _interleaved(
                [_steps(selecting, xs, batch), _steps(plain, xs, batch)], repeats)
            setting = f"keep {keep}, {tokens} tok, dim {dim}, depth {depth}"
            rows.append(_row("token_selection", setting, batch, "no selection", "realized",
                             f_sel, f_plain, t_sel, t_plain, per_call,
                             TARGETS["token_selection_realized"],
                             {"keep_ratio": keep, "tokens": tokens, "dim": dim, "depth": depth,
                              "samples": xs.shape[0]}))
    return rows


# ---------------------------------------------------------------------------------------------
# 3. early exit


class _NoExits(nn.Module):
    """The early-exit model's tokenizer, layers and final head, with no exit heads at all."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.tokenizer = model.tokenizer
        self.trunk = DenseTrunk(list(model.trunk.layers), model.trunk.final_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.tokenizer(x))


def _early_exit_model(cfg: dict) -> nn.Module:
    exit_cfg = {"enabled": True, "every": 1, "threshold": 0.5}
    arch = {"model": {"backbone": "token_transformer", "dim": cfg["dim"], "depth": cfg["depth"],
                      "heads": cfg["heads"], "patch_size": cfg["patch"],
                      "components": {"early_exit": exit_cfg}}}
    torch.manual_seed(0)
    model = build_model(arch, IMAGE)
    for p in model.parameters():
        p.data.normal_(0, 0.3)  # random but decisive heads, so certainties spread out
    return model.eval()


def _equalise_heads(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Scale each exit head's logits so its median certainty on `x` is 0.5.

    With random weights each head's certainty sits in its own narrow band, so one threshold would
    send every early sample to the same head; calibrated heads spread the exits over the layers.
    """
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    scales = []
    for head, logits in zip(model.trunk.exit_heads, model.trunk._train_exit_logits, strict=True):
        lo, hi = -8.0, 8.0  # log2 of the scale, by bisection
        for _ in range(30):
            mid = (lo + hi) / 2
            if certainty(logits * 2**mid, "confidence").median() < 0.5:
                lo = mid
            else:
                hi = mid
        scale = 2 ** ((lo + hi) / 2)
        head.fc.weight.data *= scale  # the head's last layer: logits scale by exactly this
        head.fc.bias.data *= scale
        scales.append(scale)
    return scales


def _early_share_threshold(model: nn.Module, x: torch.Tensor, share: float) -> float:
    """A threshold at which `share` of these samples leave at some exit before the last layer.

    A sample leaves early iff its most certain exit head reaches the threshold, so the threshold is
    taken midway between two neighbouring per-sample maxima (no sample sits on it).
    """
    model.train()
    with torch.no_grad():
        model(x)
    heads = torch.stack([certainty(logits, "confidence")
                         for logits in model.trunk._train_exit_logits])
    model.eval()
    best = heads.max(0).values.sort(descending=True).values
    cut = round(share * best.numel())
    return float(best[cut - 1] + best[cut]) / 2


def bench_early_exit(cfg: dict, repeats: int, checks: list) -> list[dict]:
    model = _early_exit_model(cfg)
    static = _NoExits(model).eval()
    trunk, depth = model.trunk, cfg["depth"]
    gen = torch.Generator().manual_seed(3)
    calibrate = torch.randn(1024, *IMAGE["input_shape"], generator=gen)
    _equalise_heads(model, calibrate)
    singles = torch.randn(cfg["batch1_samples"], *IMAGE["input_shape"], generator=gen)
    batch = torch.randn(cfg["batch"], *IMAGE["input_shape"], generator=gen)
    model, static, calibrate, singles, batch = map(_on, (model, static, calibrate, singles, batch))
    sizes = [size for size in (1, cfg["batch"]) if size in cfg.get("batches", [1, cfg["batch"]])]

    def with_threshold(t: float, steps: list[Callable[[], object]]) -> list[Callable[[], None]]:
        def at(step: Callable[[], object]) -> Callable[[], None]:
            def call() -> None:
                trunk.threshold = t
                step()

            return call

        return [at(step) for step in steps]

    rows = []
    for share in cfg["early_shares"]:
        threshold = _early_share_threshold(model, calibrate, share)
        for x, size in ((singles, 1), (batch, cfg["batch"])):
            if size not in sizes:
                continue
            trunk.threshold = 2.0
            f_never, f_static = _flops(model, x), _flops(static, x)
            trunk.threshold = threshold
            reset_routing_stats(model)
            f_exit = _flops(model, x)
            stats = routing_stats(model)
            if size == sizes[0] and share == cfg["early_shares"][0]:
                checks.append({"model": f"early exit share {share}", "max_rel_error":
                               _cross_check(model, x, f_exit, cfg["check_samples"])})
            per_call = len(x) if size == 1 else 1
            steps = _steps(model, x, size)
            t_exit, t_never, t_static = _interleaved(
                [with_threshold(threshold, steps), with_threshold(2.0, steps),
                 _steps(static, x, size)], repeats)
            trunk.threshold = threshold
            extra = {"threshold": threshold, "early_share_calibrated": share,
                     "early_share_measured": 1 - stats[f"early_exit.exit_rate.layer{depth}"],
                     "exit_rates": {k.split(".", 1)[1]: v for k, v in stats.items()},
                     "samples": x.shape[0], "depth": depth, "dim": cfg["dim"]}
            setting = f"{share:.0%} exit early (T={threshold:.3f}), depth {depth}, dim {cfg['dim']}"
            target = TARGETS["early_exit_realized_batch1"] if size == 1 else None
            rows.append(_row("early_exit", setting, size, "threshold 2 (never exits)",
                             "realized", f_exit, f_never, t_exit, t_never, per_call, target,
                             extra))
            rows.append(_row("early_exit", setting, size, "same layers, no exit heads",
                             "realized", f_exit, f_static, t_exit, t_static, per_call, None,
                             extra))
    return rows


# ---------------------------------------------------------------------------------------------
# 4. CIGT routing


def _calibrate_batchnorm(model: nn.Module, x: torch.Tensor, chunk: int = 256) -> None:
    """Set every BatchNorm's running statistics to the plain mean over `x` (train-mode passes).

    At initialisation the running statistics (mean 0, variance 1) do not match the features, so
    a router's normalised hidden layer is far from standard and one route wins for every input.
    """
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            model(x[i : i + chunk])
    model.eval()


def _spread_routes(model: nn.Module, x: torch.Tensor) -> list[list[float]]:
    """Shift each router's output bias so that its argmax routes spread evenly over its blocks
    on `x` (layer by layer, since a router's inputs depend on the routes before it).

    Random routers send most samples down one or two paths; a trained CIGT, whose information
    gain loss includes the balance term H(p(n)), uses all of them. Returns the usage per layer.
    """
    trellis = model.trellis
    usage = []
    for layer in trellis.routed_layers:
        router = trellis.routers[str(layer)]
        seen: list[torch.Tensor] = []
        hook = router.register_forward_hook(
            lambda _m, _i, out, seen=seen: seen.append(out.detach()))
        with torch.no_grad():
            model(x)
        hook.remove()
        logits = seen[0]
        width = logits.shape[1]
        shift = torch.zeros(width)
        step = 0.02 * float(logits.std())
        for _ in range(500):
            share = torch.bincount((logits + shift).argmax(1), minlength=width) / len(logits)
            shift -= step * (share - 1 / width) * width
        with torch.no_grad():  # an in-place edit that bumps the version (cached eval constants)
            router.fc2.bias += shift
        usage.append(share.tolist())
    return usage


def bench_cigt(cfg: dict, repeats: int, checks: list) -> list[dict]:
    section = {"widths": cfg["widths"], "channels": cfg["channels"], "kernel": cfg["kernel"],
               "hidden": cfg["hidden"]}
    gen = torch.Generator().manual_seed(4)
    calibrate = torch.randn(1024, *IMAGE["input_shape"], generator=gen)
    models = {}
    for name, settings in (("cigt", section), ("thick", thick_baseline(section)),
                           ("thin", thin_baseline(section))):
        torch.manual_seed(0)
        models[name] = CIGT({"backbone": "cigt", "cigt": settings}, IMAGE)
        _calibrate_batchnorm(models[name], calibrate)
    cigt, thick, thin = models["cigt"], models["thick"], models["thin"]
    _spread_routes(cigt, calibrate)
    cigt, thick, thin = map(_on, (cigt, thick, thin))
    widths = "[" + ",".join(str(w) for w in cfg["widths"]) + "]"
    setting = f"{widths} ch{cfg['channels']} k{cfg['kernel']} h{cfg['hidden']}, argmax routes"
    rows = []
    for size in cfg["batches"]:
        n = cfg["batch1_samples"] if size == 1 else size  # batch 1: distinct samples
        x = _on(torch.randn(n, *IMAGE["input_shape"], generator=gen))
        reset_routing_stats(cigt)
        f_cigt = _flops(cigt, x)
        stats = routing_stats(cigt)
        f_thick, f_thin = _flops(thick, x), _flops(thin, x)
        if size == cfg["batches"][0]:
            checks.append({"model": f"cigt {widths} ch{cfg['channels']}",
                           "max_rel_error": _cross_check(cigt, x, f_cigt, cfg["check_samples"])})
        per_call = len(x) if size == 1 else 1
        t_cigt, t_thick, t_thin = _interleaved(
            [_steps(cigt, x, size), _steps(thick, x, size), _steps(thin, x, size)], repeats)
        extra = {"widths": cfg["widths"], "channels": cfg["channels"], "kernel": cfg["kernel"],
                 "hidden": cfg["hidden"], "samples": x.shape[0],
                 "thick_channels": thick_baseline(section)["channels"],
                 "thick_hidden": thick_baseline(section)["hidden"],
                 "path_usage": {k.split(".", 1)[1]: v for k, v in stats.items()
                                if ".path_usage." in k}}
        target = TARGETS["cigt_realized_batch1"] if size == 1 else None
        rows.append(_row("cigt", setting, size, "thick net (all blocks' width)", "realized",
                         f_cigt, f_thick, t_cigt, t_thick, per_call, target, extra))
        rows.append(_row("cigt", setting, size, "thin net (one path, no routers)",
                         "time_ratio", f_cigt, f_thin, t_cigt, t_thin, per_call, None, extra))
    return rows


# ---------------------------------------------------------------------------------------------
# 5. NAC module dropping


def bench_nac(cfg: dict, repeats: int, checks: list) -> list[dict]:
    section = {k: cfg[k] for k in ("dim", "input_modules", "mediators", "layers", "heads",
                                   "patch_size")}
    torch.manual_seed(0)
    full = _on(NAC({"backbone": "nac", "nac": section}, IMAGE).eval())
    gen = torch.Generator().manual_seed(5)
    inputs = {size: _on(torch.randn(cfg["batch1_samples"] if size == 1 else size,
                                    *IMAGE["input_shape"], generator=gen))
              for size in cfg["batches"]}
    mediators = cfg["mediators"]
    rows = []
    for keep in cfg["keep_ratios"]:
        # its own copy: the circuit caches its constants per knob setting, so flipping one
        # model's knob between the timed calls would rebuild them on every call
        dropping = copy.deepcopy(full)
        set_inference_knobs(dropping, {"nac.keep_ratio": keep})
        for size, x in inputs.items():
            f_drop, f_full = _flops(dropping, x), _flops(full, x)
            stats = routing_stats(dropping)
            if size == cfg["batches"][0]:
                checks.append({"model": f"nac keep {keep}, dim {cfg['dim']}",
                               "max_rel_error": _cross_check(dropping, x, f_drop,
                                                             cfg["check_samples"])})
            per_call = len(x) if size == 1 else 1
            t_drop, t_full = _interleaved([_steps(dropping, x, size), _steps(full, x, size)],
                                          repeats)
            kept = int(stats["nac.active_mediators"])
            setting = f"keep {keep:g} ({kept}/{mediators} med), dim {cfg['dim']}, L{cfg['layers']}"
            target = TARGETS["nac_realized_batch1"] if size == 1 else None
            rows.append(_row("nac", setting, size, f"keep 1 (all {mediators} mediators)",
                             "realized", f_drop, f_full, t_drop, t_full, per_call, target,
                             {**section, "keep_ratio": keep, "active_mediators": kept,
                              "kernel_mean_degree": stats["nac.kernel_mean_degree"],
                              "samples": x.shape[0]}))
    return rows


# ---------------------------------------------------------------------------------------------


def _configs(quick: bool) -> dict:
    if quick:
        return {
            "repeats": {"moe": 5, "token_selection": 5, "early_exit": 5, "cigt": 5, "nac": 5},
            "moe": {"dim": 128, "depth": 1, "heads": 4, "hidden": 256, "batch": 256,
                    "tokens": 17, "experts_topk": [(8, 1)], "check_samples": 2},
            "token_selection": [{"dim": 64, "depth": 6, "heads": 4, "patch": 4,
                                 "input_shape": [1, 28, 28], "keep_ratios": [0.5],
                                 "batches": [1, 256], "batch1_samples": 32,
                                 "check_samples": 2}],
            "early_exit": {"dim": 64, "depth": 6, "heads": 4, "patch": 4, "batch": 256,
                           "batch1_samples": 32, "early_shares": [0.5], "check_samples": 3},
            "cigt": [{"widths": [1, 2, 4], "channels": 32, "kernel": 5, "hidden": 128,
                      "batches": [1, 256], "batch1_samples": 32, "check_samples": 2}],
            "nac": [{"dim": 96, "input_modules": 8, "mediators": 64, "layers": 4, "heads": 4,
                     "patch_size": 4, "keep_ratios": [0.25], "batches": [1, 256],
                     "batch1_samples": 32, "check_samples": 2}],
        }
    return {
        "repeats": {"moe": 21, "token_selection": 11, "early_exit": 9, "cigt": 11, "nac": 11},
        "moe": {"dim": 128, "depth": 2, "heads": 4, "hidden": 256, "batch": 256, "tokens": 17,
                "experts_topk": [(4, 1), (4, 2), (8, 1), (8, 2)], "check_samples": 3},
        "token_selection": [
            {"dim": 64, "depth": 6, "heads": 4, "patch": 4, "input_shape": [1, 28, 28],
             "keep_ratios": [0.5, 0.25], "batches": [1, 256], "batch1_samples": 64,
             "check_samples": 3},
            {"dim": 192, "depth": 6, "heads": 6, "patch": 4, "input_shape": [1, 56, 56],
             "keep_ratios": [0.5, 0.25], "batches": [1], "batch1_samples": 16,
             "check_samples": 2},
        ],
        "early_exit": {"dim": 64, "depth": 6, "heads": 4, "patch": 4, "batch": 256,
                       "batch1_samples": 100, "early_shares": [0.25, 0.5, 0.9],
                       "check_samples": 5},
        "cigt": [
            {"widths": [1, 2, 4], "channels": 32, "kernel": 5, "hidden": 128,
             "batches": [1, 256], "batch1_samples": 64, "check_samples": 4},
            {"widths": [1, 2, 4], "channels": 128, "kernel": 5, "hidden": 256,
             "batches": [1], "batch1_samples": 16, "check_samples": 2},
        ],
        "nac": [
            {"dim": 96, "input_modules": 8, "mediators": 64, "layers": 4, "heads": 4,
             "patch_size": 4, "keep_ratios": [0.5, 0.25, 0.125], "batches": [1, 256],
             "batch1_samples": 64, "check_samples": 3},
            {"dim": 256, "input_modules": 8, "mediators": 256, "layers": 4, "heads": 4,
             "patch_size": 4, "keep_ratios": [0.5, 0.125], "batches": [1],
             "batch1_samples": 16, "check_samples": 2},
        ],
    }


def _print_table(rows: list[dict]) -> None:
    head = (f"{'component':15} {'setting':44} {'batch':>5}  {'baseline':31} {'FLOPs sav':>9} "
            f"{'time sav':>8}  {'figure':16} {'value':>6} {'(middle half)':>16}  {'target':>6} ok")
    print(head)
    print("-" * len(head))
    for r in rows:
        figure = "realized speedup"
        if r["figure"] == "time_ratio":
            figure = TIME_RATIO_LABELS.get(r["component"], "time ratio")
        if r["target"] is None:
            target, ok = "info", "-"
        else:
            sign = "<=" if r["figure"] == "time_ratio" else ">="
            target, ok = f"{sign}{r['target']:.2f}", "✓" if r["target_met"] else "✗"
        spread = "({:.2f} to {:.2f})".format(*r["value_interquartile"])
        print(f"{r['component']:15} {r['setting'][:44]:44} {r['batch']:>5}  "
              f"{r['baseline'][:31]:31} {r['flops_saving']:>9.1%} {r['time_saving']:>8.1%}  "
              f"{figure:16} {r['value']:>6.2f} {spread:>16}  {target:>6} {ok}")


SECTIONS = ("moe", "token_selection", "early_exit", "cigt", "nac")
_CHECK_PREFIXES = {"moe": "moe ", "token_selection": "token selection", "early_exit": "early exit",
                   "cigt": "cigt", "nac": "nac"}


def _run_section(name: str, cfg: dict, checks: list) -> list[dict]:
    repeats = cfg["repeats"][name]
    bench = {"moe": bench_moe, "token_selection": bench_token_selection,
             "early_exit": bench_early_exit, "cigt": bench_cigt, "nac": bench_nac}[name]
    if isinstance(cfg[name], list):  # several model sizes
        return [row for one in cfg[name] for row in bench(one, repeats, checks)]
    return bench(cfg[name], repeats, checks)


def _sizes(one: dict) -> list[int]:
    """The batch sizes one section configuration measures (1: distinct samples one at a time)."""
    if "batches" in one:
        return list(one["batches"])
    return [one["batch"]] if "early_shares" not in one else [1, one["batch"]]  # moe; early exit


def _select_batches(cfg: dict, batches: list[int]) -> dict:
    """`cfg` measuring only the rows at `batches`; a configuration left with none is dropped."""
    named = sorted({size for name in SECTIONS
                    for one in (cfg[name] if isinstance(cfg[name], list) else [cfg[name]])
                    for size in _sizes(one)})
    unknown = sorted(set(batches) - set(named))
    if unknown:
        raise SystemExit(f"--batches {' '.join(map(str, unknown))}: the configurations measure "
                         f"batch sizes {', '.join(map(str, named))} only")
    cfg = copy.deepcopy(cfg)
    for name in SECTIONS:
        if isinstance(cfg[name], list):
            for one in cfg[name]:
                one["batches"] = [size for size in _sizes(one) if size in batches]
            cfg[name] = [one for one in cfg[name] if one["batches"]]
        else:
            cfg[name]["batches"] = [size for size in _sizes(cfg[name]) if size in batches]
    return cfg


def _measures_any(section: dict | list) -> bool:
    return any(_sizes(one) for one in (section if isinstance(section, list) else [section]))


def _section_of_check(check: dict) -> str:
    if "section" in check:
        return check["section"]
    return next(s for s, prefix in _CHECK_PREFIXES.items() if check["model"].startswith(prefix))


def _previous(path: Path, quick: bool) -> dict:
    """The report at `path`, whose other sections an `--only` run keeps."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if old.get("quick") != quick:
        raise SystemExit(f"{path} holds a {'quick' if old.get('quick') else 'full'} run; "
                         "--only merges only into a run of the same kind (or pass another --out)")
    measured_on = old.get("machine", {}).get("device", "cpu")
    if measured_on != str(DEVICE):
        raise SystemExit(f"{path} was measured on {measured_on}; --only merges only into a run "
                         f"on the same device (or pass another --out)")
    return old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~35 s smoke version")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("realized_savings.json")))
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                        help=f"run only these sections ({', '.join(SECTIONS)}) and merge their "
                             "rows into the existing --out report, keeping the other sections'")
    parser.add_argument("--batches", nargs="+", type=int, metavar="N",
                        help="measure only the rows at these batch sizes (default: all the "
                             "configurations name, 1 and 256)")
    parser.add_argument("--device", default="cpu",
                        help="where models and inputs are measured: cpu (default) or cuda[:N]")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device is visible to this process")
    torch.set_num_threads(args.threads)
    cfg = _configs(args.quick)
    if args.batches:
        cfg = _select_batches(cfg, args.batches)
    out = Path(args.out)
    run = [name for name in args.only or SECTIONS if _measures_any(cfg[name])]
    old = _previous(out, args.quick) if args.only else {}
    checks: list[dict] = []
    rows: list[dict] = []
    sections: dict[str, float] = {}
    section_runs: dict[str, dict] = {}
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start, start = _load(), time.perf_counter()
    for name in SECTIONS:
        if name not in run:
            continue
        t0, n_checks = time.perf_counter(), len(checks)
        rows += _run_section(name, cfg, checks)
        for check in checks[n_checks:]:
            check["section"] = name
        sections[name] = time.perf_counter() - t0
        section_runs[name] = {"run_started": started, "threads": args.threads,
                              "load_average_start": load_start}
    elapsed = time.perf_counter() - start
    load_end = _load()
    for name in run:
        section_runs[name]["load_average_end"] = load_end
    if old:  # keep the sections not re-run, in section order
        old_machine = old.get("machine", {})
        kept_runs = old.get("section_runs", {})
        for name in SECTIONS:
            if name in run or not any(r["component"] == name for r in old["results"]):
                continue
            rows += [r for r in old["results"] if r["component"] == name]
            checks += [{**c, "section": name} for c in old["flop_cross_checks"]
                       if _section_of_check(c) == name]
            sections[name] = old.get("seconds_per_section", {}).get(name, float("nan"))
            section_runs[name] = kept_runs.get(name) or {
                "threads": old_machine.get("threads"),
                "load_average_start": old_machine.get("load_average_start"),
                "load_average_end": old_machine.get("load_average_end")}
        order = {name: i for i, name in enumerate(SECTIONS)}
        rows.sort(key=lambda r: order[r["component"]])  # stable: keeps each section's order
        checks.sort(key=lambda c: order[c["section"]])
        sections = {k: sections[k] for k in SECTIONS if k in sections}
        section_runs = {k: section_runs[k] for k in SECTIONS if k in section_runs}
    _print_table(rows)
    print("\nper_sample_flops vs FlopCounterMode on the sample alone (max relative error):")
    for c in checks:
        print(f"  {c['model']:40} {c['max_rel_error']:.2e}")
    print(f"\n{elapsed:.0f} s, {args.threads} thread(s), load average {load_start} -> {load_end}")
    if old:
        print(f"sections {', '.join(run)} re-run; the others kept from {out}")
    report = {
        "machine": {**_machine(args.threads), "load_average_start": load_start,
                    "load_average_end": load_end},
        "quick": args.quick, "seconds": sum(sections.values()), "seconds_per_section": sections,
        "section_runs": section_runs, "configs": cfg, "targets": TARGETS,
        "definitions": {
            "saving": "1 - adaptive / baseline; FLOPs as per-sample means from "
                      "per_sample_flops; time as the median over repeats of adaptive / baseline "
                      "timed back to back (wall-clock; *_cpu_* from the thread's CPU time)",
            "realized": "time saving / FLOPs saving; target met when value >= target",
            "time_ratio": "adaptive time / baseline time; for MoE the baseline has equal active "
                          "FLOPs and the target is met when value <= target (1/0.7: at least "
                          "0.7 of the dense speed); for CIGT, against the thin net (one path, "
                          "no routers), it is informational: the cost of routing",
            "times_ms": "median per forward pass, per sample where batch is 1",
            "token_selection_target": "0.8 is ours; docs/architecture.md names no target for it",
            "cigt_target": "0.8 at batch 1 is ours (the early exit / NAC target); docs/architecture.md "
                           "names no target for CIGT",
            "section_runs": "when each section was last measured (an --only run re-measures "
                            "some sections and keeps the others' rows); machine.load_average_* "
                            "describe the latest run only",
        },
        "flop_cross_checks": checks, "results": rows,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
