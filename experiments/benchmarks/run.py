"""One benchmark report: every benchmark of the project, each figure against its target.

Runs (or, with `--reuse`, reads the JSON last written by) each benchmark beside this script:

- `flop_counting.py`: per-sample FLOPs against FlopCounterMode, and counting overhead;
- `static_counters.py`: what static FLOP counters (thop, fvcore, FlopCounterMode on a dummy
  input) report for dense and adaptive models, against the mean per-sample FLOPs (informational);
- `realized_savings.py`: how much of each component's FLOPs saving shows as wall-clock saving;
- `orchestration.py`: per-trial overhead of a search, local and on Ray, its growth over 1,000
  trials, memory, and scaling (trials per hour at Ray concurrency 1 and 2);
- `contention.py`: the quick start's CPU time beside busy processes against a quiet machine;

and reads the results of the studies too long to run with them (`experiments/multi_fidelity`,
about two hours: its hypervolume ratios at equal compute);

then writes `RESULTS.md` and `results.json` (the machine, every figure, its target from the
docs/architecture.md's "Performance targets", ✓ or ✗, and for each ✗ the profiled reason).

    python experiments/benchmarks/run.py            # every benchmark, full size (about 20 min)
    python experiments/benchmarks/run.py --reuse    # no new measurement: report the last JSONs
    python experiments/benchmarks/run.py --quick --out /tmp/bench   # smoke versions (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from reporting import machine  # noqa: E402

#: benchmark -> (full arguments, quick arguments)
BENCHMARKS = {
    "flop_counting": ([], ["--quick"]),
    "static_counters": ([], ["--quick"]),
    "realized_savings": ([], ["--quick"]),
    "orchestration": (["--trials", "10", "1000", "--ray-trials", "16", "--concurrency", "1", "2"],
                      ["--quick"]),
    "contention": ([], ["--quick", "--trials", "2"]),
}

#: studies too long to run here (hours): the report reads the results they last wrote
STUDIES = {"multi_fidelity": HERE.parent / "multi_fidelity" / "results.json",
           "adaptive_vs_static": HERE.parent / "adaptive_vs_static" / "results.json"}
#: each study's target, named in the report while the study has no results yet
STUDY_TARGETS = {"multi_fidelity": "hypervolume at equal compute ≥ 1.15× the full-budget "
                                   "default sampler, ≥ 1.00× Syne Tune's MOASHA",
                 "adaptive_vs_static": "the adaptive front reaches the static front's knee test "
                                       "accuracy with ≥ 1.5× fewer mean FLOPs per image"}

#: Why a figure misses its target, from the profiles in README.md (keyed by a prefix of the
#: figure's name); shown beside every ✗.
WHY = {
    "flop_counting": "every op of the forward pass goes through a Python dispatch hook "
                     "(~10 µs each); on small models the ops themselves take about as long",
    "realized_savings/token_selection": "at batch 1 each transformer layer's ~25 ops have fixed "
                                        "costs that do not shrink with the token count (0.47 ms "
                                        "on 50 tokens, 0.38 ms on 26 at dim 64); at dim 192 each "
                                        "layer's 1.2 MB of weights is re-read per sample",
    "realized_savings/cigt": "at batch 1 the routers cost ~170 µs (their first Linear is evicted "
                             "from cache by the conv and leaf weights and re-read per sample) "
                             "plus ~30 µs of trellis bookkeeping, against a 0.86 ms budget; even "
                             "free routing would realise only ~0.9 against thick",
    "realized_savings/nac": "at batch 1 every keep ratio runs the same 622 ops; a matmul on 8 "
                            "rows costs half of one on 64 and GELU ≥ 9 µs per call, so dropping "
                            "mediators removes rows, not time (fused kernels would close it)",
    "realized_savings/moe": "expert dispatch (gather, per-expert GEMMs, index_add) against one "
                            "fused GEMM; the all-experts row swings with machine load",
    "adaptive_vs_static": "see experiments/adaptive_vs_static/README.md, which compares each "
                          "adaptive family with the static front seed by seed",
    "multi_fidelity": "see experiments/multi_fidelity/README.md, which measures why (the rank "
                      "correlation of early-rung accuracy with final accuracy, the trials each "
                      "configuration trained to the end)",
    "orchestration/local overhead": "per trial ~70 ms of MLflow SQLite store calls (run create, "
                                    "one log_batch, weights artifact, end) and ~50 ms of Optuna "
                                    "SQLite transactions (tell, attributes, derived trials), each "
                                    "a synced write (profile in README.md)",
}


def run_benchmark(name: str, quick: bool, out: Path) -> tuple[Path, float, int]:
    """Run one benchmark script; return its JSON, its wall time and its exit code."""
    full, smoke = BENCHMARKS[name]
    target = out / f"{name}.json"
    cmd = [sys.executable, str(HERE / f"{name}.py"), *(smoke if quick else full),
           "--out", str(target)]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd[1:])}", flush=True)
    started = time.time()
    code = subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return target, time.time() - started, code


def _why(key: str) -> str:
    return next((text for prefix, text in WHY.items() if key.startswith(prefix)), "")


def _row(bench: str, figure: str, value: float, unit: str, target: str, ok: bool | None,
         key: str) -> dict[str, Any]:
    return {"benchmark": bench, "figure": figure, "value": value, "unit": unit,
            "target": target, "ok": ok, "why": "" if ok is not False else _why(key)}


def flop_counting_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Within-1% share and counting overhead per case."""
    rows = []
    for r in report["results"]:
        rows.append(_row("flop_counting", f"{r['case']}: samples within 1% of FlopCounterMode",
                         r["within_1pct"], "share", "≥ 0.99", r["within_1pct"] >= 0.99,
                         "flop_counting"))
        rows.append(_row("flop_counting", f"{r['case']}, batch {r['batch']}: counted / plain "
                         "forward time", r["overhead"], "×", "≤ 1.5", r["overhead"] <= 1.5,
                         "flop_counting"))
    return rows


