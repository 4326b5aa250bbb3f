"""The AdaTape parity reproduction: AdaTape against a dense transformer of the same width and depth.

Task (Xue et al., 2023): x ∈ {1, 0, −1}^L, label = (number of +1 entries) mod 2. The paper's
claim: a standard transformer fails at parity and AdaTape solves it. This script trains both at
each length and seed, scores them on the held-out test split, and writes the table to
`README.md` (between the RESULTS markers) and the raw figures to `results.json`, both beside it.

    python experiments/parity/run.py                  # L = 8, 16, 32; seeds 0, 1, 2
    python experiments/parity/run.py --quick          # L = 8, one seed, tiny budget (CI)
    python experiments/parity/run.py --lengths 8 16 --seeds 0 1 2 3 4   # resumable

Each finished (length, seed, model) is kept under `--runs` (default `runs/parity`) and reused
by a rerun with the same settings, so a stopped run resumes, and runs split by `--seeds` or
`--lengths` over processes add up: each writes the table of every finished run of its settings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from condsearch import build_model, evaluate, fit, load_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reporting import machine, write_results  # noqa: E402
from resumable import Progress, Units  # noqa: E402

HERE = Path(__file__).resolve().parent


def arch(length: int, adatape: bool, epochs: int, dim: int, depth: int) -> dict[str, Any]:
    """Both models share dim, depth and training; AdaTape adds an input-driven tape bank (one
    bank token per sequence position, as in the paper's parity setup)."""
    components = {"adatape": {"enabled": True, "bank": "input", "max_tape": min(8, length // 2),
                              "tokens_per_step": 2, "theta": 2.0, "ponder_weight": 0.01,
                              "insert_after": 0}} if adatape else {}
    return {"model": {"backbone": "token_transformer", "dim": dim, "depth": depth, "heads": 4,
                      "mlp_ratio": 2.0, "components": components},
            "train": {"epochs": epochs, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.01,
                      "warmup_fraction": 0.05, "eval_batch_size": 512}}


def run_one(length: int, seed: int, adatape: bool, size: int, epochs: int, dim: int,
            depth: int) -> dict[str, Any]:
    task = load_task({"dataset": "parity", "length": length, "size": size, "seed": seed,
                      "val_fraction": 0.1, "test_fraction": 0.2})
    torch.manual_seed(seed)
    spec = arch(length, adatape, epochs, dim, depth)
    model = build_model(spec, task)
    started = time.perf_counter()
    history = fit(model, task, spec["train"], device=torch.device("cpu"), seed=seed)
    result = evaluate(model, task, "test", 512)
    return {"length": length, "seed": seed, "model": "adatape" if adatape else "dense",
            "test_accuracy": result.accuracy, "mean_flops": float(result.flops.double().mean()),
            "tape_length_mean": result.stats.get("adatape.tape_length_mean"),
            "tape_length_var": result.stats.get("adatape.tape_length_var"),
            "final_train_loss": history[-1]["train_loss"], "train_seconds":
            time.perf_counter() - started}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| L | model | test accuracy (mean ± sd over seeds) | per seed | mean FLOPs / sample "
             "| mean tape length |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["length"], r["model"]) for r in rows}, key=lambda k: (k[0], k[1] != "dense"))
    for length, name in keys:
        group = [r for r in rows if r["length"] == length and r["model"] == name]
        accs = [r["test_accuracy"] for r in group]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        tape = [r["tape_length_mean"] for r in group if r["tape_length_mean"] is not None]
        flops = statistics.mean(r["mean_flops"] for r in group)
        lines.append(f"| {length} | {name} | {statistics.mean(accs):.3f} ± {sd:.3f} | "
                     f"{', '.join(f'{a:.3f}' for a in accs)} | {flops:,.0f} | "
                     f"{f'{statistics.mean(tape):.2f}' if tape else '—'} |")
    return "\n".join(lines)


def write(rows: list[dict[str, Any]], settings: dict[str, Any], out: Path) -> str:
    text = table(rows)
    write_results(out, "Parity", {"rows": rows}, settings, text)
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=20000, help="samples generated per run")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--quick", action="store_true",
                        help="L=8, one seed, a small model and a one-epoch budget")
    parser.add_argument("--out", type=Path, default=HERE, help="where README.md and JSON go")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where finished runs' results are kept (default runs/parity, "
                             "runs/parity_quick with --quick)")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = Path("runs/parity_quick" if args.quick else "runs/parity")
    if args.quick:
        args.lengths, args.seeds, args.size, args.epochs = [8], [0], 1000, 1
        args.dim, args.depth = 32, 2
    # a finished (length, seed, model) is kept under --runs and reused: a stopped run resumes,
    # and processes given other --seeds or --lengths add their rows to the same table
    units = Units(args.runs, {k: v for k, v in vars(args).items()
                              if k not in ("lengths", "seeds", "out", "runs")})
    plan = [(length, seed, adatape) for length in args.lengths for seed in args.seeds
            for adatape in (False, True)]
    names = [f"L{length}-seed{seed}-{'adatape' if adatape else 'dense'}"
             for length, seed, adatape in plan]
    progress = Progress(dict.fromkeys(names, 1), "runs")
    for name, (length, seed, adatape) in zip(names, plan):
        row = units.get(name)
        if row is None:
            row = run_one(length, seed, adatape, args.size, args.epochs, args.dim, args.depth)
            units.put(name, row)
            print(f"L={length} seed={seed} {row['model']:8s} test acc {row['test_accuracy']:.3f}"
                  f"  FLOPs {row['mean_flops']:,.0f}  ({row['train_seconds']:.0f} s)", flush=True)
        progress.update(name, 1, row["train_seconds"])
    rows = sorted(units.all().values(), key=lambda r: (r["length"], r["seed"], r["model"]))
    command = "python experiments/parity/run.py " + " ".join(argv if argv is not None else [])
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                # the runs' own time, whichever process (or earlier invocation) ran them
                "command": command.strip(), "seconds": sum(r["train_seconds"] for r in rows),
                "machine": machine()}
    text = write(rows, settings, args.out)
    print(text)
    return text


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
