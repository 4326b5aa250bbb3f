"""The NAC module-dropping reproduction: accuracy, FLOPs and wall-clock as mediators are dropped.

Claim (Rahaman, Weiss et al., NeurIPS 2022, arXiv 2210.08031): a trained Neural Attentive
Circuit can drop modules at inference for an 8x speedup while losing less than 3% performance.
This script trains condsearch's NAC on Fashion-MNIST (all mediators run in training), then on
the same weights evaluates keep ratios 1, 1/2, 1/4, 1/8 of the mediators: test accuracy, mean
per-sample FLOPs, and the measured wall-clock speedup over keep 1 at batch 1 and at a large
batch. It does so for two read-outs: the output module reads the input modules and the
mediators (the official default), or the mediators only. It writes the table to `README.md`
(between the RESULTS markers) and the raw figures to `results.json`, both beside it (or in
`--out`).

    python experiments/nac/run.py                      # both read-outs, 2 epochs, seeds 0 and 1
    python experiments/nac/run.py --quick --out /tmp/x # 2,000 training images, 1 epoch (CI)

Timing: eval mode under `torch.inference_mode`, one thread, warm-up first; every repeat runs all
keep ratios back to back in alternating order (so drifts in machine load hit them alike), and
the figure is the median over repeats of time(keep 1) / time(keep r).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from condsearch import evaluate, fit, load_task
from condsearch.blocks import set_inference_knobs
from condsearch.cost import per_sample_flops
from condsearch.models._nac import NAC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reporting import machine, replace_block, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
SCALING_START, SCALING_END = "<!-- BATCH1 SCALING START -->", "<!-- BATCH1 SCALING END -->"
RATIOS = [1.0, 1 / 2, 1 / 4, 1 / 8]


READOUTS = {"inputs": True, "mediators": False}  # does the output module also read the inputs?


def model_cfg(args: argparse.Namespace, readout: str = "inputs") -> dict[str, Any]:
    return {"backbone": "nac", "nac": {
        "dim": args.dim, "input_modules": args.input_modules, "mediators": args.mediators,
        "layers": args.layers, "heads": 4, "signature_dim": 16, "code_dim": 32, "tau": args.tau,
        "mlp_ratio": 2.0, "patch_size": args.patch_size, "keep_ratio": 1.0, "dropout": 0.0,
        "readout_inputs": READOUTS[readout]}}


def train_cfg(args: argparse.Namespace) -> dict[str, Any]:
    return {"epochs": args.epochs, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.05,
            "warmup_fraction": 0.05, "eval_batch_size": 512}


def time_ratios(model: NAC, x: torch.Tensor, batch: int, repeats: int,
                steps: int) -> dict[float, list[float]]:
    """Seconds per forward pass of each keep ratio, one figure per repeat (interleaved)."""
    batches = [x[(i * batch) % x.shape[0]:][:batch] for i in range(steps)]
    seconds: dict[float, list[float]] = {r: [] for r in RATIOS}
    with torch.inference_mode():
        for ratio in RATIOS:  # warm-up, and the circuit constants of each ratio
            set_inference_knobs(model, {"nac.keep_ratio": ratio})
            for xb in batches[:3]:
                model(xb)
        for rep in range(repeats):
            order = RATIOS if rep % 2 == 0 else RATIOS[::-1]
            for ratio in order:
                set_inference_knobs(model, {"nac.keep_ratio": ratio})
                model(batches[0])  # the knob change rebuilds the constants: not timed
                started = time.perf_counter()
                for xb in batches:
                    model(xb)
                seconds[ratio].append((time.perf_counter() - started) / steps)
    set_inference_knobs(model, {"nac.keep_ratio": 1.0})
    return seconds


def run_seed(seed: int, readout: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = {"dataset": "fashion_mnist", "val_fraction": 0.1, "seed": seed}
    if args.train_limit:
        spec["train_limit"] = args.train_limit
    task = load_task(spec)
    if args.test_limit:
        task = dataclasses.replace(task, val=tuple(t[: args.test_limit] for t in task.val),
                                   test=tuple(t[: args.test_limit] for t in task.test))
    torch.manual_seed(seed)
    model = NAC(model_cfg(args, readout), task.info())
    started = time.perf_counter()
    history = fit(model, task, train_cfg(args), device=torch.device("cpu"), seed=seed)
    train_seconds = time.perf_counter() - started
    rows = []
    for ratio in RATIOS:
        set_inference_knobs(model, {"nac.keep_ratio": ratio})
        result = evaluate(model, task, "test", 512)
        rows.append({"keep_ratio": ratio, "test_accuracy": result.accuracy,
                     "mean_flops": float(result.flops.double().mean()), "stats": result.stats})
    x_test = task.test[0]
    timings = {str(b): time_ratios(model, x_test, b, args.repeats, s)
               for b, s in ((1, args.steps_batch1), (args.large_batch, args.steps_large))}
    for row in rows:
        row["seconds"] = {b: statistics.median(t[row["keep_ratio"]]) for b, t in timings.items()}
        row["speedup"] = {b: statistics.median(
            t1 / tr for t1, tr in zip(t[1.0], t[row["keep_ratio"]], strict=True))
            for b, t in timings.items()}
    print(f"read-out from {readout}, seed {seed}: " + "; ".join(
        f"keep {r['keep_ratio']:.3g} acc {r['test_accuracy']:.4f} FLOPs {r['mean_flops']:,.0f} "
        f"speedup b1 {r['speedup']['1']:.2f}x b{args.large_batch} "
        f"{r['speedup'][str(args.large_batch)]:.2f}x" for r in rows), flush=True)
    return {"seed": seed, "readout": readout, "history": history, "train_seconds": train_seconds,
            "rows": rows}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(runs: list[dict[str, Any]], large: int) -> str:
    lines = [f"| output reads | keep ratio | mediators run | test accuracy (mean ± sd) | per seed | change vs keep 1 "
             f"| mean FLOPs / sample | FLOPs reduction | speedup, batch 1 | speedup, batch {large} |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for readout in dict.fromkeys(run["readout"] for run in runs):
        lines += _rows([run for run in runs if run["readout"] == readout], readout, large)
    return "\n".join(lines)


def _rows(runs: list[dict[str, Any]], readout: str, large: int) -> list[str]:
    reads = "inputs + mediators" if READOUTS[readout] else "mediators only"
    lines = []
    base_acc = statistics.mean(run["rows"][0]["test_accuracy"] for run in runs)
    base_flops = statistics.mean(run["rows"][0]["mean_flops"] for run in runs)
    for i, ratio in enumerate(RATIOS):
        group = [run["rows"][i] for run in runs]
        accs = [r["test_accuracy"] for r in group]
        acc, sd = _mean_sd(accs)
        flops = statistics.mean(r["mean_flops"] for r in group)
        active = group[0]["stats"].get("nac.active_mediators", float("nan"))
        sp1 = statistics.mean(r["speedup"]["1"] for r in group)
        spl = statistics.mean(r["speedup"][str(large)] for r in group)
        lines.append(
            f"| {reads} | {ratio:.3g} | {active:.0f} | {acc:.4f} ± {sd:.4f} | "
            f"{', '.join(f'{a:.4f}' for a in accs)} | {100 * (acc - base_acc):+.2f} pts | "
            f"{flops:,.0f} | {base_flops / flops:.2f}× | {sp1:.2f}× | {spl:.2f}× |")
    return lines


def write(runs: list[dict[str, Any]], settings: dict[str, Any], out: Path) -> str:
    text = table(runs, settings["large_batch"])
    write_results(out, "NAC module dropping", {"runs": runs}, settings, text)
    return text


#: Circuits timed at batch 1 with random weights: the trained size, and a wider and larger one.
SCALING = {"dim 64, 8 input modules, 32 mediators (as trained)":
           {"dim": 64, "input_modules": 8, "mediators": 32},
           "dim 256, 16 input modules, 128 mediators":
           {"dim": 256, "input_modules": 16, "mediators": 128}}


def batch1_scaling(args: argparse.Namespace) -> str:
    """Batch-1 speedup of module dropping against circuit size (random weights, Fashion-MNIST
    test images): where per-op overhead stops hiding the rows that dropping removes."""
    started = time.perf_counter()
    task = load_task({"dataset": "fashion_mnist", "val_fraction": 0.1})
    x = task.test[0][: args.steps_batch1]
    rows = []
    for name, size in SCALING.items():
        torch.manual_seed(0)
        nac = {**model_cfg(args)["nac"], **size}
        model = NAC({"backbone": "nac", "nac": nac}, task.info()).eval()
        flops = {}
        for ratio in RATIOS:
            set_inference_knobs(model, {"nac.keep_ratio": ratio})
            flops[ratio] = float(per_sample_flops(model, x[:1])[1][0])
        seconds = time_ratios(model, x, 1, args.repeats, args.steps_batch1)
        for ratio in RATIOS:
            speedup = statistics.median(
                t1 / tr for t1, tr in zip(seconds[1.0], seconds[ratio], strict=True))
            flops_saving = 1 - flops[ratio] / flops[1.0]
            rows.append({"circuit": name, "keep_ratio": ratio, "flops": flops[ratio],
                         "ms": 1e3 * statistics.median(seconds[ratio]), "speedup": speedup,
                         "realized": (1 - 1 / speedup) / flops_saving if flops_saving else None})
    lines = ["| circuit | keep ratio | FLOPs / sample | ms / sample | speedup | realized |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        realized = "—" if r["realized"] is None else f"{r['realized']:.2f}"
        lines.append(f"| {r['circuit']} | {r['keep_ratio']:.3g} | {r['flops']:,.0f} | "
                     f"{r['ms']:.2f} | {r['speedup']:.2f}× | {realized} |")
    text = "\n".join(lines)
    settings = {"command": "python experiments/nac/run.py --batch1-scaling",
                "machine": machine(args.threads), "seconds": time.perf_counter() - started,
                "repeats": args.repeats, "steps": args.steps_batch1}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch1_scaling.json").write_text(
        json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    replace_block(args.out / "README.md", f"Command: `{settings['command']}` "
                  f"({settings['machine']}; {settings['seconds']:.0f} s)\n\n{text}",
                  "NAC module dropping", SCALING_START, SCALING_END)
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--readout", nargs="+", choices=sorted(READOUTS),
                        default=["inputs", "mediators"],
                        help="what the output module reads: input modules and mediators (the "
                             "official default), or mediators only")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=None, help="cap on training images")
    parser.add_argument("--test-limit", type=int, default=None,
                        help="cap on validation and test images")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--input-modules", type=int, default=8)
    parser.add_argument("--mediators", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--patch-size", type=int, default=7)
    parser.add_argument("--large-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9, help="timing repeats (median)")
    parser.add_argument("--steps-batch1", type=int, default=50, help="samples per batch-1 repeat")
    parser.add_argument("--steps-large", type=int, default=2, help="batches per large repeat")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="2,000 training, 500 validation and test images, 1 epoch, 1 seed, "
                             "short timing")
    parser.add_argument("--batch1-scaling", action="store_true",
                        help="only time batch-1 dropping on random-weight circuits of two sizes")
    parser.add_argument("--out", type=Path, default=HERE, help="where README.md and JSON go")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.train_limit, args.test_limit = [0], 1, 2000, 500
        args.repeats, args.steps_batch1, args.steps_large = 3, 10, 1
    torch.set_num_threads(args.threads)
    if args.batch1_scaling:
        text = batch1_scaling(args)
        print(text)
        return text
    started = time.perf_counter()
    runs = [run_seed(seed, readout, args) for readout in args.readout for seed in args.seeds]
    command = "python experiments/nac/run.py " + " ".join(argv if argv is not None else [])
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "models": {r: model_cfg(args, r) for r in args.readout},
                "train": train_cfg(args), "command": command.strip(),
                "seconds": time.perf_counter() - started, "machine": machine(args.threads)}
    text = write(runs, settings, args.out)
    print(text)
    return text


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
