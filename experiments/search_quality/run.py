"""Search quality: does condsearch's default sampler find better fronts than random search?

On the joint space `search_spaces/fashion_adaptive.yaml` (backbone and every adaptive component
searched), with one fixed, small training budget per trial, this runs real searches for:

- `tpe`: the default sampler (multivariate, grouped TPE), knob sweep on (derived points);
- `nsga2`: NSGA-II (population 8, so 32 trials are 4 generations), sweep on;
- `random`: random search, sweep on;
- `tpe_no_sweep`: the default sampler with the knob sweep off (trained points only);
- `dense`: the default sampler on the same space with every adaptive component off and the
  backbone fixed to the token transformer (for "static against adaptive");
- `dense_cigt`: the default sampler on CIGT with one block per layer (widths [1, 1, 1]: no
  routers, every input runs the same convolutional path), the static counterpart of CIGT.

each for several seeds, and reports the normalised hypervolume of the validation front after
8, 16, 32 trials (one fixed reference point for all), the test accuracy of the exported knee
point, the wall time, and, at each FLOPs budget, the accuracy the adaptive fronts buy over the
dense one. It writes `results.json`, the table in `README.md` (between the RESULTS markers) and
three plots, beside it or in `--out`.

    python experiments/search_quality/run.py                       # the study (about 75 min, 1 core)
    python experiments/search_quality/run.py --quick --out /tmp/sq # tiny version (CI)

Searches run in `--runs DIR/<config>-seed<k>`; a finished one is reused, an unfinished one is
started over, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import condsearch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measures import (  # noqa: E402
    accuracy_bought,
    front,
    hypervolume_curve,
    log_levels,
    pairs,
    points_of_first,
    read_search,
)
from reporting import machine, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
SPACE = HERE.parents[1] / "search_spaces" / "fashion_adaptive.yaml"
COMPONENTS = ("adatape", "early_exit", "moe", "token_selection")
ADAPTIVE = ("tpe", "nsga2", "random", "tpe_no_sweep")
DENSE = ("dense", "dense_cigt")
CONFIGS = (*ADAPTIVE, *DENSE)


def space_doc(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """The shipped joint space with the study's training budget and the config's sampler."""
    doc = yaml.safe_load(SPACE.read_text())
    doc["name"] = f"search_quality_{config}"
    doc["task"].update(train_limit=args.train_limit, val_fraction=args.val_fraction)
    doc["train"].update(epochs=args.epochs, batch_size=args.batch_size)
    doc["sampler"] = {"name": "tpe"}
    if config == "nsga2":
        doc["sampler"] = {"name": "nsga2", "options": {"population_size": args.population}}
    elif config == "random":
        doc["sampler"] = {"name": "random"}
    if config in ("tpe_no_sweep", *DENSE):
        doc.pop("sweep", None)
    if config == "dense_cigt":
        cigt = {k: v for k, v in doc["model"]["cigt"].items() if k != "ig_weight"}
        doc["model"] = {"backbone": "cigt", "cigt": {**cigt, "widths": [1, 1, 1]}}
    if config == "dense":
        model = doc["model"]
        model["backbone"] = "token_transformer"
        model.pop("cigt"), model.pop("nac")
        for name in COMPONENTS:
            model["components"][name]["enabled"] = False
    return doc


def run_search(config: str, seed: int, trials: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run (or reuse) one search; return its workdir and wall time."""
    workdir = args.runs / f"{config}-seed{seed}"
    done = workdir / "done.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info["trials"] == trials:
            return info
    if workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    path = workdir / "space.yaml"
    path.write_text(yaml.safe_dump(space_doc(config, args), sort_keys=False))
    print(f"[{time.strftime('%H:%M:%S')}] {config} seed {seed}: {trials} trials", flush=True)
    summary = condsearch.search(str(path), trials=trials, workdir=workdir, seed=seed,
                                progress=False)
    info = {"workdir": str(workdir), "trials": trials, "seconds": summary.seconds,
            "completed": summary.completed, "failed": summary.failed}
    done.write_text(json.dumps(info))
    print(f"    {summary.completed} completed, {summary.failed} failed, "
          f"{summary.seconds:.0f} s", flush=True)
    return info


