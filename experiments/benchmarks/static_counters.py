"""Benchmark: what static FLOP counters report for adaptive models, against per-sample FLOPs.

A static counter runs a model once on a dummy input and reports one number. For a dense model
that number is every input's cost; for an adaptive one (early exit, MoE capacity, AdaTape,
CIGT's multipath routing) it is the cost of whatever path the dummy happened to take. This
script puts each tool's figure beside condsearch's truth: the mean over the validation split of
`condsearch.cost.per_sample_flops` (through `condsearch.train.evaluate`: each sample's FLOPs as if
run alone; the cheapest, the costliest and the first samples are cross-checked against
`reference_counter` run on the sample alone).

Tools, all reported in FLOPs (2 x multiply-adds):

- `thop`: `thop.profile` (package `ultralytics-thop`) reports multiply-adds; doubled.
- `fvcore`: `fvcore.nn.FlopCountAnalysis` counts one fused multiply-add as one flop; doubled.
- `FlopCounterMode`: `torch.utils.flop_counter.FlopCounterMode` as shipped (FLOPs already).
- `FlopCounterMode+sdpa`: the same with the CPU attention formula PyTorch lacks
  (`condsearch.cost.reference_counter`, the yardstick of condsearch's own counts).

thop and fvcore also count normalisation layers (a few FLOPs per element) by default, which
FlopCounterMode does not. Each is run a second time with that turned off ("norms off": thop's
`custom_ops` with `zero_ops`, fvcore's `set_op_handle` with a handle returning 0), so a dense
model shows what is convention and an adaptive one what is the dummy input.

Dummy inputs, each one sample: zeros, uniform random in [0, 1) (the range the data sets'
pixels are scaled to) and the first validation sample. Error = (static - mean per-sample) /
mean per-sample, signed, in %. A tool that raises is recorded as "fails: <reason>" and the run
goes on. Each tool runs on the trained model in eval mode after a plain forward pass, so the
eval-time constants of CIGT and NAC (folded BatchNorm, the NAC kernel) exist already and are
charged to no input, as in condsearch's count; thop sets eval mode itself, which drops them, so
its figure includes building them again.

Models: built with `condsearch.models.build_model` from arch dicts shaped like the search spaces
in `search_spaces/`, each trained briefly with `condsearch.train.fit` (digits: 10 epochs of its
1,081 training images; Fashion-MNIST: 2 epochs of 4,000) so that routing depends on the data.
Early-exit thresholds are then set so that half of 1,000 training images leave before the last
layer (`realized_savings._early_share_threshold`, fed eval-mode exit logits); CIGT is trained
with sharp routes (T0 = 1, no random-route warm-up) and evaluated with multipath threshold 0.3;
MoE with evaluation capacity factor 1; NAC with keep ratio 0.5. The token transformer (dense,
early exit, MoE, token selection, AdaTape) runs on the 8x8 digits; an early-exit token
transformer, the conv net (exits off and on), CIGT and NAC on Fashion-MNIST (1,400 validation
images), skipped with a note when that data set is absent. `--quick` runs small versions of
every model on digits only (3 epochs, 120 validation images).

    python experiments/benchmarks/static_counters.py [--quick] [--threads 1] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # experiments/: reporting
sys.path.insert(0, str(HERE))  # realized_savings, when imported as a module (tests, run.py)
from realized_savings import _early_share_threshold, _load, _machine  # noqa: E402
from reporting import machine  # noqa: E402

from condsearch.blocks import routing_stats, set_inference_knobs  # noqa: E402
from condsearch.cost import reference_counter  # noqa: E402
from condsearch.data import Task, TaskError, load_task  # noqa: E402
from condsearch.models import build_model  # noqa: E402
from condsearch.train import evaluate, fit, seed_everything  # noqa: E402

TOOLS = {
    "thop": "thop.profile (ultralytics-thop): multiply-adds x 2",
    "fvcore": "fvcore.nn.FlopCountAnalysis: fused multiply-adds x 2",
    "FlopCounterMode": "torch.utils.flop_counter.FlopCounterMode as shipped: FLOPs",
    "FlopCounterMode+sdpa": "FlopCounterMode with the CPU attention formula "
                            "(condsearch.cost.reference_counter): FLOPs",
}
DUMMIES = {
    "zeros": "torch.zeros of one sample's shape",
    "uniform": "torch.rand of one sample's shape (seed 0), the data's range [0, 1)",
    "real": "the first sample of the validation split",
}
#: what each figure means, recorded in the JSON
DEFINITIONS = {
    "units": "FLOPs = 2 x multiply-adds everywhere: thop's MACs and fvcore's flops (one per "
             "fused multiply-add) are doubled; FlopCounterMode already counts FLOPs",
    "truth": "mean over the validation split of per_sample_flops (each sample's FLOPs as if "
             "run alone, checked against reference_counter on a few samples alone)",
    "error_pct": "100 * (static figure - mean per-sample FLOPs) / mean per-sample FLOPs",
    "norms_off": "thop and fvcore with normalisation layers not counted (fvcore: "
                 "set_op_handle mapping aten::*_norm to a handle returning 0, since a handle of "
                 "None does not stop fvcore 0.1.5 counting an op it has a formula for; thop: "
                 "custom_ops mapping each norm class to zero_ops); FlopCounterMode never "
                 "counts them",
}


class Case(NamedTuple):
    """One model to count: its arch's model section, where it trains and how."""

    name: str
    backbone: str
    component: str
    dataset: str  # "digits" or "fashion_mnist"
    model: dict[str, Any]
    knobs: dict[str, float] | None = None  # inference knobs set after training
    early_share: float | None = None  # early exit: share of training samples leaving early


