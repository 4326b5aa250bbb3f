"""Adaptive against static at a budget where models learn: does searching conditional networks
buy the same test accuracy for fewer mean FLOPs per image than searching static ones?

On Fashion-MNIST (the whole training split by default) it runs, for several seeds, one search per
arm, each with the multi-fidelity scheduler (`search.scheduler.mo_asha`) and the same budget of B
training epochs (all its trials together):

- static arms: the conv backbone with exits off (`static_conv`) and the one-path CIGT
  (`cigt_one_path`, widths [1, 1, 1]);
- adaptive arms: the conv backbone with early exit (threshold swept, `conv_early_exit`), CIGT with
  several paths (`cigt`), NAC (`nac`) and the token transformer's components (`transformer`:
  AdaTape, early exit, MoE, token selection; a point with every component off counts as static).

Every point of each search's validation front (its swept knob settings included) is exported and
measured on the test split, which no search saw. Per seed, the static points and the adaptive
points each form a test front; the headline is the FLOPs saving at equal test accuracy: the
static front's knee accuracy, and the mean FLOPs per image the adaptive front needs to reach it,
as static knee FLOPs / adaptive FLOPs (also at the best static accuracy, and the adaptive
front's accuracy at the static knee's FLOPs). Target: a saving of at least 1.5x.

    python experiments/adaptive_vs_static/run.py --plateau       # where the static conv plateaus
    python experiments/adaptive_vs_static/run.py                 # the study (hours on 2 cores)
    python experiments/adaptive_vs_static/run.py --seeds 1       # one seed, e.g. in a 2nd process
    python experiments/adaptive_vs_static/run.py --report-only   # tables from what has finished
    python experiments/adaptive_vs_static/run.py --quick --out /tmp/avs   # tiny version (CI)

Searches run in `--runs DIR/<arm>-seed<k>`: a finished one is reused, an interrupted one resumes,
and each front's test measurements are kept beside it (`test_points.json`), so the script can be
stopped and rerun at any time and split over processes by seed. Progress lines carry an estimate
of the time left. It writes `results.json`, the table in `README.md` (between the RESULTS
markers) and `fronts.png`, beside it or in `--out`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "multi_fidelity"))
from equal_compute import front, search_to_budget  # noqa: E402
from reporting import machine, write_results  # noqa: E402
from resumable import Progress, duration  # noqa: E402

#: the study's target (docs/architecture.md, "Performance targets"): static knee FLOPs over the
#: mean FLOPs the adaptive front needs for the same test accuracy
TARGET_SAVING = 1.5
DIRECTIONS = ["maximize", "minimize"]  # accuracy, FLOPs
TRANSFORMER_COMPONENTS = ("adatape", "early_exit", "moe", "token_selection")
#: trials a search runs between progress lines (a full trial takes minutes to an hour here)
CHUNK = 4
#: the static conv space's costliest candidate, whose plateau the study measures
LARGEST_CONV = ("model.stem=16", "model.widths=[16, 32, 64]", "model.depths=[2, 2, 2]",
                "model.kernel=5")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One search of the study: a space (its path in the repository) and what the study sets
    in it."""

    space: str
    overrides: tuple[str, ...]
    static: bool
    label: str


ARMS: dict[str, Arm] = {
    "static_conv": Arm("search_spaces/fashion_conv_early_exit.yaml",
                       ("model.components.early_exit.enabled=false", "sweep={}"), True,
                       "conv net, exits off"),
    "cigt_one_path": Arm("search_spaces/fashion_cigt.yaml", ("model.cigt.widths=[1, 1, 1]", "sweep={}"), True,
                         "CIGT, one path"),
    "conv_early_exit": Arm("search_spaces/fashion_conv_early_exit.yaml",
                           ("model.components.early_exit.enabled=true",), False,
                           "conv net, early exit"),
    "cigt": Arm("search_spaces/fashion_cigt.yaml",
                ("model.cigt.widths={choice: [[1, 2, 4], [1, 2, 2], [1, 4, 4]]}",), False,
                "CIGT, several paths"),
    "nac": Arm("search_spaces/fashion_nac.yaml", (), False, "NAC"),
    "transformer": Arm("experiments/adaptive_vs_static/transformer.yaml", (), False,
                       "token transformer, components"),
}


