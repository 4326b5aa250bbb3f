"""NNI's TPE tuner against condsearch's default sampler, at equal trials, by hypervolume.

On `search_spaces/digits_early_exit.yaml` (its early-exit threshold sweep included), each
sampler runs real searches for several seeds:

- `tpe`: condsearch's default sampler (Optuna's multivariate, grouped, multi-objective TPE);
- `nni_tpe`: NNI's TPE tuner through `sampler: {nni: tpe}`, with NNI's default arguments
  (its first 20 proposals are random), told the folded score (accuracy minus the penalty on
  FLOPs over the first trial's FLOPs);
- `nni_tpe_startup10`: the same with `tpe_args: {n_startup_jobs: 10}`, the warm-up length of
  Optuna's TPE.

The hypervolume of each search's validation front (every trained and derived point) is taken
after each trained trial against one fixed reference point for all searches: accuracy 0 and
the FLOPs of the largest architecture of the space (early exit off), and divided by that box's
area (1.0 would be accuracy 1 at no cost). It writes `nni_comparison.json` and the table in
`NNI.md` (between the RESULTS markers).

    python experiments/search_quality/nni_comparison.py               # 3 seeds x 20 trials
    python experiments/search_quality/nni_comparison.py --trials 3 --seeds 0 --out /tmp/nni

Searches run in `--runs DIR/<config>-seed<k>`; a finished one is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import condsearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reporting import machine, replace_block  # noqa: E402

HERE = Path(__file__).resolve().parent
SPACE = HERE.parents[1] / "search_spaces" / "digits_early_exit.yaml"
SAMPLERS: dict[str, dict[str, Any]] = {
    "tpe": {"name": "tpe"},
    "nni_tpe": {"nni": "tpe"},
    "nni_tpe_startup10": {"nni": "tpe", "options": {"tpe_args": {"n_startup_jobs": 10}}},
}
DIRECTIONS = ["maximize", "minimize"]


def space_doc(config: str, epochs: int) -> dict[str, Any]:
    """The shipped space with the study's training budget and the config's sampler."""
    doc = yaml.safe_load(SPACE.read_text())
    doc["name"] = f"nni_comparison_{config}"
    doc["train"]["epochs"] = epochs
    doc["sampler"] = SAMPLERS[config]
    return doc


def largest_flops(epochs: int) -> float:
    """Mean per-sample FLOPs of the space's largest architecture on the validation split."""
    import torch

    space = condsearch.load_space(SPACE, [f"train.epochs={epochs}"])
    task = condsearch.load_task(space.task)
    dists = space.distributions()
    arch = {"model": {"backbone": "token_transformer", "dim": max(dists["model.dim"].values()),
                      "depth": dists["model.depth"].hi, "heads": 4,
                      "mlp_ratio": max(dists["model.mlp_ratio"].values()),
                      "patch_size": min(dists["model.patch_size"].values()), "dropout": 0.0,
                      "components": {c: {"enabled": False} for c in
                                     ("adatape", "early_exit", "moe", "token_selection")}},
            "train": {}}
    torch.manual_seed(0)
    model = condsearch.build_model(arch, task).eval()
    with torch.no_grad():
        _, flops = condsearch.per_sample_flops(model, task.val[0][:256])
    return float(flops.mean())