def _tt(dim: int, depth: int, patch: int, **components: dict[str, Any]) -> dict[str, Any]:
    return {"backbone": "token_transformer", "dim": dim, "depth": depth, "heads": 4,
            "mlp_ratio": 2.0, "patch_size": patch,
            "components": {name: {"enabled": True, **cfg} for name, cfg in components.items()}}


#: an exit head after every layer (stage) but the last; the threshold is calibrated later
EARLY = {"every": 1, "criterion": "confidence", "threshold": 0.9}


def cases(quick: bool) -> list[Case]:
    """Every backbone and component, dense and adaptive, as the search spaces build them."""
    if quick:
        dim, depth = 16, 2
        conv = {"backbone": "conv_net", "stem": 8, "widths": [8, 16], "depths": [1, 1]}
        cigt = {"widths": [1, 2, 2], "channels": 8, "hidden": 32, "router_dim": 16,
                "temperature": 1.0, "warmup_epochs": 0, "random_routing": 0.0}
        nac = {"dim": 32, "input_modules": 4, "mediators": 8, "layers": 1, "patch_size": 4}
        image = "digits"
    else:
        dim, depth = 32, 4
        conv = {"backbone": "conv_net", "stem": 16, "widths": [16, 32, 64], "depths": [1, 1, 1],
                "kernel": 3}
        cigt = {"widths": [1, 2, 4], "channels": 16, "hidden": 64, "router_dim": 64,
                "temperature": 1.0, "warmup_epochs": 0, "random_routing": 0.0}
        nac = {"dim": 64, "input_modules": 8, "mediators": 32, "layers": 2, "patch_size": 4}
        image = "fashion_mnist"
    out = [
        Case("token transformer, dense", "token_transformer", "dense", "digits",
             _tt(dim, depth, 2)),
        Case("token transformer, early exit", "token_transformer", "early_exit", "digits",
             _tt(dim, depth, 2, early_exit=EARLY), early_share=0.5),
        Case("token transformer, MoE", "token_transformer", "moe", "digits",
             _tt(dim, depth, 2, moe={"experts": 4, "top_k": 1, "every": 2,
                                     "eval_capacity_factor": 1.0})),
        Case("token transformer, token selection", "token_transformer", "token_selection",
             "digits", _tt(dim, depth, 2, token_selection={"keep_ratio": 0.5})),
        Case("token transformer, AdaTape", "token_transformer", "adatape", "digits",
             _tt(dim, depth, 2, adatape={"bank": "learned", "bank_size": 32, "max_tape": 6,
                                         "tokens_per_step": 2, "theta": 2.0})),
    ]
    if not quick:
        out.append(Case("token transformer, early exit", "token_transformer", "early_exit",
                        "fashion_mnist", _tt(64, 4, 4, early_exit=EARLY), early_share=0.5))
    out += [
        Case("conv net, static (exits off)", "conv_net", "dense", image, conv),
        Case("conv net, early exit", "conv_net", "early_exit", image,
             {**conv, "components": {"early_exit": {"enabled": True, **EARLY}}},
             early_share=0.5),
        Case("CIGT, multipath 0.3", "cigt", "cigt", image, {"backbone": "cigt", "cigt": cigt},
             knobs={"cigt.multipath_threshold": 0.3}),
        Case("NAC, keep 0.5", "nac", "nac", image, {"backbone": "nac", "nac": nac},
             knobs={"nac.keep_ratio": 0.5}),
    ]
    return out