def knee_on_test(workdir: Path, test_limit: int | None) -> dict[str, float]:
    """Export the knee of the search's front and measure it on the test split."""
    import dataclasses

    from condsearch.data import load_task
    from condsearch.export import export_point, load_exported
    from condsearch.export._load import read_export
    from condsearch.train import evaluate

    out = export_point(workdir, workdir / "knee", pick="knee")
    arch, metrics = read_export(out)
    task = load_task(arch["task"])
    if test_limit:
        task = dataclasses.replace(task, test=(task.test[0][:test_limit],
                                               task.test[1][:test_limit]))
    evaluation = evaluate(load_exported(out), task, "test", 512, "cpu").summary()
    return {"val_accuracy": metrics["values"]["accuracy"], "val_flops": metrics["values"]["flops"],
            "test_accuracy": evaluation["accuracy"], "test_flops": evaluation["flops"],
            "trial": metrics["trial"], "derived": metrics["derived"]}


def describe(arch: dict[str, Any]) -> str:
    """The backbone and the adaptive components a point uses, e.g. 'token_transformer+moe'."""
    model = arch.get("model", {})
    backbone = model.get("backbone", "?")
    on = [c for c in COMPONENTS if (model.get("components", {}).get(c) or {}).get("enabled")]
    return "+".join([backbone, *on]) if backbone == "token_transformer" else backbone


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace
              ) -> dict[str, Any]:
    """Hypervolume at each checkpoint, ratios to random search, knee test accuracy, wall time."""
    table = {}
    for config in ADAPTIVE:
        rows = runs.get(config) or []
        if not rows:
            continue
        entry: dict[str, Any] = {"hypervolume": {}, "hypervolume_trained_only": {}}
        for n in args.checkpoints:
            entry["hypervolume"][n] = mean_std([r["curve"][n - 1] for r in rows])
            entry["hypervolume_trained_only"][n] = mean_std(
                [r["curve_trained"][n - 1] for r in rows])
        entry["knee_test_accuracy"] = mean_std([r["knee"]["test_accuracy"] for r in rows])
        entry["knee_test_flops"] = mean_std([r["knee"]["test_flops"] for r in rows])
        entry["seconds"] = mean_std([r["seconds"] for r in rows])
        entry["failed"] = sum(r["failed"] for r in rows)
        table[config] = entry
    if "random" in table:
        for entry in table.values():
            entry["ratio_to_random"] = {
                n: entry["hypervolume"][n][0] / table["random"]["hypervolume"][n][0]
                if table["random"]["hypervolume"][n][0] > 0 else math.nan
                for n in args.checkpoints}
    return table


def _by_model(points: list[Any]) -> dict[str, list[tuple[float, float]]]:
    grouped: dict[str, list[Any]] = {}
    for p in points:
        grouped.setdefault(describe(p.arch), []).append(p)
    return {model: pairs(chosen) for model, chosen in grouped.items()}


def static_against_adaptive(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace
                            ) -> dict[str, Any]:
    """At FLOPs budgets spanning the fronts: the best static (dense) against the best adaptive
    validation accuracy, at equal search effort (the default sampler's first as many trials as
    the dense searches ran together, per seed) and over every adaptive point of the study; and,
    within the convolutional backbone, CIGT's routing against the same net with one path."""
    dense = [v for c in DENSE for r in runs.get(c, []) for v in r["values"]]
    if not dense:
        return {}
    dense_tt = [v for r in runs.get("dense", []) for v in r["values"]]
    dense_conv = [v for r in runs.get("dense_cigt", []) for v in r["values"]]
    equal = [v for r in runs.get("tpe", []) for v in r["values_equal_effort"]]
    every = [v for c in ADAPTIVE for r in runs.get(c, []) for v in r["values"]]
    cigt = [v for c in ADAPTIVE for r in runs.get(c, []) for v in r["values_by_model"].get("cigt", [])]
    fronts = [front(dense), front(equal), front(every)]
    low = min(f[0][1] for f in fronts if f)
    high = max(f[-1][1] for f in fronts if f)
    levels = log_levels(low, high, args.levels)
    result = {"dense_front": front(dense), "dense_transformer_front": front(dense_tt),
              "dense_conv_front": front(dense_conv),
              "adaptive_front_equal_effort": front(equal), "adaptive_front_all": front(every),
              "equal_effort": accuracy_bought(equal, dense, levels),
              "all": accuracy_bought(every, dense, levels),
              "dense_transformer": accuracy_bought(every, dense_tt, levels),
              "dense_conv": accuracy_bought(every, dense_conv, levels)}
    if cigt and dense_conv:
        result["cigt_front"] = front(cigt)
        result["cigt_against_one_path"] = accuracy_bought(cigt, dense_conv, levels)
    return result