def overrides_of(arm: str, args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of an arm's searches."""
    data = [f"task.val_fraction={args.val_fraction}",
            f"task.train_limit={args.train_limit or 'null'}"]  # null: the whole split
    return [*data, *ARMS[arm].overrides, f"train.epochs={args.epochs}", "sampler=tpe",
            f"search.cpus_per_trial={args.threads}",
            f"search.scheduler={{mo_asha: {{min_epochs: {args.min_epochs}, "
            f"reduction_factor: {args.reduction_factor:g}}}}}"]


def settings_key(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    """What a reused search must have been run with (the budget aside)."""
    return {"arm": arm, "space": ARMS[arm].space, "overrides": overrides_of(arm, args)}


# ---- the plateau ----------------------------------------------------------------------------------


def measure_plateau(args: argparse.Namespace) -> dict[str, Any]:
    """Train the static conv space's largest candidate for `--plateau-epochs` epochs on the
    study's data and find where its validation accuracy stops improving: the first epoch within
    `--plateau-tolerance` of the best. Kept in `plateau.json`."""
    import torch

    from condsearch.data import load_task
    from condsearch.models import build_model
    from condsearch.space import load_space
    from condsearch.train import fit

    path = args.out / "plateau.json"
    space = load_space(str(ROOT / ARMS["static_conv"].space),
                       [o for o in overrides_of("static_conv", args) if "scheduler" not in o]
                       + [*LARGEST_CONV, f"train.epochs={args.plateau_epochs}"])
    arch = {**space.fixed_arch(), "task": space.task}
    key = {"arch": arch, "epochs": args.plateau_epochs}
    if path.exists() and json.loads(path.read_text()).get("key") == key:
        return json.loads(path.read_text())
    torch.set_num_threads(args.threads)
    task = load_task(arch["task"])
    model = build_model(arch, task)
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    partial = {"key": key, "val_accuracy": []}

    def epoch_done(epoch: int, total: int, record: dict[str, float]) -> None:
        spent = time.time() - started
        partial["val_accuracy"].append(float(record["val_accuracy"]))
        partial["seconds"] = spent
        (args.out / "plateau.partial.json").write_text(json.dumps(partial, indent=2) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] plateau: epoch {epoch}/{total}, val accuracy "
              f"{record['val_accuracy']:.4f}, about {duration(spent / epoch * (total - epoch))}"
              " left", flush=True)

    history = fit(model, task, arch["train"], device=torch.device("cpu"), seed=0,
                  on_epoch=epoch_done)
    accuracy = [float(h["val_accuracy"]) for h in history]
    best = max(accuracy)
    plateau = next(i + 1 for i, a in enumerate(accuracy) if a >= best - args.plateau_tolerance)
    result = {"key": key, "val_accuracy": accuracy, "best": best, "plateau_epoch": plateau,
              "tolerance": args.plateau_tolerance, "seconds": time.time() - started,
              "train_images": int(task.train[1].shape[0]), "machine": machine(args.threads)}
    path.write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "plateau.partial.json").unlink(missing_ok=True)
    print(f"plateau: best {best:.4f}; within {args.plateau_tolerance} of it from epoch "
          f"{plateau} of {len(accuracy)}", flush=True)
    return result


# ---- measuring a search's front on the test split ---------------------------------------------


def is_static(arm: str, arch: dict[str, Any]) -> bool:
    """Whether a point computes the same path for every image."""
    if ARMS[arm].static:
        return True
    if arm != "transformer":
        return False
    components = (arch.get("model") or {}).get("components") or {}
    return not any((components.get(c) or {}).get("enabled") for c in TRANSFORMER_COMPONENTS)