# ---------------------------------------------------------------------------------------------
# the counters


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the tools' warnings and prints (tracer warnings, unsupported-op logs)."""
    loggers = [logging.getLogger(n) for n in ("fvcore", "fvcore.nn.jit_analysis")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _norm_classes(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))}


def count_thop(model: nn.Module, x: torch.Tensor, norms: bool = True) -> float:
    """thop's figure in FLOPs (its multiply-adds x 2); `norms=False` counts no norm layers."""
    import thop
    from thop.vision.basic_hooks import zero_ops

    custom = {} if norms else {cls: zero_ops for cls in _norm_classes(model)}
    macs, _ = thop.profile(model, inputs=(x,), custom_ops=custom, verbose=False)
    return 2.0 * float(macs)


_FVCORE_NORMS = ("aten::batch_norm", "aten::group_norm", "aten::layer_norm",
                 "aten::instance_norm")


def _zero(inputs: Any, outputs: Any) -> int:
    return 0


def count_fvcore(model: nn.Module, x: torch.Tensor, norms: bool = True) -> float:
    """fvcore's figure in FLOPs (its fused multiply-adds x 2); `norms=False` counts no norms."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, (x,))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    if not norms:  # a handle of None, as fvcore's docs say, still counts an op it has a
        # formula for (the formula wins over the ignore list), so the norms count zero instead
        analysis.set_op_handle(**{name: _zero for name in _FVCORE_NORMS})
    return 2.0 * float(analysis.total())


def fvcore_skipped(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Operators fvcore saw but has no formula for (counted as 0), with how often each ran."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, (x,))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.total()  # the analysis runs on first use
    return dict(analysis.unsupported_ops())


def _count_mode(counter: Callable[[], Any], model: nn.Module, x: torch.Tensor) -> float:
    with counter() as c, torch.no_grad():
        model(x)
    return float(c.get_total_flops())


def count_flop_counter_mode(model: nn.Module, x: torch.Tensor, norms: bool = True) -> float:
    """FlopCounterMode as shipped (counts no norm layers either way)."""
    return _count_mode(lambda: torch.utils.flop_counter.FlopCounterMode(display=False), model, x)


def count_reference(model: nn.Module, x: torch.Tensor, norms: bool = True) -> float:
    """FlopCounterMode with condsearch's CPU attention formula."""
    return _count_mode(reference_counter, model, x)


COUNTERS: dict[str, Callable[..., float]] = {
    "thop": count_thop, "fvcore": count_fvcore, "FlopCounterMode": count_flop_counter_mode,
    "FlopCounterMode+sdpa": count_reference,
}
#: tools that count normalisation layers by default (and so get a "norms off" figure)
COUNT_NORMS = ("thop", "fvcore")


