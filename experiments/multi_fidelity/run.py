"""Multi-fidelity at equal compute: does stopping trials early with condsearch's multi-objective
scheduler (`search.scheduler.mo_asha`) buy a better accuracy-versus-FLOPs front for the same
number of training epochs than training every trial to the full budget, and how does it compare
with Syne Tune's own MOASHA driving the same trial function?

On `search_spaces/fashion_conv_early_exit.yaml` (early exit on a residual conv net, Fashion-MNIST)
it runs, for several seeds, real searches of five configurations:

- `tpe_mo_asha`: the default sampler (TPE) with `search.scheduler.mo_asha`;
- `tpe_full`: the default sampler, every trial trained to the full budget;
- `random_mo_asha`: random search with `search.scheduler.mo_asha`;
- `random_full`: random search, every trial trained to the full budget;
- `syne_tune_moasha`: Syne Tune's MOASHA (random configurations) running condsearch's trial
  function through Syne Tune's PythonBackend (`syne_tune_arm.py`); skipped, and recorded as
  skipped, when `import syne_tune` fails.

Every configuration gets the same budget of B training epochs (all trials together). A search
runs until it has spent at least B; its front at budget b is that of the finished trials whose
cumulative epochs (in the order they ran) stay within b. The study reports the normalised
hypervolume at B (with the inference-knob sweep's derived points and trained points only), the
curve of hypervolume against epochs spent, the wall time, and the Spearman rank correlation of a
trial's accuracy at the early rungs with its final accuracy. It writes `results.json`, the table
in `README.md` (between the RESULTS markers) and two plots, beside it or in `--out`.

    python experiments/multi_fidelity/run.py                         # the study (~2 h, 2 cores)
    python experiments/multi_fidelity/run.py --quick --out /tmp/mf   # tiny version (CI)

Searches run in `--runs DIR/<config>-seed<k>`. A finished one is reused (and a condsearch search
run with a smaller budget is extended by resuming it); an interrupted condsearch search resumes;
an interrupted Syne Tune arm starts over.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import syne_tune_arm  # noqa: E402
from equal_compute import (  # noqa: E402
    measure,
    normalised_hypervolume,
    read_condsearch,
    read_syne_tune,
    search_to_budget,
    spearman,
)
from reporting import machine, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPACE = ROOT / "search_spaces" / "fashion_conv_early_exit.yaml"
OURS = ("tpe_mo_asha", "tpe_full", "random_mo_asha", "random_full")
SYNE_TUNE = "syne_tune_moasha"
#: opt-in: Syne Tune's MOASHA with its non-dominated order read as ranks (syne_tune_arm.py,
#: `ranked_priority`), the ranking its Bracket expects
SYNE_TUNE_RANKED = "syne_tune_moasha_ranked"
SYNE_TUNE_ARMS = (SYNE_TUNE, SYNE_TUNE_RANKED)
CONFIGS = (*OURS, *SYNE_TUNE_ARMS)
DEFAULT_CONFIGS = (*OURS, SYNE_TUNE)
#: the study's targets (docs/architecture.md, "Performance targets")
TARGET_FULL, TARGET_SYNE_TUNE = 1.15, 1.0


def scheduled(config: str) -> bool:
    return "mo_asha" in config or "moasha" in config


def base_overrides(args: argparse.Namespace) -> list[str]:
    """What every configuration's space is given: the training budget, the data, the threads."""
    return [f"task.train_limit={args.train_limit}", f"task.val_fraction={args.val_fraction}",
            f"train.epochs={args.epochs}", f"search.cpus_per_trial={args.threads}"]