def measure(info: dict[str, Any], flops_ref: float, args: argparse.Namespace
            ) -> dict[str, Any]:
    """The study's figures for one finished search."""
    workdir = Path(info["workdir"])
    record = read_search(workdir)
    front_points = [p for p in record.points if p.on_front]
    return {
        "seed": int(workdir.name.rsplit("seed", 1)[1]), "seconds": info["seconds"],
        "failed": record.failed, "trained": len(record.trained),
        "curve": hypervolume_curve(record, flops_ref),
        "curve_trained": hypervolume_curve(record, flops_ref, derived=False),
        "values": pairs(record.points),
        "values_equal_effort": pairs(points_of_first(record, len(DENSE) * args.dense_trials)),
        "values_by_model": _by_model(record.points),
        "front": [{"accuracy": p.values["accuracy"], "flops": p.values["flops"],
                   "derived": p.derived, "model": describe(p.arch), "knobs": p.knobs}
                  for p in sorted(front_points, key=lambda p: p.values["flops"])],
        "knee": knee_on_test(workdir, args.test_limit),
    }


def plot(results: dict[str, Any], runs: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """hypervolume.png (mean and range over seeds), fronts.png (seed 0 of each sampler) and
    static_vs_adaptive.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for config in ADAPTIVE:
        curves = [r["curve"] for r in runs.get(config, [])]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        xs = list(range(1, n + 1))
        mean = [statistics.fmean(c[i] for c in curves) for i in range(n)]
        ax.plot(xs, mean, label=config)
        ax.fill_between(xs, [min(c[i] for c in curves) for i in range(n)],
                        [max(c[i] for c in curves) for i in range(n)], alpha=0.15)
    ax.set_xlabel("trained trials")
    ax.set_ylabel("normalised hypervolume (validation)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for config in ADAPTIVE:
        rows = runs.get(config) or []
        if rows:
            f = front(rows[0]["values"])
            ax.step([v[1] / 1e6 for v in f], [v[0] for v in f], where="post", marker="o",
                    markersize=3, label=f"{config} (seed {rows[0]['seed']})")
    ax.set_xscale("log")
    ax.set_xlabel("mean FLOPs per sample (M)")
    ax.set_ylabel("validation accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fronts.png", dpi=120)
    plt.close(fig)

    sva = results.get("static_vs_adaptive") or {}
    if sva:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, label in (("dense_transformer_front", "dense token transformer"),
                           ("dense_conv_front", "one-path conv (CIGT widths 1,1,1)"),
                           ("adaptive_front_equal_effort", "adaptive, tpe, equal trials"),
                           ("adaptive_front_all", "adaptive, every point")):
            f = sva.get(key) or []
            ax.step([v[1] / 1e6 for v in f], [v[0] for v in f], where="post", marker="o",
                    markersize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("mean FLOPs per sample (M)")
        ax.set_ylabel("validation accuracy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "static_vs_adaptive.png", dpi=120)
        plt.close(fig)


def fmt(ms: tuple[float, float], digits: int = 3) -> str:
    """'mean ± std'."""
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The README tables."""
    n_seeds = len(args.seeds)
    ns = args.checkpoints
    lines = [
        f"Fashion-MNIST, {args.train_limit} training images, {args.epochs} epoch(s) at batch "
        f"{args.batch_size} per trial, {results['validation_size']} validation images; "
        f"{n_seeds} seed(s); knee exported and measured on "
        f"{args.test_limit or 'all 10,000'} test images. Hypervolume: validation front, reference "
        f"(accuracy 0, {results['flops_reference'] / 1e6:.2f} MFLOPs = 1.1 × the costliest point "
        "of the whole study), divided by the reference box (1.0 = accuracy 1 at zero FLOPs). "
        "Mean ± standard deviation over seeds.",
        "",
        "| sampler | " + " | ".join(f"HV @ {n}" for n in ns) + " | "
        + " | ".join(f"vs random @ {n}" for n in ns)
        + " | knee test acc. | knee MFLOPs | wall time / search | failed trials |",
        "|---|" + "---:|" * (2 * len(ns) + 4),
    ]
    for config, e in results["samplers"].items():
        ratios = e.get("ratio_to_random", {})
        lines.append(
            f"| {config} | " + " | ".join(fmt(e["hypervolume"][n]) for n in ns) + " | "
            + " | ".join(f"{ratios.get(n, math.nan):.2f}×" for n in ns)
            + f" | {fmt(e['knee_test_accuracy'])} | {e['knee_test_flops'][0] / 1e6:.2f}"
            f" | {e['seconds'][0]:.0f} s | {e['failed']} |")
    lines += ["", "Derived points (the inference-knob sweep): hypervolume of the same searches "
              "with the swept points left out of the front (`trained only`), and of searches "
              "run with the sweep off (`tpe_no_sweep`, whose sampler never saw swept points):", "",
              "| sampler | " + " | ".join(f"HV @ {n}, with sweep points" for n in ns) + " | "
              + " | ".join(f"HV @ {n}, trained only" for n in ns) + " |",
              "|---|" + "---:|" * (2 * len(ns))]
    for config, e in results["samplers"].items():
        lines.append(f"| {config} | " + " | ".join(fmt(e["hypervolume"][n]) for n in ns) + " | "
                     + " | ".join(fmt(e["hypervolume_trained_only"][n]) for n in ns) + " |")
    sva = results.get("static_vs_adaptive")
    if sva:
        effort = len(DENSE) * args.dense_trials
        lines += ["", "Static against adaptive: best validation accuracy within each FLOPs "
                  "budget. Static: the dense token transformer (`dense`) and the one-path "
                  f"convolutional net (`dense_cigt`), {args.dense_trials} trials × {n_seeds} "
                  "seed(s) each; `best static` is the better of the two. Adaptive at equal "
                  f"effort: the `tpe` searches' first {effort} trials per seed; adaptive, all: "
                  "every point of the four adaptive configurations; CIGT: the adaptive points "
                  "whose backbone is CIGT, against the one-path net.", "",
                  "| FLOPs budget (M) | dense transformer | one-path conv | best static "
                  "| adaptive, equal effort | gain | adaptive, all | gain | CIGT | gain over "
                  "one path |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        cigt = sva.get("cigt_against_one_path") or [{}] * len(sva["all"])
        for eq, al, tt, cv, cg in zip(sva["equal_effort"], sva["all"], sva["dense_transformer"],
                                      sva["dense_conv"], cigt):
            lines.append(
                f"| {eq['flops'] / 1e6:.2f} | {tt['dense']:.3f} | {cv['dense']:.3f} "
                f"| {eq['dense']:.3f} | {eq['adaptive']:.3f} | {eq['gain']:+.3f} "
                f"| {al['adaptive']:.3f} | {al['gain']:+.3f} "
                f"| {cg.get('adaptive', math.nan):.3f} | {cg.get('gain', math.nan):+.3f} |")
        lines += ["", "What the adaptive front (every point) is made of, cheapest first: "
                  + "; ".join(f"{p['model']} {p['accuracy']:.3f} @ {p['flops'] / 1e6:.2f}M"
                              for p in results["front_makeup"])]
    return "\n".join(lines).replace("nan", "–")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--dense-trials", type=int, default=16)
    parser.add_argument("--population", type=int, default=8, help="NSGA-II population")
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--val-fraction", type=float, default=0.034)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--levels", type=int, default=8, help="FLOPs budgets compared")
    parser.add_argument("--runs", type=Path, default=Path("runs/search_quality"))
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--quick", action="store_true", help="tiny version: 1 seed, 3 trials")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.checkpoints, args.dense_trials = [0], 3, [1, 3], 2
        args.train_limit, args.val_fraction, args.test_limit, args.levels = 400, 0.01, 500, 3
    args.checkpoints = [n for n in args.checkpoints if n <= args.trials] or [args.trials]
    started = time.time()
    infos: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        for config in args.configs:
            trials = args.dense_trials if config in DENSE else args.trials
            infos.setdefault(config, []).append(run_search(config, seed, trials, args))
    records = {c: [read_search(Path(i["workdir"])) for i in rows] for c, rows in infos.items()}
    costliest = max(v[1] for rows in records.values() for r in rows for v in pairs(r.points))
    flops_ref = 1.1 * costliest
    runs = {c: [measure(i, flops_ref, args) for i in rows] for c, rows in infos.items()}
    from condsearch.data import load_task

    task_spec = space_doc("tpe", args)["task"]
    results: dict[str, Any] = {
        "flops_reference": flops_ref,
        "validation_size": int(load_task(task_spec).val[1].shape[0]),
        "samplers": summarise(runs, args),
        "static_vs_adaptive": static_against_adaptive(runs, args),
        "runs": runs,
    }
    every = [p for c in ADAPTIVE for r in runs.get(c, []) for p in r["front"]]
    adaptive_front = set(results["static_vs_adaptive"].get("adaptive_front_all", []) or [])
    results["front_makeup"] = sorted(
        {(p["accuracy"], p["flops"]): p for p in every
         if (p["accuracy"], p["flops"]) in adaptive_front}.values(), key=lambda p: p["flops"])
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, runs, args.out)
    text = report(results, args)
    command = "python experiments/search_quality/run.py" + (" " + " ".join(argv) if argv else "")
    settings = {"command": command, "machine": machine(), "seconds": time.time() - started,
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    write_results(args.out, "Search quality", copy.deepcopy(results), settings, text)
    print(text)
    return results


if __name__ == "__main__":
    main(sys.argv[1:] if len(sys.argv) > 1 else None)