def _reason(err: BaseException) -> str:
    """One line saying why a tool failed."""
    text = " ".join(str(err).split())
    text = text.split(" Argument types", 1)[0]  # TorchScript appends the whole signature
    text = re.sub(r'\d+ INTERNAL ASSERT FAILED at "[^"]*":\d+, please report a bug to '
                  r"PyTorch\. ", "TorchScript internal assert: ", text)
    return f"{type(err).__name__}: {text[:160]}" + ("..." if len(text) > 160 else "")


def _one_figure(tool: str, model: nn.Module, x: torch.Tensor, norms: bool) -> float:
    """One tool's figure on the eval-mode `model`, its eval-time constants built beforehand
    (as after any earlier inference: they are charged to no input; thop's own `model.eval()`
    drops them, so its count includes building them again)."""
    if tool in COUNT_NORMS:
        try:
            __import__(tool)
        except ImportError as err:  # not in the core install: pip install -e ".[bench]"
            raise ImportError(f"{tool} is not installed (pip install -e '.[bench]')") from err
    with _quiet():
        with torch.no_grad():
            model(x)
        return COUNTERS[tool](model, x, norms=norms)


def static_figures(model: nn.Module, dummies: dict[str, torch.Tensor], truth: float
                   ) -> dict[str, dict[str, Any]]:
    """Each tool's figure and signed error (%) on each dummy; {"fails": reason} where it raised."""
    out: dict[str, dict[str, Any]] = {}
    for tool in TOOLS:
        per_dummy: dict[str, Any] = {}
        for name, x in dummies.items():
            entry: dict[str, Any] = {}
            for norms in (True, False) if tool in COUNT_NORMS else (True,):
                key = "" if norms else "_norms_off"
                try:
                    flops = _one_figure(tool, model, x, norms)
                except Exception as err:  # a tool that cannot count this model is a result
                    entry[f"fails{key}"] = _reason(err)
                    continue
                entry[f"flops{key}"] = flops
                entry[f"error_pct{key}"] = 100.0 * (flops - truth) / truth
            if "flops" in entry and tool not in COUNT_NORMS:
                entry["flops_norms_off"] = entry["flops"]
                entry["error_pct_norms_off"] = entry["error_pct"]
            per_dummy[name] = entry
        out[tool] = per_dummy
    return out


# ---------------------------------------------------------------------------------------------
# models, data and the per-sample truth


def train_settings(quick: bool) -> dict[str, dict[str, Any]]:
    """The brief training per data set: enough that routing depends on the input, no more
    (digits has 1,081 training images, Fashion-MNIST here 4,000)."""
    if quick:
        return {"digits": {"epochs": 3, "batch_size": 32, "lr": 3e-3}}
    return {"digits": {"epochs": 10, "batch_size": 32, "lr": 3e-3},
            "fashion_mnist": {"epochs": 2, "batch_size": 64, "lr": 3e-3}}


def _task(dataset: str, quick: bool) -> Task:
    if dataset == "digits":
        task = load_task({"dataset": "digits", "seed": 0, "val_fraction": 0.2,
                          "test_fraction": 0.2})
    else:
        task = load_task({"dataset": "fashion_mnist", "seed": 0, "val_fraction": 0.02,
                          "train_limit": 4000})
    if quick:
        task = dataclasses.replace(task, val=tuple(t[:120] for t in task.val))
    return task