def test_points(arm: str, workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every point of the search's validation front, exported and measured on the test split
    (kept in `test_points.json`, keyed by the front it measured)."""
    from condsearch.data import load_task
    from condsearch.export import export_point, load_exported
    from condsearch.orchestrate import load_front
    from condsearch.train import evaluate

    cache = workdir / "test_points.json"
    points = [p for p in load_front(workdir) if p.on_front]
    key = {"front": sorted(p.number for p in points), "test_limit": args.test_limit}
    if cache.exists() and json.loads(cache.read_text())["key"] == key:
        return json.loads(cache.read_text())["points"]
    rows = []
    if points:  # every point of one search has the search's task: loaded once
        task = load_task(points[0].task)
        if args.test_limit:
            task = dataclasses.replace(task, test=(task.test[0][:args.test_limit],
                                                   task.test[1][:args.test_limit]))
    for p in points:
        out = export_point(workdir, workdir / "exports" / str(p.number), trial=p.number,
                           force=True)
        figures = evaluate(load_exported(out), task, "test", 512, "cpu").summary()
        rows.append({"number": p.number, "trial": p.trial, "derived": p.derived,
                     "knobs": p.knobs, "static": is_static(arm, p.arch),
                     "val_accuracy": p.values["accuracy"], "val_flops": p.values["flops"],
                     "test_accuracy": figures["accuracy"], "test_flops": figures["flops"]})
    cache.write_text(json.dumps({"key": key, "points": rows}, indent=2))
    return rows


# ---- the comparison -------------------------------------------------------------------------------


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (accuracy, FLOPs) points no other point dominates, each once, cheapest first."""
    return sorted(set(front(points)), key=lambda p: (p[1], -p[0])) if points else []


def knee(front: list[tuple[float, float]]) -> tuple[float, float]:
    """The knee of a front, as `condsearch pareto` picks it."""
    from condsearch.orchestrate._pareto import knee_index

    return front[knee_index([list(p) for p in front], DIRECTIONS)]


def flops_for(front: list[tuple[float, float]], accuracy: float) -> float | None:
    """The fewest mean FLOPs a point of `front` needs for at least `accuracy` (None: none does)."""
    reach = [f for a, f in front if a >= accuracy]
    return min(reach) if reach else None


def accuracy_at(front: list[tuple[float, float]], flops: float) -> float | None:
    """The best accuracy a point of `front` has within `flops` mean FLOPs."""
    within = [a for a, f in front if f <= flops]
    return max(within) if within else None


def compare(static: list[tuple[float, float]], adaptive: list[tuple[float, float]]
            ) -> dict[str, Any]:
    """The headline figures of one seed: savings at the static knee's and best accuracy."""
    s_front, a_front = pareto(static), pareto(adaptive)
    if not s_front or not a_front:
        return {"static_front": s_front, "adaptive_front": a_front}
    k_acc, k_flops = knee(s_front)
    b_acc, b_flops = max(s_front, key=lambda p: (p[0], -p[1]))
    at_knee, at_best = flops_for(a_front, k_acc), flops_for(a_front, b_acc)
    return {
        "static_front": s_front, "adaptive_front": a_front,
        "static_knee": [k_acc, k_flops], "static_best": [b_acc, b_flops],
        "adaptive_flops_at_knee_accuracy": at_knee,
        "saving_at_knee": k_flops / at_knee if at_knee else None,
        "adaptive_flops_at_best_accuracy": at_best,
        "saving_at_best": b_flops / at_best if at_best else None,
        "adaptive_accuracy_at_knee_flops": accuracy_at(a_front, k_flops),
        "best_adaptive": list(max(a_front, key=lambda p: (p[0], -p[1]))),
    }


def summarise(measured: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per seed: the static and adaptive test fronts and the savings; then their spread."""
    seeds = sorted({s for by_seed in measured.values() for s in by_seed})
    per_seed, per_arm = {}, {}
    for seed in seeds:
        rows = [(arm, r) for arm, by_seed in measured.items() for r in by_seed.get(seed, [])]
        pts = {flag: [(r["test_accuracy"], r["test_flops"]) for _, r in rows
                      if r["static"] is flag] for flag in (True, False)}
        per_seed[str(seed)] = compare(pts[True], pts[False])
        static_front = per_seed[str(seed)]["static_front"]
        for arm, by_seed in measured.items():
            own = [(r["test_accuracy"], r["test_flops"]) for r in by_seed.get(seed, [])]
            if own and not ARMS[arm].static:
                per_arm.setdefault(arm, {})[str(seed)] = compare(static_front, own)
    return {"per_seed": per_seed, "per_arm": per_arm,
            "saving_at_knee": _spread(per_seed, "saving_at_knee"),
            "saving_at_best": _spread(per_seed, "saving_at_best")}


def _spread(per_seed: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    """Mean and standard deviation of a figure over the seeds where it exists, and how many did
    not reach it (None: the adaptive front never reached the static accuracy)."""
    values = [r[key] for r in per_seed.values() if r.get(key) is not None]
    return {"mean": statistics.fmean(values) if values else None,
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
            "seeds": len(values), "unreached": sum(key in r and r[key] is None
                                                    for r in per_seed.values())}


# ---- the report -----------------------------------------------------------------------------------


def _mf(flops: float | None) -> str:
    return "–" if flops is None else f"{flops / 1e6:.2f}"


def _ratio(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}×"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The README's tables."""
    s = results["summary"]
    head = s["saving_at_knee"]
    verdict = ((f"the adaptive front never reached it ({head['unreached']} seed(s); target "
                f"≥ {TARGET_SAVING}×: missed)" if head["unreached"]
                else "no seed has both a static and an adaptive front yet")
               if head["mean"] is None else
               f"**{head['mean']:.2f}× ± {head['stdev']:.2f}** over {head['seeds']} seed(s)"
               + (f", not reached in {head['unreached']}" if head["unreached"] else "")
               + f" (target ≥ {TARGET_SAVING}×: "
               + ("met" if head["mean"] >= TARGET_SAVING else "missed") + ")")
    missing = results["missing"]
    lines = [f"**Partial: {len(missing)} of {results['searches']} searches not finished "
             f"yet** ({', '.join(missing)}); every figure below may change when they finish. "
             "The savings use only the seeds whose searches all finished ("
             + (", ".join(map(str, results["complete_seeds"])) or "none yet") + ").",
             ""] if missing else []
    lines += [
        f"Budget: {args.budget} training epochs per arm and seed (MO-ASHA, rungs from epoch "
        f"{args.min_epochs}, η = {args.reduction_factor:g}, {args.epochs} epochs a full trial), "
        f"{results['train_images']} training images, {results['validation_images']} validation "
        f"images, {results['test_images']} test images. Wall time of the searches: "
        f"{duration(results['search_seconds'])}.", "",
        f"FLOPs saving at the static front's knee accuracy (static knee FLOPs / the adaptive "
        f"front's FLOPs for that test accuracy): {verdict}.", "",
        "| seed | static knee (test acc., MFLOPs) | adaptive MFLOPs at that acc. | saving | "
        "best static acc. | saving at it | adaptive acc. at the knee's MFLOPs |",
        "|---|---|---:|---:|---:|---:|---:|"]
    for seed, r in s["per_seed"].items():
        if "static_knee" not in r:
            lines.append(f"| {seed} | – | – | – | – | – | – |")
            continue
        acc_at = r["adaptive_accuracy_at_knee_flops"]
        lines.append(
            f"| {seed} | {r['static_knee'][0]:.4f}, {_mf(r['static_knee'][1])} | "
            f"{_mf(r['adaptive_flops_at_knee_accuracy'])} | {_ratio(r['saving_at_knee'])} | "
            f"{r['static_best'][0]:.4f} | {_ratio(r['saving_at_best'])} | "
            f"{'–' if acc_at is None else f'{acc_at:.4f}'} |")
    if s["per_arm"]:
        lines += ["", "Each adaptive arm alone against the static front (saving at the knee "
                  "accuracy, per seed):", "", "| arm | "
                  + " | ".join(f"seed {k}" for k in s["per_seed"]) + " |",
                  "|---|" + "---:|" * len(s["per_seed"])]
    for arm, by_seed in s["per_arm"].items():
        cells = [_ratio(by_seed[k].get("saving_at_knee"))
                 if "static_knee" in by_seed.get(k, {}) else "–"  # –: no static front yet
                 for k in s["per_seed"]]
        lines.append(f"| {ARMS[arm].label} | " + " | ".join(cells) + " |")
    lines += ["", "Every arm's own test front (mean over seeds; best: its most accurate point, "
              "cheapest: its point with the fewest mean MFLOPs):", "",
              "| arm | kind | seeds | trials | search time | front points | best test acc. "
              "(MFLOPs) | cheapest (test acc., MFLOPs) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for arm, row in results["arms_table"].items():
        lines.append(
            f"| {ARMS[arm].label} | {'static' if ARMS[arm].static else 'adaptive'} | "
            f"{row['seeds']} | {row['trials']:.1f} | {duration(row['seconds'])} | "
            f"{row['front_points']:.1f} | {row['best'][0]:.4f} ({_mf(row['best'][1])}) | "
            f"{row['cheapest'][0]:.4f}, {_mf(row['cheapest'][1])} |")
    plateau = results.get("plateau")
    if plateau:
        lines += ["", f"Plateau: the static conv space's largest candidate reaches validation "
                  f"accuracy {plateau['best']:.4f} over {len(plateau['val_accuracy'])} epochs on "
                  f"{plateau['train_images']} images and is within {plateau['tolerance']} of it "
                  f"from epoch {plateau['plateau_epoch']} ({duration(plateau['seconds'])})."]
    return "\n".join(lines)


def plot(results: dict[str, Any], out: Path) -> None:
    """The static and adaptive test fronts of every seed (`fronts.png`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (seed, r) in enumerate(results["summary"]["per_seed"].items()):
        for key, colour, name in (("static_front", "tab:blue", "static"),
                                  ("adaptive_front", "tab:orange", "adaptive")):
            front = r.get(key) or []
            if front:
                ax.step([f / 1e6 for _, f in front], [a for a, _ in front], where="post",
                        color=colour, alpha=0.4 + 0.2 * (i % 3), marker="o", markersize=3,
                        label=f"{name}, seed {seed}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([2, 3, 5, 10, 20, 50, 100])
    ax.set_xlabel("mean MFLOPs per test image")
    ax.set_ylabel("test accuracy")
    ax.set_title("Adaptive against static test fronts")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fronts.png", dpi=120)
    plt.close(fig)


# ---- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: 0 1 2 (0 with --quick)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--budget", type=int, default=36,
                        help="training epochs per arm and seed, all trials together (B)")
    parser.add_argument("--epochs", type=int, default=9,
                        help="train.epochs of a full trial (the plateau measured: README)")
    parser.add_argument("--min-epochs", type=int, default=1, help="MO-ASHA's first rung")
    parser.add_argument("--reduction-factor", type=float, default=3.0)
    parser.add_argument("--train-limit", type=int, default=None,
                        help="training images (default: the whole training split)")
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="search.cpus_per_trial (one process per core: split by --seeds or "
                             "--arms)")
    parser.add_argument("--plateau", action="store_true",
                        help="measure where the static conv plateaus, then stop")
    parser.add_argument("--plateau-epochs", type=int, default=20)
    parser.add_argument("--plateau-tolerance", type=float, default=0.005)
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing; report the searches that finished")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the searches run (default runs/adaptive_vs_static, "
                             "runs/adaptive_vs_static_quick with --quick)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--quick", action="store_true",
                        help="tiny version: 1 seed, 2 epochs a trial, a budget of 4 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.epochs, args.plateau_epochs = args.seeds or [0], 4, 2, 2
        args.train_limit, args.val_fraction, args.test_limit = 400, 0.005, 300
        args.threads = 1
    args.seeds = args.seeds or [0, 1, 2]
    if args.budget < args.epochs:
        parser.error(f"--budget {args.budget} is less than one full trial ({args.epochs} epochs)")
    if args.runs is None:
        args.runs = Path("runs/adaptive_vs_static_quick" if args.quick
                         else "runs/adaptive_vs_static")
    args.runs, args.out = args.runs.resolve(), args.out.resolve()
    started = time.time()
    if args.plateau:
        return measure_plateau(args)

    labels = [f"{arm} seed {seed}" for seed in args.seeds for arm in args.arms]
    progress = Progress({label: args.budget for label in labels}, "epochs of the study")

    def eta(label: str, used: int, budget: int, seconds: float) -> None:
        progress.update(label, used, seconds)
    infos: dict[str, dict[int, dict[str, Any]]] = {}
    for seed in args.seeds:
        for arm in args.arms:
            workdir = args.runs / f"{arm}-seed{seed}"
            if args.report_only:
                done = workdir / "done.json"
                if not done.exists() or json.loads(done.read_text())["settings"] != \
                        settings_key(arm, args):
                    continue
                info = json.loads(done.read_text())
            else:
                first = args.reduction_factor * args.min_epochs
                info = search_to_budget(ROOT / ARMS[arm].space, overrides_of(arm, args),
                                        workdir, seed, args.budget, args.epochs, first,
                                        settings_key(arm, args), f"{arm} seed {seed}", eta,
                                        chunk=CHUNK)
            infos.setdefault(arm, {})[seed] = info

    measured = {arm: {seed: test_points(arm, Path(info["workdir"]), args)
                      for seed, info in by_seed.items()} for arm, by_seed in infos.items()}
    results = _results(measured, infos, args)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out)
    text = report(results, args)
    command = "python experiments/adaptive_vs_static/run.py" + (
        " " + " ".join(argv) if argv else "")
    settings = {"command": command, "machine": machine(args.threads),
                "seconds": time.time() - started,
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    write_results(args.out, "Adaptive against static", copy.deepcopy(results), settings, text)
    print(text)
    return results


def _results(measured: dict[str, dict[int, list[dict[str, Any]]]],
             infos: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace
             ) -> dict[str, Any]:
    """What results.json holds: the data sizes, the plateau, the summary and every point."""
    from condsearch.data import load_task

    task = load_task({"dataset": "fashion_mnist", "seed": 0, "val_fraction": args.val_fraction,
                      **({"train_limit": args.train_limit} if args.train_limit else {})})
    plateau = args.out / "plateau.json"
    # a seed with some arms unfinished would compare the static front with part of the adaptive
    whole = [s for s in args.seeds if all(s in measured.get(arm, {}) for arm in args.arms)]
    return {
        "target_saving": TARGET_SAVING,
        "train_images": int(task.train[1].shape[0]),
        "validation_images": int(task.val[1].shape[0]),
        "test_images": min(int(task.test[1].shape[0]), args.test_limit or math.inf),
        "search_seconds": sum(i["seconds"] for by_seed in infos.values()
                              for i in by_seed.values()),
        "arms": {arm: dataclasses.asdict(ARMS[arm]) for arm in measured},
        "plateau": json.loads(plateau.read_text()) if plateau.exists() else None,
        "searches": len(args.seeds) * len(args.arms),
        "missing": [f"{arm} seed {seed}" for seed in args.seeds for arm in args.arms
                    if seed not in measured.get(arm, {})],
        "complete_seeds": whole,
        "summary": summarise({arm: {s: rows for s, rows in by_seed.items() if s in whole}
                              for arm, by_seed in measured.items()}),
        "arms_table": arms_table(measured, infos, args),
        "points": {arm: {str(s): rows for s, rows in by_seed.items()}
                   for arm, by_seed in measured.items()},
    }


def arms_table(measured: dict[str, dict[int, list[dict[str, Any]]]],
               infos: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace
               ) -> dict[str, dict[str, Any]]:
    """Per arm, means over its seeds: trials trained, search wall time, test-front size, and the
    test front's most accurate and cheapest points."""
    from equal_compute import read_condsearch

    table = {}
    for arm, by_seed in measured.items():
        fronts = {s: pareto([(r["test_accuracy"], r["test_flops"]) for r in rows])
                  for s, rows in by_seed.items() if rows}
        if not fronts:
            continue
        best = [max(f, key=lambda p: (p[0], -p[1])) for f in fronts.values()]
        cheapest = [f[0] for f in fronts.values()]
        table[arm] = {
            "seeds": len(fronts),
            "trials": statistics.fmean(
                len(read_condsearch(Path(infos[arm][s]["workdir"]), args.epochs)) for s in fronts),
            "seconds": statistics.fmean(infos[arm][s]["seconds"] for s in fronts),
            "front_points": statistics.fmean(len(f) for f in fronts.values()),
            "best": [statistics.fmean(p[i] for p in best) for i in (0, 1)],
            "cheapest": [statistics.fmean(p[i] for p in cheapest) for i in (0, 1)],
        }
    return table


if __name__ == "__main__":
    from condsearch import SearchError

    try:
        main(sys.argv[1:] if len(sys.argv) > 1 else None)
    except KeyboardInterrupt:  # every finished trial is kept: a rerun resumes
        sys.exit("interrupted: rerun the same command to resume where it stopped")
    except SearchError as exc:  # e.g. an arm and seed another process is searching
        sys.exit(f"error: {exc}")