def static_counters_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each static counter's signed error (%) against the mean per-sample FLOPs, per model, on
    one real sample (the other dummies in the label); informational. A tool that failed on a
    model has no row (its reason is in the JSON and the README)."""
    rows = []
    for r in report["results"]:
        for tool, per_dummy in r["static"].items():
            real = per_dummy["real"]
            if "error_pct" not in real:
                continue
            others = ", ".join(f"{d} {e['error_pct']:+.1f}%" for d, e in per_dummy.items()
                               if d != "real" and "error_pct" in e)
            if real.get("error_pct_norms_off", real["error_pct"]) != real["error_pct"]:
                others += f"; norms off {real['error_pct_norms_off']:+.1f}%"
            rows.append(_row("static_counters", f"{r['name']} ({r['dataset']}): {tool} on one "
                             f"real sample, error against the mean per-sample FLOPs ({others})",
                             real["error_pct"], "%", "none (informational)", None,
                             "static_counters"))
    return rows


def realized_savings_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row that has a target (informational rows are kept, with no verdict)."""
    rows = []
    for r in report["results"]:
        ratio = r["figure"] == "time_ratio"
        target = r.get("target")
        if target is None:
            shown, ok = "none (informational)", None
        else:
            shown = f"{'≤' if ratio else '≥'} {target:.2f}"
            ok = bool(r.get("target_met"))
        figure = (f"{r['component']} {r['setting']}, batch {r['batch']}, against "
                  f"{r['baseline']}: {'t(adaptive) / t(baseline)' if ratio else 'realized speedup'}")
        rows.append(_row("realized_savings", figure, r["value"], "×" if ratio else "",
                         shown, ok, f"realized_savings/{r['component']}"))
    for check in report.get("flop_cross_checks", []):
        err = check["max_rel_error"]
        rows.append(_row("realized_savings", f"{check['model']}: FLOPs against FlopCounterMode "
                         "(max relative error)", err, "", "≤ 0.01", err <= 0.01, "flop_counting"))
    return rows


