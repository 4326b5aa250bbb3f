"""The CIGT reproduction: a [1, 2, 4] trellis against thick and thin unconditional baselines.

Task: Fashion-MNIST (60k training images, 10% of the 70k held out for validation, the 10k test
set for scoring). The paper's claim (Bicici et al., arXiv 2402.08345): CIGT reaches accuracy
comparable to or better than the unconditional baselines for a fraction of their compute. This
script trains the three models with the same settings at each seed, scores them on the test
split (accuracy, mean per-sample MACs), sweeps CIGT's multipath threshold on the same weights,
and writes the tables to `README.md` (between the RESULTS markers) and the raw figures to
`results.json`, both beside it (or in `--out`).

    python experiments/cigt/run.py                      # the run recorded in README.md
    python experiments/cigt/run.py --quick --out /tmp/x  # tiny budget and models (CI)
    python experiments/cigt/run.py --epochs 10 --seeds 0 1 2   # the larger budget; resumable

Each finished (model, seed) is kept under `--runs` (default `runs/cigt`) and reused by a rerun
with the same settings, so a stopped run resumes, and runs split by `--seeds` over processes
add up: each writes the table of every finished model of its settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from condsearch import evaluate, fit, load_task
from condsearch.blocks import set_inference_knobs
from condsearch.models._cigt import CIGT, thick_baseline, thin_baseline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reporting import machine, write_results  # noqa: E402
from resumable import Progress, Units  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = ("cigt", "thick", "thin")


def schedule(section: dict[str, Any], epochs: int, steps: int) -> dict[str, Any]:
    """The paper's routing schedule compressed to this budget: random routes for the first 20%
    of training (25 of 125 epochs in the paper) and T reaching T_min at 90% of the steps (as
    0.9999 per step does over the paper's 60,000 steps)."""
    t0, t_min = float(section["temperature"]), float(section["temperature_min"])
    decay = math.exp(math.log(t_min / t0) / max(1.0, 0.9 * steps))
    return {**section, "warmup_epochs": 0.2 * epochs, "temperature_decay": decay}


def model_section(kind: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    cigt = {"widths": [1, 2, 4], "channels": args.channels, "kernel": 5, "hidden": args.hidden,
            "router_dim": args.router_dim, "ig_weight": 1.0, "balance": args.balance,
            "temperature": 25.0, "temperature_min": 0.1, "random_routing": 0.5}
    if kind == "thick":
        return thick_baseline(cigt)
    if kind == "thin":
        return thin_baseline(cigt)
    return schedule(cigt, args.epochs, steps)


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": 0.05, "warmup_fraction": 0.05, "eval_batch_size": 1000}


def run_model(task: Any, kind: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model at one seed and score it; CIGT also at each multipath threshold."""
    steps = args.epochs * math.ceil(len(task.train[1]) / args.batch_size)
    section = model_section(kind, args, steps)
    torch.manual_seed(seed)
    model = CIGT({"backbone": "cigt", "cigt": section}, task.info())
    started = time.perf_counter()
    history = fit(model, task, train_settings(args), device=torch.device("cpu"), seed=seed)
    seconds = time.perf_counter() - started
    result = evaluate(model, task, "test", 1000)
    row = {"model": kind, "seed": seed, "widths": section["widths"],
           "channels": section["channels"], "hidden": section["hidden"],
           "params": sum(p.numel() for p in model.parameters()),
           "test_accuracy": result.accuracy,
           "macs": float(result.flops.double().mean()) / 2,
           "val_accuracy": history[-1]["val_accuracy"],
           "final_train_loss": history[-1]["train_loss"], "train_seconds": seconds,
           "stats": result.stats}
    print(f"seed={seed} {kind:5s} test acc {row['test_accuracy']:.4f}  "
          f"MACs {row['macs']:,.0f}  ({seconds:.0f} s)", flush=True)
    sweep = []
    if kind == "cigt":
        for threshold in args.thresholds:
            set_inference_knobs(model, {"cigt.multipath_threshold": threshold})
            point = evaluate(model, task, "test", 1000)
            sweep.append({"seed": seed, "threshold": threshold, "test_accuracy": point.accuracy,
                          "macs": float(point.flops.double().mean()) / 2,
                          "mean_paths_layer1": point.stats["cigt.mean_paths.layer1"],
                          "mean_paths_layer2": point.stats["cigt.mean_paths.layer2"]})
    return {"row": row, "sweep": sweep, "seconds": time.perf_counter() - started}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def table(rows: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> str:
    thick_macs = statistics.mean(r["macs"] for r in rows if r["model"] == "thick")
    lines = ["| model | widths | channels | test accuracy (mean ± sd) | per seed | MACs / sample "
             "| MACs vs thick | parameters |", "|---|---|---|---|---|---|---|---|"]
    for kind in MODELS:
        group = [r for r in rows if r["model"] == kind]
        if not group:
            continue
        accs = [r["test_accuracy"] for r in group]
        macs = statistics.mean(r["macs"] for r in group)
        lines.append(f"| {kind} | {group[0]['widths']} | {group[0]['channels']} | "
                     f"{_mean_sd(accs)} | {', '.join(f'{a:.4f}' for a in accs)} | {macs:,.0f} | "
                     f"{macs / thick_macs:.2f} | {group[0]['params']:,} |")
    cigt = [r for r in rows if r["model"] == "cigt"]
    if cigt:
        stats = [r["stats"] for r in cigt]
        mi = "; ".join(
            f"layer {layer}: {statistics.mean(s[f'cigt.route_class_mi.layer{layer}'] for s in stats):.3f}"
            for layer in (1, 2))
        usage = "; ".join(
            f"layer {layer}: " + ", ".join(
                f"{statistics.mean(s[f'cigt.path_usage.layer{layer}.block{n}'] for s in stats):.2f}"
                for n in range(width))
            for layer, width in ((1, 2), (2, 4)))
        lines += ["", f"CIGT routes (test split, mean over seeds): I(route; class) in nats {mi} "
                      f"(at most ln 2 = 0.693 and ln 4 = 1.386); path usage {usage}."]
    if sweep:
        single = statistics.mean(r["macs"] for r in cigt) if cigt else float("nan")
        lines += ["", "CIGT multipath (same weights; a sample also runs every block whose "
                      "p(n|x) exceeds the threshold):", "",
                  "| threshold | test accuracy (mean ± sd) | MACs / sample | MACs vs single path "
                  "| blocks run, layer 1 | blocks run, layer 2 |", "|---|---|---|---|---|---|"]
        if cigt:
            lines.append(f"| 1.0 (single path) | {_mean_sd([r['test_accuracy'] for r in cigt])} | "
                         f"{single:,.0f} | 1.00 | 1.00 | 1.00 |")
        for threshold in sorted({r["threshold"] for r in sweep}, reverse=True):
            group = [r for r in sweep if r["threshold"] == threshold]
            macs = statistics.mean(r["macs"] for r in group)
            lines.append(
                f"| {threshold:g} | {_mean_sd([r['test_accuracy'] for r in group])} | "
                f"{macs:,.0f} | {macs / single:.2f} | "
                f"{statistics.mean(r['mean_paths_layer1'] for r in group):.2f} | "
                f"{statistics.mean(r['mean_paths_layer2'] for r in group):.2f} |")
    return "\n".join(lines)


def write(rows: list[dict[str, Any]], sweep: list[dict[str, Any]], settings: dict[str, Any],
          out: Path) -> str:
    text = table(rows, sweep)
    write_results(out, "CIGT", {"rows": rows, "multipath": sweep}, settings, text)
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--channels", type=int, default=32, help="conv channels of one block")
    parser.add_argument("--hidden", type=int, default=128, help="first FC width of one leaf")
    parser.add_argument("--router-dim", type=int, default=64)
    parser.add_argument("--balance", type=float, default=1.0, help="beta of the IG loss")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[1e-2, 1e-4, 1e-6, 0.0],
                        help="multipath thresholds evaluated besides 1.0 (single path)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use only this many training images (default: all)")
    parser.add_argument("--test-limit", type=int, default=None,
                        help="score on only the first this many test images (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 training and 1,000 test images, small blocks, one epoch, "
                             "one seed")
    parser.add_argument("--out", type=Path, default=HERE, help="where README.md and JSON go")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where finished models' results are kept (default runs/cigt, "
                             "runs/cigt_quick with --quick)")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = Path("runs/cigt_quick" if args.quick else "runs/cigt")
    if args.quick:
        args.seeds, args.epochs, args.train_limit, args.test_limit = [0], 1, 2000, 1000
        args.channels, args.hidden, args.router_dim, args.thresholds = 8, 32, 16, [0.1]
    task = load_task({"dataset": "fashion_mnist", "val_fraction": 0.1,
                      "train_limit": args.train_limit})
    if args.test_limit:
        x, y = task.test
        task = dataclasses.replace(task, test=(x[: args.test_limit], y[: args.test_limit]))
    # a finished (model, seed) is kept under --runs and reused: a stopped run resumes, and
    # processes given other --seeds add their rows to the same table
    units = Units(args.runs, {k: v for k, v in vars(args).items()
                              if k not in ("seeds", "out", "runs")})
    names = [f"{kind}-seed{seed}" for seed in args.seeds for kind in MODELS]
    progress = Progress(dict.fromkeys(names, 1), "models trained")
    for seed in args.seeds:
        for kind in MODELS:
            name = f"{kind}-seed{seed}"
            done = units.get(name)
            if done is None:
                done = run_model(task, kind, seed, args)
                units.put(name, done)
            progress.update(name, 1, done["seconds"])
    finished = sorted(units.all().values(), key=lambda u: (u["row"]["seed"],
                                                           MODELS.index(u["row"]["model"])))
    rows = [u["row"] for u in finished]
    sweep = [point for u in finished for point in u["sweep"]]
    command = "python experiments/cigt/run.py " + " ".join(argv if argv is not None else [])
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "train_size": len(task.train[1]), "test_size": len(task.test[1]),
                # the models' own time, whichever process (or earlier invocation) ran them
                "command": command.strip(), "seconds": sum(u["seconds"] for u in finished),
                "machine": machine()}
    text = write(rows, sweep, settings, args.out)
    print(text)
    return text


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