class _EvalExitLogits:
    """Stands in for the model in `realized_savings._early_share_threshold`, which reads every
    exit head's logits from a train-mode pass: here they come from an eval-mode pass that never
    exits (threshold 2), so a conv net's BatchNorm uses its running statistics, as at inference,
    and does not update them."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.trunk = model, model.trunk

    def train(self) -> None:
        pass

    def eval(self) -> None:
        pass

    def __call__(self, x: torch.Tensor) -> None:
        seen: list[torch.Tensor] = []
        hooks = [head.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
                 for head in self.trunk.exit_heads]
        knobs = {"early_exit.threshold": 2.0}
        previous = {"early_exit.threshold": self.trunk.threshold}
        try:
            set_inference_knobs(self.model, knobs)
            self.model(x)
        finally:
            set_inference_knobs(self.model, previous)
            for hook in hooks:
                hook.remove()
        self.trunk._train_exit_logits = seen


def _calibrate_exits(model: nn.Module, x: torch.Tensor, share: float) -> float:
    """Set the early-exit threshold at which `share` of `x` leaves before the last layer."""
    with torch.no_grad():
        threshold = _early_share_threshold(_EvalExitLogits(model), x, share)
    model.trunk._train_exit_logits = []
    set_inference_knobs(model, {"early_exit.threshold": threshold})
    return threshold


def train_case(case: Case, task: Task, train: dict[str, Any]) -> tuple[nn.Module, dict]:
    """Build the case's model, train it briefly, set its knobs; return it in eval mode."""
    seed_everything(0)
    model = build_model({"model": case.model}, task)
    started = time.perf_counter()
    history = fit(model, task, train, device=torch.device("cpu"), seed=0)
    info: dict[str, Any] = {"train": train, "train_samples": int(task.train[0].shape[0]),
                            "train_seconds": time.perf_counter() - started,
                            "val_accuracy_per_epoch": [h["val_accuracy"] for h in history]}
    model.eval()
    if case.knobs:
        set_inference_knobs(model, case.knobs)
    if case.early_share is not None:
        calib = task.train[0][:1000]
        info["early_exit_threshold"] = _calibrate_exits(model, calib, case.early_share)
        info["early_share_calibrated"] = case.early_share
    with torch.no_grad():  # warm: eval-time constants are built once, outside every count
        model(task.val[0][:1])
    return model, info


def _cross_check(model: nn.Module, x: torch.Tensor, flops: torch.Tensor, samples: int) -> float:
    """Largest relative gap between per_sample_flops and reference_counter on samples alone,
    taken over the cheapest, the costliest and the first samples."""
    picks = sorted({int(flops.argmin()), int(flops.argmax()), *range(min(samples, len(x)))})
    worst = 0.0
    for i in picks:
        with reference_counter() as counter, torch.no_grad():
            model(x[i : i + 1])
        alone = counter.get_total_flops()
        worst = max(worst, abs(float(flops[i]) - alone) / alone)
    return worst