def overrides_of(config: str, args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of a configuration."""
    out = base_overrides(args)
    if config not in SYNE_TUNE_ARMS:
        out.append(f"sampler={'random' if config.startswith('random') else 'tpe'}")
    if scheduled(config):
        out.append(f"search.scheduler={{mo_asha: {{min_epochs: {args.min_epochs}, "
                   f"reduction_factor: {args.reduction_factor:g}}}}}")
    return out


def settings_key(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """What a reused search must have been run with (the budget aside)."""
    return {"config": config, "space": str(SPACE.relative_to(ROOT)),
            "overrides": overrides_of(config, args)}


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


# ---- running the searches -------------------------------------------------------------------------


def run_condsearch(config: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run (or reuse, or extend) one condsearch search until it has spent the budget; return its
    workdir and wall time (`equal_compute.search_to_budget`)."""
    first = args.epochs if not scheduled(config) else args.reduction_factor * args.min_epochs
    return search_to_budget(SPACE, overrides_of(config, args), args.runs / f"{config}-seed{seed}",
                            seed, args.budget, args.epochs, max(first, args.min_epochs),
                            settings_key(config, args), f"{config} seed {seed}")


def run_syne_tune(config: str, seed: int, args: argparse.Namespace, flops_ref: float
                  ) -> dict[str, Any]:
    """Run (or reuse) a Syne Tune MOASHA arm for one seed."""
    from condsearch.space import load_space

    workdir = args.runs / f"{config}-seed{seed}"
    key = settings_key(config, args)
    done = workdir / "done.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info["settings"] == key and info["budget"] >= args.budget:
            return info
    if workdir.exists():
        shutil.rmtree(workdir)
    overrides = overrides_of(config, args)
    space = load_space(str(SPACE), overrides, trust_code=True)
    print(f"[{_stamp()}] {config} seed {seed}: until {args.budget} epochs", flush=True)
    info = syne_tune_arm.run_arm(space, str(SPACE), overrides, workdir, seed, args.budget,
                                 flops_ref, key, ranked=config == SYNE_TUNE_RANKED)
    print(f"    {config} seed {seed}: {info['seconds']:.0f} s", flush=True)
    return info


# ---- measuring and summarising ----------------------------------------------------------------


def levels_of(args: argparse.Namespace) -> list[int]:
    """The budgets the hypervolume curve is read at: every epoch up to B."""
    return list(range(1, args.budget + 1))


def table_levels(args: argparse.Namespace) -> list[str]:
    """The budgets the README's curve table shows: every full trial's worth of epochs, and B."""
    levels = list(range(args.epochs, args.budget + 1, args.epochs))
    return [str(b) for b in (levels if levels[-1] == args.budget else [*levels, args.budget])]


def rung_epochs(args: argparse.Namespace) -> list[int]:
    """MO-ASHA's rung epochs below the last (train.epochs)."""
    from condsearch.schedule import rung_levels

    return [e for e in rung_levels(args.min_epochs, args.reduction_factor, args.epochs)
            if e < args.epochs]


def measure_run(config: str, info: dict[str, Any], flops_ref: float,
                args: argparse.Namespace) -> dict[str, Any]:
    """The study's figures for one search."""
    workdir = Path(info["workdir"])
    if config in SYNE_TUNE_ARMS:
        records = read_syne_tune(syne_tune_arm.read_trials(workdir), args.epochs)
        started = info["started"]
    else:
        records = read_condsearch(workdir, args.epochs, history=True)
        starts = [r.started for r in records if math.isfinite(r.started)]
        started = min(starts) if starts else info["started"]
    figures = measure(records, args.budget, levels_of(args), flops_ref, args.epochs, started,
                      rung_epochs(args))
    return {"seed": int(workdir.name.rsplit("seed", 1)[1]), "seconds": info["seconds"],
            **figures}


def stats(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarise(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace
              ) -> dict[str, Any]:
    """Per configuration, over seeds: hypervolume at B (with and without derived points), the
    curve, wall time, trials, epochs."""
    table: dict[str, Any] = {}
    for config, rows in runs.items():
        if not rows:
            continue
        entry: dict[str, Any] = {"skipped": False, "seeds": [r["seed"] for r in rows]}
        for key in ("hypervolume", "hypervolume_trained_only", "seconds", "seconds_to_budget",
                    "spent_epochs", "cut_epochs", "trials_in_cut", "finished_in_cut",
                    "stopped_in_cut", "failed_in_cut"):
            entry[key] = stats([float(r[key]) for r in rows])
        for key in ("curve", "curve_trained_only"):
            entry[key] = {b: stats([r[key][b] for r in rows]) for b in table_levels(args)}
        table[config] = entry
    return table


def ratios(table: dict[str, Any]) -> dict[str, Any]:
    """tpe_mo_asha against tpe_full and against Syne Tune's MOASHA: ratio of mean hypervolumes at
    the budget, with the derived points and on trained points only, beside the targets."""
    out: dict[str, Any] = {}
    ours = table.get("tpe_mo_asha")
    for other, target in (("tpe_full", TARGET_FULL), (SYNE_TUNE, TARGET_SYNE_TUNE),
                          (SYNE_TUNE_RANKED, TARGET_SYNE_TUNE)):
        if other == SYNE_TUNE_RANKED and other not in table:
            continue
        theirs = table.get(other)
        if not ours or not theirs or theirs.get("skipped"):
            out[other] = {"skipped": True, "target": target}
            continue
        row: dict[str, Any] = {"skipped": False, "target": target}
        for key in ("hypervolume", "hypervolume_trained_only"):
            mine, base = ours[key]["mean"], theirs[key]["mean"]
            ratio = mine / base if base > 0 else math.nan
            row[key] = {"ratio": ratio, "met": bool(ratio >= target)}
        out[other] = row
    return out


def ceiling(runs: dict[str, list[dict[str, Any]]], table: dict[str, Any], flops_ref: float
            ) -> dict[str, Any]:
    """The empirical ceiling: the hypervolume of the union of every search's front at the budget
    (all configurations and seeds), and the largest ratio over `tpe_full` any configuration could
    have reached at this budget and reference point."""
    union = [tuple(p) for rows in runs.values() for row in rows for p in row["front"]]
    hv = normalised_hypervolume(union, flops_ref)
    full = (table.get("tpe_full") or {}).get("hypervolume", {}).get("mean", 0.0)
    return {"hypervolume": hv, "ratio_over_tpe_full": hv / full if full > 0 else math.nan}


def tight_reference(runs: dict[str, list[dict[str, Any]]], flops_ref: float) -> dict[str, Any]:
    """A second fixed reference point, for information: accuracy at the least accurate point on
    any search's front at B (all configurations and seeds), FLOPs as before. Against accuracy 0
    every sensible front covers most of the box, which compresses the ratios; this reference
    measures only the region the searches competed for. Per configuration the normalised
    hypervolume (divided by its box) over seeds, and tpe_mo_asha's ratios to the others."""
    from condsearch.orchestrate._pareto import hypervolume

    fronts = [p for rows in runs.values() for row in rows for p in row["front"]]
    if not fronts:
        return {}
    acc_ref = min(a for a, _ in fronts)
    box = (1.0 - acc_ref) * flops_ref

    def hv(front: list[Any]) -> float:
        inside = [list(p) for p in front if p[0] > acc_ref and p[1] < flops_ref]
        if not inside or box <= 0:
            return 0.0
        return hypervolume(inside, ["maximize", "minimize"], [acc_ref, flops_ref]) / box

    table = {config: stats([hv(row["front"]) for row in rows])
             for config, rows in runs.items() if rows}
    ours = table.get("tpe_mo_asha", {}).get("mean")
    ratio = {other: (ours / e["mean"] if ours is not None and e["mean"] > 0 else math.nan)
             for other, e in table.items() if other != "tpe_mo_asha"}
    return {"accuracy": acc_ref, "flops": flops_ref, "hypervolume": table,
            "tpe_mo_asha_over": ratio}


def rank_correlation(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Spearman correlation of the accuracy at each early rung with the final accuracy, over the
    trials that reached the last epoch: per configuration (seeds pooled), over the full-budget
    searches together (every trial reached the end: an unselected sample) and over the scheduled
    searches together (the trials the schedulers let through: a sample selected on those very
    early ranks, so its correlation reads lower). A trial two searches share counts once."""
    out: dict[str, Any] = {}
    groups = {config: [config] for config in runs}
    groups["all full-budget"] = [c for c in runs if not scheduled(c)]
    groups["all scheduled"] = [c for c in runs if scheduled(c)]
    for name, members in groups.items():
        by_epoch: dict[str, list[list[float]]] = {}
        for config in members:
            for row in runs.get(config, []):
                for epoch, pairs in row["rank_pairs"].items():
                    by_epoch.setdefault(epoch, []).extend(pairs)
        # TPE starts with the random trials random search draws under the same seed: a trial
        # two searches share (the same pair of accuracies) counts once
        by_epoch = {e: [list(p) for p in dict.fromkeys(tuple(p) for p in pairs)]
                    for e, pairs in by_epoch.items()}
        if by_epoch:
            out[name] = {e: {"spearman": spearman(p), "trials": len(p)}
                         for e, p in sorted(by_epoch.items(), key=lambda kv: int(kv[0]))}
    return out


# ---- plots and the report -----------------------------------------------------------------------


def plot(runs: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """hypervolume.png (mean and min-max over seeds against epochs spent, with and without the
    derived points) and fronts.png (each configuration's front at the budget, first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in ((axes[0], "curve", "with swept (derived) points"),
                           (axes[1], "curve_trained_only", "trained points only")):
        for config in CONFIGS:
            rows = runs.get(config) or []
            if not rows:
                continue
            xs = [int(b) for b in rows[0][key]]
            per_level = [[r[key][str(b)] for r in rows] for b in xs]
            line, = ax.plot(xs, [statistics.fmean(v) for v in per_level],
                            drawstyle="steps-post", label=config)
            ax.fill_between(xs, [min(v) for v in per_level], [max(v) for v in per_level],
                            step="post", alpha=0.15, color=line.get_color())
        ax.set_xlabel("training epochs spent (all trials)")
        ax.set_title(title)
    axes[0].set_ylabel("normalised hypervolume (validation)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for config in CONFIGS:
        rows = runs.get(config) or []
        if rows and rows[0]["front"]:
            f = rows[0]["front"]
            ax.step([v[1] / 1e6 for v in f], [v[0] for v in f], where="post", marker="o",
                    markersize=3, label=f"{config} (seed {rows[0]['seed']})")
    ax.set_xscale("log")
    ax.set_xlabel("mean FLOPs per sample (M)")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fronts.png", dpi=120)
    plt.close(fig)


def _fmt(s: dict[str, float], digits: int = 3) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _ratio_cell(row: dict[str, Any], key: str) -> str:
    if row.get("skipped"):
        return "– (arm skipped)"
    r = row[key]
    verdict = "met" if r["met"] else "missed"
    return f"{r['ratio']:.3f}× (target ≥ {row['target']:.2f}×: {verdict})"


def verdict(results: dict[str, Any], args: argparse.Namespace) -> str:
    """One paragraph: each target met or missed, with the measured figures that bear on why."""
    parts = []
    for other, row in results["ratios"].items():
        if row.get("skipped"):
            parts.append(f"against {other}: not measured (arm skipped)")
            continue
        r = row["hypervolume"]
        parts.append(f"against {other}: {r['ratio']:.3f}× with the sweep, "
                     f"{row['hypervolume_trained_only']['ratio']:.3f}× trained only, target "
                     f"≥ {row['target']:.2f}× — {'met' if r['met'] else 'missed'}")
    text = "Verdict (`tpe_mo_asha`, ratio of mean hypervolumes at B): " + "; ".join(parts) + "."
    c = results["ceiling"]
    text += (f" Empirical ceiling: the union of every front the study found at B has "
             f"hypervolume {c['hypervolume']:.3f}, {c['ratio_over_tpe_full']:.3f}× that of "
             "`tpe_full`: the headroom over `tpe_full` that any search here showed at this "
             "budget and reference point.")
    full = results["rank_correlation"].get("all full-budget") or {}
    if full:
        text += (" How well an early rung predicts the final accuracy, over every trial of the "
                 "full-budget searches (none was selected): " + ", ".join(
                     f"epoch {e} → final ρ = {v['spearman']:.2f} (n = {v['trials']})"
                     for e, v in full.items()) + ".")
    return text


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The README's results block."""
    table = results["configs"]
    lines = []
    if args.quick:
        lines += ["**Quick run (`--quick`, the tiny version CI runs): a few trials on a few hundred "
                  "images. These numbers check that the study runs; they say nothing about the "
                  "targets.**", ""]
    lines += [
        f"Fashion-MNIST, {args.train_limit} training images, {results['validation_size']} "
        f"validation images; train.epochs {args.epochs} per finished trial; MO-ASHA rungs at "
        f"epochs {results['rung_levels']} (min_epochs {args.min_epochs}, reduction factor "
        f"{args.reduction_factor:g}); compute budget B = {args.budget} training epochs per search; "
        f"{len(args.seeds)} seed(s) {args.seeds}; {args.threads} thread(s) per trial. "
        "Hypervolume: the validation front of the finished trials within B epochs, reference "
        f"(accuracy 0, {results['flops_reference'] / 1e6:.2f} MFLOPs = the space's costliest "
        "candidate), divided by the reference box. Mean ± std (min–max) over seeds.",
        "",
        "| configuration | HV @ B, with sweep | HV @ B, trained only | epochs in cut / spent "
        "| trials in cut (finished / stopped / failed) | wall time to B | wall time, all |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for config in CONFIGS:
        e = table.get(config)
        if e is None:
            continue
        if e.get("skipped"):
            lines.append(f"| {config} | skipped: {e['reason']} | | | | | |")
            continue
        lines.append(
            f"| {config} | {_fmt(e['hypervolume'])} | {_fmt(e['hypervolume_trained_only'])} "
            f"| {e['cut_epochs']['mean']:.0f} / {e['spent_epochs']['mean']:.0f} "
            f"| {e['trials_in_cut']['mean']:.1f} ({e['finished_in_cut']['mean']:.1f} / "
            f"{e['stopped_in_cut']['mean']:.1f} / {e['failed_in_cut']['mean']:.1f}) "
            f"| {e['seconds_to_budget']['mean']:.0f} s | {e['seconds']['mean']:.0f} s |")
    levels = table_levels(args)
    if any(not e.get("skipped") for e in table.values()):
        lines += ["", "Hypervolume (with sweep) against epochs spent, mean over seeds:", "",
                  "| configuration | " + " | ".join(f"{b} ep." for b in levels) + " |",
                  "|---|" + "---:|" * len(levels)]
        for config in CONFIGS:
            e = table.get(config)
            if e and not e.get("skipped"):
                lines.append(f"| {config} | " + " | ".join(
                    f"{e['curve'][b]['mean']:.3f}" for b in levels) + " |")
    r = results["ratios"]
    lines += ["", "Targets (ratio of mean hypervolumes at B):", "",
              "| tpe_mo_asha against | with sweep | trained only |", "|---|---|---|"]
    for other in r:
        lines.append(f"| {other} | {_ratio_cell(r[other], 'hypervolume')} "
                     f"| {_ratio_cell(r[other], 'hypervolume_trained_only')} |")
    lines += ["", verdict(results, args)]
    t = results.get("tight_reference") or {}
    if t:
        lines += ["", "For information, against a second fixed reference point, (accuracy "
                  f"{t['accuracy']:.4f}, the least accurate point on any front at B; FLOPs as "
                  "above), which leaves out the region every search covers (with sweep; "
                  "normalised by that box; ratio of `tpe_mo_asha`'s mean to each):", "",
                  "| configuration | HV @ B, second reference | tpe_mo_asha / it |",
                  "|---|---:|---:|"]
        for config in CONFIGS:
            e = t["hypervolume"].get(config)
            if e is not None:
                ratio = t["tpe_mo_asha_over"].get(config)
                lines.append(f"| {config} | {_fmt(e)} | "
                             f"{'–' if ratio is None else f'{ratio:.3f}×'} |")
    rc = results["rank_correlation"]
    if rc:
        epochs = sorted({int(e) for g in rc.values() for e in g})
        lines += ["", "Spearman rank correlation of a trial's validation accuracy at an early "
                  f"epoch with its final accuracy (epoch {args.epochs}), over the trials that "
                  "reached the final epoch (n = trials):", "",
                  "| trials of | " + " | ".join(f"epoch {e} → final" for e in epochs) + " |",
                  "|---|" + "---:|" * len(epochs)]
        for name, by_epoch in rc.items():
            cells = []
            for e in epochs:
                c = by_epoch.get(str(e))
                cells.append("–" if c is None else f"{c['spearman']:.2f} (n={c['trials']})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines).replace("nan", "–")


# ---- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(DEFAULT_CONFIGS))
    parser.add_argument("--budget", type=int, default=108,
                        help="training epochs per search, all trials together (B)")
    parser.add_argument("--epochs", type=int, default=9, help="train.epochs: the full budget")
    parser.add_argument("--min-epochs", type=int, default=1, help="MO-ASHA's first rung")
    parser.add_argument("--reduction-factor", type=float, default=3.0)
    parser.add_argument("--train-limit", type=int, default=2000)
    parser.add_argument("--val-fraction", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1, help="search.cpus_per_trial")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the searches run (default runs/multi_fidelity, "
                             "runs/multi_fidelity_quick with --quick)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--quick", action="store_true",
                        help="tiny version: 1 seed, 3 epochs a trial, a budget of 9 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.epochs = [0], 9, 3
        args.train_limit, args.val_fraction = 600, 0.005
    if args.budget < args.epochs:
        parser.error(f"--budget {args.budget} is less than one full trial ({args.epochs} epochs)")
    if args.runs is None:
        args.runs = Path("runs/multi_fidelity_quick" if args.quick else "runs/multi_fidelity")
    args.runs = args.runs.resolve()
    started = time.time()

    from condsearch.data import load_task
    from condsearch.orchestrate._keeper import reference_bounds
    from condsearch.schedule import rung_levels
    from condsearch.space import load_space

    base = load_space(str(SPACE), base_overrides(args), trust_code=True)
    bounds, sources = reference_bounds(base)
    flops_ref = float(bounds["flops"])

    have_syne_tune, why = syne_tune_arm.available()
    infos: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    for seed in args.seeds:
        for config in args.configs:
            if config in SYNE_TUNE_ARMS:
                if not have_syne_tune:
                    if not skipped:
                        print(syne_tune_arm.INSTALL_HINT, flush=True)
                    skipped[config] = f"import syne_tune failed ({why})"
                    continue
                infos.setdefault(config, []).append(run_syne_tune(config, seed, args,
                                                                  flops_ref))
            else:
                infos.setdefault(config, []).append(run_condsearch(config, seed, args))

    runs = {c: [measure_run(c, i, flops_ref, args) for i in rows] for c, rows in infos.items()}
    table = summarise(runs, args)
    for config, reason in skipped.items():
        table[config] = {"skipped": True, "reason": reason}
    results: dict[str, Any] = {
        "space": str(SPACE.relative_to(ROOT)),
        "budget_epochs": args.budget,
        "epochs": args.epochs,
        "rung_levels": rung_levels(args.min_epochs, args.reduction_factor, args.epochs),
        "levels": levels_of(args),
        "flops_reference": flops_ref,
        "flops_reference_source": sources.get("flops", ""),
        "validation_size": int(load_task(base.task).val[1].shape[0]),
        "syne_tune": syne_tune_arm.version() if have_syne_tune else None,
        "configs": {c: table[c] for c in CONFIGS if c in table},
        "ratios": ratios(table),
        "ceiling": ceiling(runs, table, flops_ref),
        "tight_reference": tight_reference(runs, flops_ref),
        "rank_correlation": rank_correlation(runs),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.out)
    text = report(results, args)
    command = "python experiments/multi_fidelity/run.py" + (" " + " ".join(argv) if argv else "")
    settings = {"command": command, "machine": machine(args.threads),
                "seconds": time.time() - started,
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    write_results(args.out, "Multi-fidelity at equal compute", copy.deepcopy(results), settings,
                  text)
    print(text)
    return results


if __name__ == "__main__":
    from condsearch import SearchError

    try:
        main(sys.argv[1:] if len(sys.argv) > 1 else None)
    except SearchError as exc:  # e.g. a search another process is running
        sys.exit(f"error: {exc}")
