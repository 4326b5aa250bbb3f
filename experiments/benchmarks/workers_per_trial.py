"""Benchmark: time per epoch of one candidate trained by 1 and by 2 data-parallel workers.

What `search.workers_per_trial` buys on a machine: a candidate of `data_parallel.py` (by
default the median candidate of search_spaces/digits_moe.yaml, on its full training split;
`--candidate` picks another) trained for `--epochs` epochs, each epoch timed from `fit`'s epoch callback
(training plus the per-epoch validation accuracy; the first epoch, which warms caches, is not
counted) in three layouts on the same cores:

- `1 worker x 1 thread`: a trial as `concurrency: 2` runs each of two (one core each);
- `1 worker x 2 threads`: one trial given both cores (`cpus_per_trial: 2`);
- `2 workers x 1 thread`: `workers_per_trial: 2`, two gloo processes (what each Ray Train worker
  runs; Ray's own start-up per trial is not included, see the README's "Scaling out").

The workers are processes forked from this one (no Ray). Run it on quiet cores; on a shared
machine the figures move with the load (the load average is recorded).

    python experiments/benchmarks/workers_per_trial.py [--epochs 4] [--repeats 2]
        [--candidate NAME] [--out PATH]
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
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from data_parallel import CANDIDATES  # noqa: E402
from reporting import machine  # noqa: E402

CANDIDATE = "digits_moe median"
#: layout -> (workers, threads per worker)
LAYOUTS = {"1 worker x 1 thread": (1, 1), "1 worker x 2 threads": (1, 2),
           "2 workers x 1 thread": (2, 1)}


def _rank(rank: int, world: int, threads: int, epochs: int, store: str, out: str,
          candidate: str) -> None:
    """One worker: fit the candidate for `epochs` epochs; the wall time of each to `out`."""
    try:
        import torch

        torch.set_num_threads(threads)
        from condsearch.data import load_task
        from condsearch.models import build_model
        from condsearch.train import fit, seed_everything
        from condsearch.train._distributed import SINGLE, Dist

        dist = SINGLE
        if world > 1:
            torch.distributed.init_process_group("gloo", init_method=f"file://{store}",
                                                 rank=rank, world_size=world,
                                                 timeout=timedelta(seconds=600))
            dist = Dist(rank, world)
        task_spec, section, train, _ = CANDIDATES[candidate]
        task = load_task(task_spec)
        seed_everything(0)
        model = build_model({"model": section}, task)
        dist.barrier()
        times, cpu = [time.perf_counter()], [time.process_time()]

        def tick(*_: Any) -> None:
            times.append(time.perf_counter())
            cpu.append(time.process_time())

        fit(model, task, {**train, "epochs": epochs}, device=torch.device("cpu"), seed=0,
            dist=dist, on_epoch=tick)
        result = {"epoch_s": [b - a for a, b in zip(times, times[1:])],
                  "cpu_s": [b - a for a, b in zip(cpu, cpu[1:])],
                  "train_samples": int(task.train[0].shape[0])}
        if world > 1:
            torch.distributed.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported by the parent
        result = {"error": traceback.format_exc()}
    Path(out).write_text(json.dumps(result))


def run(world: int, threads: int, epochs: int, candidate: str) -> dict[str, Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"rank{r}.json") for r in range(world)]
        procs = [ctx.Process(target=_rank, args=(r, world, threads, epochs,
                                                 str(Path(tmp) / "store"), outs[r], candidate))
                 for r in range(world)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(1800)
        results = [json.loads(Path(out).read_text()) for out in outs]
    for rank, result in enumerate(results):
        if "error" in result:
            raise RuntimeError(f"rank {rank} failed:\n{result['error']}")
    # CPU seconds of every worker together, epoch by epoch
    return {**results[0], "cpu_s": [sum(r["cpu_s"][e] for r in results)
                                    for e in range(len(results[0]["cpu_s"]))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--candidate", choices=list(CANDIDATES), default=CANDIDATE)
    parser.add_argument("--out", type=Path, default=HERE / "workers_per_trial.json")
    args = parser.parse_args()
    load_start = list(os.getloadavg())
    epoch_s: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    cpu_s: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    samples = 0
    for _ in range(args.repeats):
        for name, (world, threads) in LAYOUTS.items():
            result = run(world, threads, args.epochs, args.candidate)
            epoch_s[name].extend(result["epoch_s"][1:])  # the first epoch warms up
            cpu_s[name].extend(result["cpu_s"][1:])
            samples = result["train_samples"]
    medians = {name: round(statistics.median(v), 3) for name, v in epoch_s.items()}
    cpu = {name: round(statistics.median(v), 3) for name, v in cpu_s.items()}
    base = medians["1 worker x 1 thread"]
    report = {"measured": time.strftime("%Y-%m-%d %H:%M"),
              "machine": {"description": machine(2), "load_average_start": load_start,
                          "load_average_end": list(os.getloadavg())},
              "cores": os.cpu_count(), "candidate": args.candidate, "train_samples": samples,
              "epochs": args.epochs, "repeats": args.repeats, "epoch_s": medians,
              "cpu_s_all_workers": cpu,
              "speedup_vs_1x1": {n: round(base / s, 2) for n, s in medians.items()}}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"| machine | {report['machine']['description']} | load "
          f"{load_start[0]:.1f} -> {report['machine']['load_average_end'][0]:.1f} |")
    print(f"{args.candidate}, {samples} training samples, median epoch of {args.repeats} x "
          f"{args.epochs - 1}\n| layout | epoch (s) | speed-up | CPU s, all workers |\n"
          "|---|---:|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {report['speedup_vs_1x1'][name]:.2f}x | "
              f"{cpu[name]:.2f} |")


if __name__ == "__main__":
    main()