def run_case(case: Case, task: Task, train: dict[str, Any]) -> dict[str, Any]:
    """Train one model, measure its per-sample FLOPs on validation and every tool's figure."""
    model, info = train_case(case, task, train)
    evaluation = evaluate(model, task, "val", batch_size=256)
    flops = evaluation.flops.double()
    truth = float(flops.mean())
    x_val = task.val[0]
    gen = torch.Generator().manual_seed(0)
    dummies = {"zeros": torch.zeros_like(x_val[:1]),
               "uniform": torch.rand(x_val[:1].shape, generator=gen),
               "real": x_val[:1].clone()}
    started = time.perf_counter()
    figures = static_figures(model, dummies, truth)
    skipped: dict[str, Any] = {}
    with contextlib.suppress(Exception), _quiet():
        skipped = fvcore_skipped(model, dummies["real"])
    return {
        "name": case.name, "backbone": case.backbone, "component": case.component,
        "dataset": case.dataset, "model": case.model, "knobs": case.knobs or {}, **info,
        "val_samples": int(len(flops)), "val_accuracy": evaluation.accuracy,
        "per_sample": {"mean": truth, "min": float(flops.min()), "max": float(flops.max()),
                       "p50": float(flops.quantile(0.5)),
                       "distinct": len(set(flops.tolist())),
                       "cv": float(flops.std() / flops.mean()) if len(flops) > 1 else 0.0},
        "per_sample_check_max_rel_error": _cross_check(model, x_val, flops, 3),
        "routing": {k: float(v) for k, v in routing_stats(model).items()
                    if math.isfinite(float(v))},
        "static": figures, "fvcore_skipped_ops": skipped,
        "tools_seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------
# report


def _cell(per_dummy: dict[str, Any], norms: bool) -> str:
    """"zeros / uniform / real" errors, with the real sample's norms-off error after them."""
    entries = [per_dummy[d] for d in DUMMIES]
    if all("error_pct" not in e for e in entries):
        reasons = sorted({e["fails"] for e in entries if "fails" in e})
        return f"fails: {reasons[0]}".replace("|", "/") if reasons else "fails"
    cell = " / ".join(f"{e['error_pct']:+.1f}" if "error_pct" in e else "fails" for e in entries)
    real = per_dummy["real"]
    if norms and "error_pct_norms_off" in real:
        cell += f" ({real['error_pct_norms_off']:+.1f})"
    return cell


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table: each tool's signed error (%) against the mean per-sample FLOPs on the
    zeros / uniform / real-sample dummies; for thop and fvcore, in brackets, on the real sample
    with normalisation layers not counted."""
    tools = list(TOOLS)
    lines = ["| model | data | per-sample MFLOPs: mean (min–max) | " + " | ".join(tools) + " |",
             "|---|---|---|" + "---:|" * len(tools)]
    for r in results:
        p = r["per_sample"]
        spread = (f"{p['mean'] / 1e6:.3f} ({p['min'] / 1e6:.3f}–{p['max'] / 1e6:.3f})"
                  if p["min"] != p["max"] else f"{p['mean'] / 1e6:.3f} (all equal)")
        cells = [_cell(r["static"][t], t in COUNT_NORMS) for t in tools]
        lines.append("| " + " | ".join([r["name"], r["dataset"], spread, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small models on digits only (a smoke version)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=str(HERE / "static_counters.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    measured, load_start, start = time.strftime("%Y-%m-%d %H:%M"), _load(), time.perf_counter()
    train = train_settings(args.quick)
    tasks: dict[str, Task | str] = {}
    results, skipped = [], []
    for case in cases(args.quick):
        if case.dataset not in tasks:
            try:
                tasks[case.dataset] = _task(case.dataset, args.quick)
            except TaskError as err:
                tasks[case.dataset] = str(err).split(". ", 1)[0]
        task = tasks[case.dataset]
        if isinstance(task, str):
            skipped.append({"name": case.name, "dataset": case.dataset, "reason": task})
            print(f"skipped {case.name} on {case.dataset}: {task}")
            continue
        t0 = time.perf_counter()
        results.append(run_case(case, task, train[case.dataset]))
        r = results[-1]
        print(f"[{time.perf_counter() - t0:5.1f} s] {case.name} ({case.dataset}): val accuracy "
              f"{r['val_accuracy']:.3f}, per-sample FLOPs {r['per_sample']['mean']:,.0f} "
              f"({r['per_sample']['distinct']} distinct)", flush=True)
    seconds = time.perf_counter() - start
    load_end = _load()
    print()
    print(table(results))
    print("\nSigned error (%) of each tool's figure on the zeros / uniform / real-sample dummy "
          "against the mean per-sample FLOPs (in brackets: real sample, norms not counted). All "
          "in FLOPs: thop's and fvcore's multiply-adds doubled.")
    print(f"{seconds:.0f} s, {args.threads} thread(s), load average {load_start} -> {load_end}")
    report = {
        "machine": {"description": machine(args.threads), **_machine(args.threads),
                    "load_average_start": load_start, "load_average_end": load_end},
        "measured": measured, "quick": args.quick, "seconds": seconds,
        "train": train, "tools": TOOLS, "dummies": DUMMIES, "definitions": DEFINITIONS,
        "tool_versions": _versions(), "results": results, "skipped": skipped,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("ultralytics-thop", "fvcore", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


if __name__ == "__main__":
    main()
