"""Benchmark: does sharding a data-parallel trial's evaluation over its ranks pay?

The decision of docs/design/workers-per-trial.md, section 3. Two ranks (processes joined in a
gloo group, `--threads` torch threads each) train a candidate for 2 epochs data-parallel
(`condsearch.train.fit(..., dist=...)`) and evaluate it as a trial does: the validation accuracy
after each epoch, the final counted evaluation (accuracy and per-sample FLOPs) and a 3-setting
knob sweep. Each candidate runs with its evaluations on rank 0 alone (`eval_ranks=1`: the other
rank waits in the merge) and sharded by whole batches over both ranks (`eval_ranks=2`),
alternately, `--repeats` times; the medians are reported. Loading the data and starting the
processes are not timed; neither is batch-1 latency, which rank 0 measures alone either way.
Both settings must give the same accuracy and FLOPs (the sharded evaluation is exact).

Rule: shard (eval_ranks = workers) if that saves >= 5% of a 2-epoch trial's wall time for any
candidate; otherwise evaluate on rank 0 only.

Candidates: the costliest and a median candidate of search_spaces/digits_moe.yaml (357
validation samples, evaluation batches of 256 and 101), and an early-exit transformer of
search_spaces/fashion_early_exit.yaml on Fashion-MNIST (14,000 validation images, 55 batches
of 256; 14,000 training images), skipped when Fashion-MNIST is not installed. Run it on 2 quiet
cores.

    python experiments/benchmarks/data_parallel.py [--repeats 3] [--threads 1] [--quick]
        [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from reporting import machine  # noqa: E402

#: shard when it saves at least this share of a 2-epoch trial's wall time
TARGET_SAVING = 0.05
WORLD = 2
DIGITS = {"dataset": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2}
FASHION = {"dataset": "fashion_mnist", "seed": 0, "val_fraction": 0.2, "train_limit": 14000}
MOE_SWEEP = {"moe.eval_capacity_factor": [0.5, 1.0, 1.5]}
DIGITS_TRAIN = {"epochs": 2, "batch_size": 32, "lr": 5e-3}


def transformer(dim: int, depth: int, patch: int, components: dict, **keys: Any) -> dict:
    return {"backbone": "token_transformer", "dim": dim, "depth": depth, "heads": 4,
            "mlp_ratio": 2.0, "patch_size": patch, "components": components, **keys}


#: name -> (task, model section, train section, sweep)
CANDIDATES: dict[str, tuple[dict, dict, dict, dict]] = {
    "digits_moe costliest": (DIGITS, transformer(32, 4, 2, {"moe": {
        "enabled": True, "experts": 8, "top_k": 2, "capacity_factor": 2.0,
        "router_noise": 0.5, "aux_loss_weight": 0.1, "every": 1}}), DIGITS_TRAIN, MOE_SWEEP),
    "digits_moe median": (DIGITS, transformer(32, 3, 4, {"moe": {
        "enabled": True, "experts": 4, "top_k": 1, "capacity_factor": 1.5,
        "router_noise": 0.25, "aux_loss_weight": 0.01, "every": 2}}), DIGITS_TRAIN, MOE_SWEEP),
    "fashion early exit": (FASHION, transformer(64, 6, 7, {"early_exit": {
        "enabled": True, "every": 2, "threshold": 0.9}}),
        {"epochs": 2, "batch_size": 256, "lr": 1e-3, "eval_batch_size": 256},
        {"early_exit.threshold": [0.6, 0.8, 0.95]}),
}
#: --quick: the digits candidates on 200 training samples, 1 epoch, 1 repeat (a smoke run)
QUICK_TRAIN_LIMIT = 200


def _rank(rank: int, store: str, out: str, case: dict[str, Any]) -> None:
    """One rank of one trial: fit, then evaluate and sweep; its timings to `out` as JSON."""
    try:
        import torch

        torch.set_num_threads(case["threads"])
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                             world_size=WORLD, timeout=timedelta(seconds=600))
        import condsearch.train._fit as fit_module
        from condsearch.data import load_task
        from condsearch.models import build_model
        from condsearch.train import evaluate, fit, seed_everything, sweep_knobs
        from condsearch.train._distributed import Dist

        task = load_task(case["task"])
        seed_everything(0)
        model = build_model({"model": case["model"]}, task)
        dist = Dist(rank, WORLD, eval_ranks=case["eval_ranks"])
        batch = int(case["train"].get("eval_batch_size", 256))
        accuracy_s = [0.0]
        accuracy = fit_module.accuracy

        def timed_accuracy(*args: Any, **kwargs: Any) -> float:
            started = time.perf_counter()
            try:
                return accuracy(*args, **kwargs)
            finally:
                accuracy_s[0] += time.perf_counter() - started

        fit_module.accuracy = timed_accuracy  # the per-epoch validation pass inside fit
        dist.barrier()
        start = time.perf_counter()
        fit(model, task, case["train"], device=torch.device("cpu"), seed=0, dist=dist)
        fitted = time.perf_counter()
        evaluation = evaluate(model, task, "val", batch, dist=dist)
        evaluated = time.perf_counter()
        points = sweep_knobs(model, task, case["sweep"], "val", batch, dist=dist)
        dist.barrier()
        end = time.perf_counter()
        result = {
            "trial_s": end - start, "epoch_accuracy_s": accuracy_s[0],
            "train_s": fitted - start - accuracy_s[0], "evaluate_s": evaluated - fitted,
            "sweep_s": end - evaluated,
            "metrics": [evaluation.summary(), *[e.summary() for _, e in points]],
        }
        torch.distributed.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported by the parent
        result = {"error": traceback.format_exc()}
    Path(out).write_text(json.dumps(result))


def run_trial(case: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """One data-parallel trial on WORLD fresh processes; rank 0's timings (every rank ends at
    the same barrier) and the metrics."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"rank{r}.json") for r in range(WORLD)]
        procs = [ctx.Process(target=_rank, args=(r, str(Path(tmp) / "store"), outs[r], case))
                 for r in range(WORLD)]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(1.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
                raise RuntimeError(f"a rank ran past {timeout:.0f} s")
        results = [json.loads(Path(out).read_text()) for out in outs]
    for rank, result in enumerate(results):
        if "error" in result:
            raise RuntimeError(f"rank {rank} failed:\n{result['error']}")
    return results[0]


PHASES = ("trial_s", "train_s", "epoch_accuracy_s", "evaluate_s", "sweep_s")


def measure(name: str, repeats: int, threads: int, quick: bool) -> dict[str, Any]:
    task, model, train, sweep = CANDIDATES[name]
    if quick:
        task, train = {**task, "train_limit": QUICK_TRAIN_LIMIT}, {**train, "epochs": 1}
    runs: dict[int, list[dict[str, Any]]] = {1: [], WORLD: []}
    for repeat in range(repeats):
        order = (1, WORLD) if repeat % 2 == 0 else (WORLD, 1)  # alternate: drift hits both
        for eval_ranks in order:
            case = {"task": task, "model": model, "train": train, "sweep": sweep,
                    "eval_ranks": eval_ranks, "threads": threads}
            runs[eval_ranks].append(run_trial(case))
    medians = {f"eval_ranks={k}": {p: round(statistics.median(r[p] for r in v), 3)
                                   for p in PHASES} for k, v in runs.items()}
    alone, sharded = medians["eval_ranks=1"], medians[f"eval_ranks={WORLD}"]
    evaluation = ("epoch_accuracy_s", "evaluate_s", "sweep_s")
    eval_alone, eval_sharded = (sum(m[p] for p in evaluation) for m in (alone, sharded))
    same = all(r["metrics"] == runs[1][0]["metrics"] for v in runs.values() for r in v)
    saving = 1 - sharded["trial_s"] / alone["trial_s"]
    return {**medians, "evaluation_s": {"eval_ranks=1": round(eval_alone, 3),
                                        f"eval_ranks={WORLD}": round(eval_sharded, 3)},
            "evaluation_saving": round(1 - eval_sharded / eval_alone, 3),
            "trial_saving": round(saving, 3), "same_metrics": same,
            "shard": saving >= TARGET_SAVING}


def fashion_installed() -> bool:
    from condsearch.data import TaskError, load_task

    try:
        load_task({**FASHION, "train_limit": 10})
    except TaskError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--quick", action="store_true",
                        help=f"digits only, {QUICK_TRAIN_LIMIT} training samples, 1 epoch, "
                             "1 repeat (a smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "data_parallel.json")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    names = [n for n in CANDIDATES if n.startswith("digits")]
    skipped = []
    if not args.quick:
        if fashion_installed():
            names.append("fashion early exit")
        else:
            skipped.append("fashion early exit (Fashion-MNIST is not installed)")
    load_start = list(os.getloadavg())
    results = {name: measure(name, repeats, args.threads, args.quick) for name in names}
    shard = any(r["shard"] for r in results.values())
    report = {"measured": time.strftime("%Y-%m-%d %H:%M"),
              "machine": {"description": machine(args.threads),
                          "load_average_start": load_start,
                          "load_average_end": list(os.getloadavg())},
              "cores": os.cpu_count(), "world": WORLD, "threads_per_rank": args.threads,
              "repeats": repeats, "quick": args.quick, "skipped": skipped,
              "candidates": results,
              "target": f"shard when trial_saving >= {TARGET_SAVING:.0%} for any candidate",
              "decision": f"eval_ranks={WORLD} (sharded)" if shard else "eval_ranks=1 (rank 0)",
              "ok": all(r["same_metrics"] for r in results.values())}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"| machine | {report['machine']['description']} |")
    print(f"{WORLD} ranks, {args.threads} thread(s) each, median of {repeats}"
          + (" (quick)" if args.quick else ""))
    print("| candidate | evaluation on | trial (s) | train (s) | epoch accuracy (s) | "
          "evaluate (s) | sweep (s) |\n|---|---|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        for key in ("eval_ranks=1", f"eval_ranks={WORLD}"):
            row = result[key]
            where = "rank 0" if key == "eval_ranks=1" else f"{WORLD} ranks"
            print(f"| {name} | {where} | " + " | ".join(f"{row[p]:.2f}" for p in PHASES) + " |")
    print("| candidate | evaluation saving | trial saving | same metrics |\n|---|---:|---:|---|")
    for name, result in results.items():
        mark = "✓" if result["same_metrics"] else "✗"
        print(f"| {name} | {result['evaluation_saving']:.1%} | {result['trial_saving']:.1%} | "
              f"{mark} |")
    for line in skipped:
        print(f"skipped: {line}")
    print(f"decision: {report['decision']} ({report['target']})")


if __name__ == "__main__":
    main()
