"""Benchmark: the quick start's speed on a shared machine.

Runs the README's quick-start search (`condsearch search search_spaces/digits_early_exit.yaml`,
16 trials) twice in one run: on the quiet machine, then with `--load` busy processes (pure
Python loops, the load a shared machine's other users add) competing for the cores. Each search
is a fresh process in a fresh workdir; its CPU time (user + system, from the kernel's rusage of
that child) and wall time are reported. Each trial computes on the CPUs the process may use
(`search.cpus_per_trial` unset); `--threads N` sets `cpus_per_trial` instead, e.g. to compare
with torch's one-thread-per-core default.

Target (docs/architecture.md): the CPU time under load 4 within 1.5x of the quiet CPU time; the
wall time is printed beside it (it grows with the load by necessity: the cores are shared).

    python experiments/benchmarks/contention.py [--load 4] [--trials 16] [--threads N]
        [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from reporting import machine  # noqa: E402

SPACE = ROOT / "search_spaces" / "digits_early_exit.yaml"
#: the target: CPU time under load within this factor of the quiet CPU time
TARGET_RATIO = 1.5


def _spin() -> None:
    while True:
        pass


def run_search(trials: int, threads: int | None, quick: bool) -> dict[str, float]:
    """One quick-start search in a fresh workdir: its wall time, CPU time and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "condsearch", "search", str(SPACE), "--workdir",
                   str(Path(tmp) / "run"), "--trials", str(trials), "--quiet"]
        if threads is not None:
            command += ["--set", f"search.cpus_per_trial={threads}"]
        if quick:
            command += ["--set", "train.epochs=1", "--set", "task.train_limit=200"]
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"the search failed: {err[-2000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_mb": round(usage.ru_maxrss / 1024)}


def measure(load: int, trials: int, threads: int | None, quick: bool) -> dict[str, Any]:
    quiet = run_search(trials, threads, quick)
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(load)]
    for proc in spinners:
        proc.start()
    try:
        loaded = run_search(trials, threads, quick)
    finally:
        for proc in spinners:
            proc.terminate()
    ratio = loaded["cpu_s"] / quiet["cpu_s"]
    return {"quiet": quiet, "loaded": loaded, "load": load, "cpu_ratio": round(ratio, 2),
            "wall_ratio": round(loaded["wall_s"] / quiet["wall_s"], 2),
            "target": f"cpu_ratio <= {TARGET_RATIO}", "ok": ratio <= TARGET_RATIO}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=4, help="busy processes beside the search")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None,
                        help="search.cpus_per_trial (default: unset, the CPUs the process may use)")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 200 samples (a smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "contention.json")
    args = parser.parse_args()
    load_start = list(os.getloadavg())
    result = measure(args.load, args.trials, args.threads, args.quick)
    report = {"measured": time.strftime("%Y-%m-%d %H:%M"),
              "machine": {"description": machine(), "load_average_start": load_start,
                          "load_average_end": list(os.getloadavg())},
              "cores": os.cpu_count(), "trials": args.trials,
              "threads": args.threads or "cpus the process may use", "quick": args.quick,
              **result}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"| machine | {report['machine']['description']} |")
    print("| run | wall (s) | CPU (s) | peak MB |\n|---|---:|---:|---:|")
    for name in ("quiet", "loaded"):
        row = result[name]
        label = "quiet" if name == "quiet" else f"load {args.load}"
        print(f"| {label} | {row['wall_s']} | {row['cpu_s']} | {row['peak_mb']} |")
    mark = "✓" if result["ok"] else "✗"
    print(f"CPU time under load / quiet: {result['cpu_ratio']}x (target <= {TARGET_RATIO}x) "
          f"{mark}; wall {result['wall_ratio']}x")


if __name__ == "__main__":
    main()
