"""Benchmark: per-sample FLOP counting against FlopCounterMode, and its time overhead.

For trained-looking early-exit transformers (random weights scaled so exits spread out) it
reports the share of samples whose counted FLOPs are within 1% of FlopCounterMode run on that
sample alone, and the time of a counted forward pass over a plain eval pass (target <= 1.5x).

    python experiments/benchmarks/flop_counting.py [--threads 1] [--repeats 15] [--out PATH]

Timing: plain (under `torch.inference_mode`) and counted passes alternate, so drifts in machine
load hit both alike; the figure is the median over repeats of counted / plain, in CPU time of
the timing thread (robust to other processes on a shared machine; with one torch thread it is
all the work) and in wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from condsearch.blocks.early_exit import certainty
from condsearch.cost import per_sample_flops, reference_counter
from condsearch.models import build_model

CASES = [  # name, input io, dim, depth, patch, batch
    ("digits-like 8x8, dim 32", [1, 8, 8], 32, 4, 2, 256),
    ("fashion-like 28x28, dim 64", [1, 28, 28], 64, 6, 4, 256),
    ("fashion-like 28x28, dim 128", [1, 28, 28], 128, 6, 7, 64),
]


def _model(shape, dim, depth, patch):
    io = {"input_kind": "image", "input_shape": shape, "num_classes": 10, "vocab_size": None}
    exit_cfg = {"enabled": True, "every": 1, "threshold": 0.5}
    arch = {"model": {"backbone": "token_transformer", "dim": dim, "depth": depth, "heads": 4,
                      "patch_size": patch, "components": {"early_exit": exit_cfg}}}
    torch.manual_seed(0)
    model = build_model(arch, io)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    return model


def _spread_threshold(model, x):
    model.train()
    with torch.no_grad():
        model(x)
    c = certainty(model.trunk._train_exit_logits[0], "confidence").sort().values
    model.eval()
    mid = c.numel() // 2
    model.trunk.threshold = float(c[mid - 1] + c[mid]) / 2


def _timed(fn):
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def _median_and_middle_half(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return statistics.median(values), q[0], q[2]


def run_case(name, shape, dim, depth, patch, batch, repeats=15):
    model = _model(shape, dim, depth, patch)
    x = torch.randn(batch, *shape)
    _spread_threshold(model, x)
    _, flops = per_sample_flops(model, x)
    alone = []
    for i in range(batch):
        with reference_counter() as counter, torch.no_grad():
            model(x[i : i + 1])
        alone.append(counter.get_total_flops())
    alone = torch.tensor(alone, dtype=torch.float64)
    within = float(((flops - alone).abs() <= 0.01 * alone).float().mean())

    def plain():
        with torch.inference_mode():
            model(x)

    def counted():
        per_sample_flops(model, x)

    plain(), counted()
    pairs = [(_timed(plain), _timed(counted)) for _ in range(repeats)]
    cpu_ratio = _median_and_middle_half([c[1] / p[1] for p, c in pairs])
    wall_ratio = _median_and_middle_half([c[0] / p[0] for p, c in pairs])
    return {"case": name, "batch": batch, "within_1pct": within,
            "distinct_costs": len(set(alone.tolist())),
            "plain_ms": statistics.median(p[0] for p, _ in pairs) * 1e3,
            "counted_ms": statistics.median(c[0] for _, c in pairs) * 1e3,
            "overhead": cpu_ratio[0], "overhead_middle_half": cpu_ratio[1:],
            "overhead_wall": wall_ratio[0], "overhead_wall_middle_half": wall_ratio[1:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("flop_counting.json")))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15, help="alternating timing repeats")
    parser.add_argument("--quick", action="store_true", help="3 repeats, first case only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started, load_start = time.time(), os.getloadavg()
    cases = CASES[:1] if args.quick else CASES
    repeats = 3 if args.quick else args.repeats
    rows = [run_case(*case, repeats=repeats) for case in cases]
    print(f"{'case':32} {'batch':>5} {'within 1%':>10} {'costs':>6} {'plain ms':>9} "
          f"{'counted ms':>11} {'overhead':>9} {'(wall)':>7}  target")
    for r in rows:
        ok = "ok" if r["overhead"] <= 1.5 and r["within_1pct"] >= 0.99 else "MISS"
        print(f"{r['case']:32} {r['batch']:>5} {r['within_1pct']:>10.1%} {r['distinct_costs']:>6} "
              f"{r['plain_ms']:>9.2f} {r['counted_ms']:>11.2f} {r['overhead']:>8.2f}x "
              f"{r['overhead_wall']:>6.2f}x  <=1.5x {ok}")
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cores": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "load_average_start": load_start,
                          "load_average_end": os.getloadavg()},
              "quick": args.quick, "repeats": repeats, "seconds": time.time() - started,
              "definitions": {"overhead": "median over repeats of counted / plain CPU time of "
                              "the timing thread; overhead_wall the same in wall time"},
              "targets": {"within_1pct": 0.99, "overhead": 1.5}, "results": rows}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