def run_search(config: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run (or reuse) one search; return its workdir and wall time."""
    workdir = args.runs / f"{config}-seed{seed}"
    done = workdir / "done.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info["trials"] == args.trials and info["epochs"] == args.epochs:
            return info
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    path = workdir / "space.yaml"
    path.write_text(yaml.safe_dump(space_doc(config, args.epochs), sort_keys=False))
    print(f"[{time.strftime('%H:%M:%S')}] {config} seed {seed}: {args.trials} trials", flush=True)
    summary = condsearch.search(str(path), trials=args.trials, workdir=workdir, seed=seed,
                                progress=False)
    info = {"workdir": str(workdir), "trials": args.trials, "epochs": args.epochs,
            "seconds": summary.seconds, "completed": summary.completed,
            "failed": summary.failed}
    done.write_text(json.dumps(info))
    print(f"    {summary.completed} completed, {summary.failed} failed, "
          f"{summary.seconds:.0f} s", flush=True)
    return info


def hypervolume_curve(workdir: Path, flops_ref: float) -> tuple[list[float], int]:
    """Normalised hypervolume after each trained trial, and the final front's size."""
    from condsearch.orchestrate import all_points, hypervolume, non_dominated

    _, points = all_points(workdir)
    trained = sorted(p.trial for p in points if not p.derived)
    curve, size = [], 0
    for k in range(1, len(trained) + 1):
        allowed = set(trained[:k])
        values = [[p.values["accuracy"], p.values["flops"]] for p in points
                  if p.trial in allowed and p.feasible]
        front = [values[i] for i in non_dominated(values, DIRECTIONS)]
        size = len(front)
        curve.append(hypervolume(front, DIRECTIONS, [0.0, flops_ref]) / flops_ref
                     if front else 0.0)
    return curve, size


def summarise(runs: dict[str, dict[int, dict[str, Any]]], checkpoints: list[int]
              ) -> dict[str, Any]:
    """Per sampler: final hypervolume per seed, its mean / min / max at each checkpoint."""
    out: dict[str, Any] = {}
    for config, by_seed in runs.items():
        at = {n: [r["curve"][n - 1] for r in by_seed.values() if len(r["curve"]) >= n]
              for n in checkpoints}
        out[config] = {
            "hypervolume_by_seed": {str(s): r["curve"][-1] for s, r in by_seed.items()},
            "hypervolume_mean": {str(n): statistics.mean(v) for n, v in at.items() if v},
            "hypervolume_min": {str(n): min(v) for n, v in at.items() if v},
            "hypervolume_max": {str(n): max(v) for n, v in at.items() if v},
            "front_size_by_seed": {str(s): r["front_size"] for s, r in by_seed.items()},
            "failed": sum(r["failed"] for r in by_seed.values()),
            "seconds_by_seed": {str(s): r["seconds"] for s, r in by_seed.items()},
        }
    return out


def table(results: dict[str, Any], seeds: list[int], checkpoints: list[int]) -> str:
    """The markdown table: final hypervolume per seed, mean at each checkpoint, front sizes."""
    head = ["sampler", *(f"HV seed {s}" for s in seeds), *(f"mean HV @ {n}" for n in checkpoints),
            "front size per seed", "wall s (all seeds)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for config, e in results["samplers"].items():
        cells = [f"`{config}`", *(f"{e['hypervolume_by_seed'][str(s)]:.4f}" for s in seeds),
                 *(f"{e['hypervolume_mean'].get(str(n), float('nan')):.4f}" for n in checkpoints),
                 " / ".join(str(e["front_size_by_seed"][str(s)]) for s in seeds),
                 f"{sum(e['seconds_by_seed'].values()):.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns what it writes to nni_comparison.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(SAMPLERS), default=list(SAMPLERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--runs", type=Path, default=Path("runs/nni_comparison"))
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    flops_ref = largest_flops(args.epochs)
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for seed in args.seeds:
        for config in args.configs:
            info = run_search(config, seed, args)
            curve, size = hypervolume_curve(Path(info["workdir"]), flops_ref)
            runs.setdefault(config, {})[seed] = {**info, "curve": curve, "front_size": size}
    checkpoints = [n for n in args.checkpoints if n <= args.trials]
    given = " ".join(sys.argv[1:] if argv is None else argv)
    settings = {
        "command": f"python experiments/search_quality/nni_comparison.py {given}".strip(),
        "machine": machine(), "seconds": time.perf_counter() - started,
        "space": str(SPACE.relative_to(HERE.parents[1])), "trials": args.trials,
        "epochs": args.epochs, "seeds": args.seeds, "samplers": {c: SAMPLERS[c] for c in runs},
        "reference": {"accuracy": 0.0, "flops": flops_ref},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    results = {"settings": settings, "samplers": summarise(runs, checkpoints),
               "curves": {c: {str(s): r["curve"] for s, r in by.items()} for c, by in runs.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nni_comparison.json").write_text(json.dumps(results, indent=2) + "\n")
    body = (f"Command: `{settings['command']}` ({settings['machine']}; "
            f"{settings['seconds']:.0f} s in all). Reference point: accuracy 0, FLOPs "
            f"{flops_ref:,.0f}; hypervolume divided by the reference box's area.\n\n"
            + table(results, args.seeds, checkpoints))
    replace_block(args.out / "NNI.md", body, "NNI's tuners against condsearch's default sampler")
    print(body)
    return results


if __name__ == "__main__":
    main()