def orchestration_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdicts, then trials per hour (scaling; informational)."""
    rows = [_row("orchestration", v["check"], v["value"], v["unit"], v["target"], v["ok"],
                 f"orchestration/{v['check']}") for v in report.get("verdicts", [])]
    for r in report.get("local", []) + report.get("ray", []):
        label = (f"local, {r['trials']} trials" if r["backend"] == "local" else
                 f"Ray, concurrency {r['concurrency']}, {r['trials']} trials"
                 + ("" if r.get("reuse_actors", True) else ", no worker reuse"))
        rows.append(_row("scaling", f"{label}: trials per hour", r["trials_per_hour"], "/h",
                         "none (informational)", None, "scaling"))
    return rows


def contention_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The quick start's CPU time under load over quiet (the target), and its wall time."""
    load = report["load"]
    return [
        _row("contention", f"quick start ({report['trials']} trials), CPU time at load {load} / "
             "quiet", report["cpu_ratio"], "×", "≤ 1.5", report["ok"], "contention"),
        _row("contention", f"quick start, wall time at load {load} / quiet",
             report["wall_ratio"], "×", "none (informational)", None, "contention"),
        _row("contention", "quick start, quiet wall time", report["quiet"]["wall_s"], "s",
             "none (informational)", None, "contention"),
    ]


def multi_fidelity_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratios of `tpe_mo_asha`'s hypervolume at equal compute to the full-budget default
    sampler's and to Syne Tune's MOASHA (its own README says why a target is missed)."""
    rows = []
    names = {"tpe_full": "the full-budget default sampler",
             "syne_tune_moasha": "Syne Tune's MOASHA (as shipped)",
             "syne_tune_moasha_ranked": "Syne Tune's MOASHA given correct ranks"}
    for against, entry in report.get("ratios", {}).items():
        if entry.get("skipped") or against not in names:
            continue
        for kind, label in (("hypervolume", "with derived points"),
                            ("hypervolume_trained_only", "trained points only")):
            ratio = entry.get(kind, {}).get("ratio")
            if ratio is None or not math.isfinite(ratio):
                continue
            primary = kind == "hypervolume" and against in ("tpe_full", "syne_tune_moasha")
            rows.append(_row(
                "multi_fidelity", f"hypervolume at {report['budget_epochs']} epochs, mo_asha + "
                f"default sampler / {names[against]}, {label}", ratio, "×",
                f"≥ {entry['target']:g}" if primary else "none (informational)",
                (ratio >= entry["target"]) if primary else None, "multi_fidelity"))
    why = _multi_fidelity_why(report)
    for row in rows:
        if row["ok"] is False and why:
            row["why"] = why
    return rows


def _multi_fidelity_why(report: dict[str, Any]) -> str:
    """The study's measured reasons, from its results: the headroom any search showed over the
    full-budget sampler, and how well an early rung's accuracy predicts the final one."""
    ceiling = report.get("ceiling", {}).get("ratio_over_tpe_full")
    full = report.get("rank_correlation", {}).get("all full-budget", {})
    parts = []
    if ceiling is not None and math.isfinite(ceiling):
        parts.append(f"the union of every front found at the budget has {ceiling:.3f}× the "
                     "full-budget sampler's hypervolume (the most any search could show)")
    if full:
        parts.append("early rungs rank candidates poorly (Spearman ρ of accuracy at " + ", ".join(
            f"epoch {e} with the final one {v['spearman']:.2f}" for e, v in full.items()
            if math.isfinite(v["spearman"])) + f", over {max(v['trials'] for v in full.values())}"
            " full-budget trials)")
    return "; ".join(parts) + " (experiments/multi_fidelity/README.md)" if parts else ""


