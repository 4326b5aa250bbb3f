"""Benchmark: per-sample FLOP counting against FlopCounterMode, and its time overhead.

For trained-looking early-exit transformers (random weights scaled so exits spread out) it
reports the share of samples whose counted FLOPs are within 1% of FlopCounterMode run on that
sample alone, and the wall time of a counted forward pass over a plain eval pass (target <= 1.5x).

    python experiments/benchmarks/flop_counting.py [--out experiments/benchmarks/flop_counting.json]
"""

from __future__ import annotations

import argparse
import json
import platform
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


def _seconds(fn, repeats=10):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run_case(name, shape, dim, depth, patch, batch):
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
    with torch.inference_mode():
        plain = _seconds(lambda: model(x))
    counted = _seconds(lambda: per_sample_flops(model, x))
    return {"case": name, "batch": batch, "within_1pct": within,
            "distinct_costs": len(set(alone.tolist())), "plain_ms": plain * 1e3,
            "counted_ms": counted * 1e3, "overhead": counted / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("flop_counting.json")))
    args = parser.parse_args()
    rows = [run_case(*case) for case in CASES]
    print(f"{'case':32} {'batch':>5} {'within 1%':>10} {'costs':>6} {'plain ms':>9} "
          f"{'counted ms':>11} {'overhead':>9}  target")
    for r in rows:
        ok = "ok" if r["overhead"] <= 1.5 and r["within_1pct"] >= 0.99 else "MISS"
        print(f"{r['case']:32} {r['batch']:>5} {r['within_1pct']:>10.1%} {r['distinct_costs']:>6} "
              f"{r['plain_ms']:>9.2f} {r['counted_ms']:>11.2f} {r['overhead']:>8.2f}x  <=1.5x {ok}")
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "torch": torch.__version__, "threads": torch.get_num_threads()},
              "targets": {"within_1pct": 0.99, "overhead": 1.5}, "results": rows}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