def adaptive_vs_static_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The study's headline: static knee FLOPs over the adaptive front's FLOPs at the knee's test
    accuracy, the mean over the seeds that reached it (seeds that never reached it miss)."""
    if report.get("missing"):  # a partial study has no headline: "Studies without results yet"
        return []
    head = report["summary"]["saving_at_knee"]
    seeds = len(report["summary"]["per_seed"])
    if head["mean"] is None:
        if not head["unreached"]:
            return []
        return [_row("adaptive_vs_static", "FLOPs saving at the static knee's test accuracy: the "
                     f"adaptive front never reached that accuracy ({head['unreached']} of {seeds} "
                     "seed(s)); 0 stands for no saving", 0.0, "×",
                     f"≥ {report['target_saving']:g}", False, "adaptive_vs_static")]
    ok = head["mean"] >= report["target_saving"] and not head["unreached"]
    row = _row("adaptive_vs_static", f"FLOPs saving at the static knee's test accuracy, mean of "
               f"{head['seeds']} of {seeds} seed(s) (sd {head['stdev']:.2f}"
               + (f"; not reached in {head['unreached']}" if head["unreached"] else "") + ")",
               head["mean"], "×", f"≥ {report['target_saving']:g}", ok, "adaptive_vs_static")
    return [row]


ROWS = {"flop_counting": flop_counting_rows, "static_counters": static_counters_rows,
        "realized_savings": realized_savings_rows,
        "orchestration": orchestration_rows, "contention": contention_rows,
        "multi_fidelity": multi_fidelity_rows, "adaptive_vs_static": adaptive_vs_static_rows}


def _value(row: dict[str, Any]) -> str:
    v = row["value"]
    if row["unit"] == "share":
        return f"{v:.1%}"
    if row["unit"] in ("/h", "MB"):
        return f"{v:,.0f} {row['unit'].lstrip('/') if row['unit'] == 'MB' else ''}".strip()
    return f"{v:.3g} {row['unit']}".strip()


def markdown(rows: list[dict[str, Any]], sources: dict[str, Any], host: str) -> str:
    """RESULTS.md: one table per benchmark, then every miss with its reason."""
    tick = {True: "✓", False: "✗", None: "–"}
    met = sum(r["ok"] is True for r in rows)
    missed = [r for r in rows if r["ok"] is False]
    lines = ["# Benchmark results", "",
             "Written by `python experiments/benchmarks/run.py`; do not edit by hand. Targets are "
             "docs/architecture.md's \"Performance targets\" (where it names none, the target is "
             "ours, and the benchmark's README says so). Each benchmark's README defines its "
             "figures and how they are timed.", "",
             f"Machine: {host} wrote this report; each section names the machine it was "
             "measured on.", "",
             f"**{met} targets met, {len(missed)} missed**, "
             f"{sum(r['ok'] is None for r in rows)} figures informational.", ""]
    for bench in ("flop_counting", "static_counters", "realized_savings", "orchestration",
                  "scaling", "contention", "multi_fidelity", "adaptive_vs_static"):
        chosen = [r for r in rows if r["benchmark"] == bench]
        if not chosen:
            continue
        src = sources.get("orchestration" if bench == "scaling" else bench, {})
        lines += [f"## {bench.replace('_', ' ')}", "",
                  f"From `{src.get('json', '?')}`, measured {src.get('measured', '?')} on "
                  f"{src.get('machine', '?')} (load average {src.get('load', '?')}).", "",
                  "| figure | value | target | |", "|---|---:|---|---|"]
        lines += [f"| {r['figure']} | {_value(r)} | {r['target']} | {tick[r['ok']]} |"
                  for r in chosen]
        lines.append("")
    waiting = [name for name in STUDIES if not any(r["benchmark"] == name for r in rows)]
    if waiting:
        lines += ["## Studies without results yet", ""]
        lines += [f"- {name.replace('_', ' ')} (experiments/{name}/README.md): target "
                  f"{STUDY_TARGETS[name]}; {_study_state(name)}." for name in waiting]
        lines.append("")
    if missed:
        lines += ["## Misses and why", "",
                  "Reasons come from profiles (see each benchmark's README section), not guesses.",
                  ""]
        lines += [f"- ✗ {r['figure']} = {_value(r)} (target {r['target']}): "
                  f"{r['why'] or 'not profiled yet'}" for r in missed]
    return "\n".join(lines) + "\n"


def _measured_at(path: Path, report: dict[str, Any]) -> str:
    """When a JSON was measured: its own `measured` stamp, else the commit that last wrote it
    (a checkout gives every file the checkout's time), else the file's time."""
    if report.get("measured"):
        return str(report["measured"])
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%cd", "--date=format:%Y-%m-%d %H:%M",
                               "--", path.name], cwd=path.parent, capture_output=True,
                              text=True, timeout=30)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))


def _study_state(name: str) -> str:
    """Where a study without a headline stands: not run, or how many searches it lacks."""
    path = STUDIES[name]
    report = json.loads(path.read_text()) if path.exists() else {}
    if not report.get("missing"):
        return "not measured at its budget yet"
    total = report["searches"]
    return (f"partial, {total - len(report['missing'])} of {total} searches finished (the README "
            "shows them)")


def _machine_of(report: dict[str, Any]) -> str:
    m = report.get("machine", {})
    if not isinstance(m, dict):
        return str(m)
    return str(m.get("description") or m.get("cpu_model") or m.get("platform") or "not recorded")


def _when(path: Path, report: dict[str, Any]) -> tuple[str, str]:
    stamp = _measured_at(path, report)
    m = report.get("machine", {})
    load = m.get("load_average_start")
    return stamp, ("/".join(f"{x:.1f}" for x in load[:1] + m.get("load_average_end", [])[:1])
                   if load else "not recorded")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS))
    parser.add_argument("--reuse", action="store_true", help="report the last JSONs, run nothing")
    parser.add_argument("--quick", action="store_true", help="smoke versions of each benchmark")
    parser.add_argument("--out", type=Path, default=HERE, help="where JSONs and the report go")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    sources: dict[str, Any] = {}
    failures = []
    for name in args.only:
        path, seconds, code = (args.out / f"{name}.json", 0.0, 0)
        if not args.reuse:
            path, seconds, code = run_benchmark(name, args.quick, args.out)
        if code != 0 or not path.exists():
            failures.append(f"{name} (exit {code})")
            continue
        report = json.loads(path.read_text())
        stamp, load = _when(path, report)
        sources[name] = {"json": path.name, "measured": stamp, "load": load,
                         "machine": _machine_of(report),
                         "seconds": seconds or report.get("seconds")}
        rows += ROWS[name](report)
    for name, path in STUDIES.items():  # read, never run: see each study's README
        if path.exists():
            report = json.loads(path.read_text())
            stamp, load = _when(path, report)
            sources[name] = {"json": str(path.relative_to(HERE.parent)), "measured": stamp,
                             "load": load, "machine": _machine_of(report.get("settings", {})),
                             "seconds": report.get("settings", {}).get("seconds")}
            rows += ROWS[name](report)
    host = machine(1)
    (args.out / "RESULTS.md").write_text(markdown(rows, sources, host))
    (args.out / "results.json").write_text(json.dumps(
        {"machine": host, "sources": sources, "failures": failures, "figures": rows},
        indent=2) + "\n")
    missed = sum(r["ok"] is False for r in rows)
    print(f"{len(rows)} figures, {sum(r['ok'] is True for r in rows)} met, {missed} missed; "
          f"wrote {args.out / 'RESULTS.md'}")
    if failures:
        print("benchmarks that failed: " + ", ".join(failures))
    return rows


if __name__ == "__main__":
    main()
