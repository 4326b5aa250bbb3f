"""The GPU check: device-path tests, a search of the joint space, realized savings; one JSON.

All three run on one device: the tests of the code paths that differ on a GPU, a real search of
the joint space, and the realized-savings rows at batch 1 and 256.

Each part runs in a child process under a time cap, so that the whole stays under 8 minutes on
one NVIDIA GPU; a part that fails or runs past its cap is recorded with its error and the next
part still runs. The exit status is 1 when a part failed, 2 when the device is not there.

1. tests: `tests/test_device_paths.py` under pytest with CONDSEARCH_TEST_DEVICE set to the device
   (device selection, bf16 training, per-sample FLOPs of tensors on the device).
2. realized: `experiments/benchmarks/realized_savings.py --device D --quick --batches 1 256`,
   whose rows compare each block's FLOPs saving with its wall-clock saving.
3. search: `condsearch.search` on the joint space (`search_spaces/fashion_adaptive.yaml`: the
   backbone and every adaptive component chosen by the sampler) with `train.device` set; the
   trials completed, the wall time, the front and its hypervolume, read back from the study.
   It runs last, in the time the others left: no trial starts that the slowest one so far would
   not finish within its budget.

    bash experiments/gpu/run.sh                                      # cuda, under 8 minutes
    bash experiments/gpu/run.sh --device cpu --tiny --out /tmp/g.json  # the same path, small (CI)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPACE = ROOT / "search_spaces" / "fashion_adaptive.yaml"
TESTS = "tests/test_device_paths.py"
REALIZED = ROOT / "experiments" / "benchmarks" / "realized_savings.py"
PARTS = ("tests", "realized", "search")
#: how long a stopped part has to write what it has before it is killed
GRACE_S = 20.0
#: of the search's cap, what its process needs beside its trials: imports, then the front's
#: last write and reading the study back
SEARCH_MARGIN_S = 30.0


@dataclass(frozen=True)
class Plan:
    """What each part runs, and for how long at most (seconds)."""

    #: the whole check: the search's cap is what the parts before it left of this
    total_s: float
    caps: dict[str, float]
    trials: int
    search_overrides: tuple[str, ...]
    realized_args: tuple[str, ...]


#: one GPU, under 8 minutes (the whole, with a stopped part's grace). Fashion-MNIST's training
#: split (56,500 images, 3,500 held out), two epochs a trial; a shorter knob sweep than the
#: space's (up to 12 settings a trial, not 30), since every setting is a counted pass over the
#: validation split
FULL = Plan(total_s=450.0, caps={"tests": 70.0, "realized": 90.0, "search": 400.0}, trials=16,
            search_overrides=("train.epochs=2", "task.val_fraction=0.05",
                              "search.trial_timeout=90",
                              "sweep.early_exit.threshold=[0.6, 0.9, 0.99]",
                              "sweep.token_selection.keep_ratio=[0.25, 0.5]",
                              "sweep.adatape.theta=[1.5, 3.0]"),
            realized_args=("--quick",))
#: the same path in about a minute on two CPU cores: digits, 300 training images, one epoch
TINY = Plan(total_s=400.0, caps={"tests": 120.0, "realized": 90.0, "search": 150.0}, trials=2,
            search_overrides=("task.dataset=digits", "model.patch_size=2",
                              "task.train_limit=300", "train.epochs=1"),
            realized_args=("--quick", "--only", "early_exit"))


class Clock:
    """Seconds since the check started, for the progress lines."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start

    def say(self, part: str, text: str) -> None:
        print(f"[{self():6.1f} s] {part}: {text}", flush=True)


# ---- running a part in a child process ------------------------------------------------------------


@dataclass
class ChildRun:
    """How a child process ended: its exit status, whether the cap stopped it, its output's tail."""

    returncode: int | None
    timed_out: bool
    seconds: float
    tail: list[str]


def run_child(part: str, cmd: list[str], cap: float, clock: Clock,
              env: dict[str, str] | None = None) -> ChildRun:
    """Run `cmd` in a session of its own, echoing its lines with the elapsed time. Past `cap`
    it gets SIGINT (a search then stops after recording), then SIGKILL after GRACE_S."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def echo() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            clock.say(part, line)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        timed_out = True
        clock.say(part, f"past its cap of {cap:.0f} s: stopping it")
        _signal(proc, signal.SIGINT)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait()
    finally:
        if proc.poll() is None:  # the check itself was interrupted
            _signal(proc, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=5)
    return ChildRun(proc.returncode, timed_out, time.perf_counter() - started, list(tail))


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _failure(run: ChildRun, cap: float) -> str | None:
    """Why a child's run counts as failed, from how it ended (None: it ended well)."""
    if run.timed_out:
        return f"ran past its cap of {cap:.0f} s"
    if run.returncode != 0:
        last = next((line for line in reversed(run.tail) if line.strip()), "")
        return f"exit status {run.returncode}: {last[-500:]}"
    return None


# ---- part 1: the device-path tests ----------------------------------------------------------------


def part_tests(device: str, plan: Plan, tmp: Path, clock: Clock) -> dict[str, Any]:
    """pytest on the device-path tests; counts from its JUnit report."""
    report = tmp / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
           f"--junitxml={report}", TESTS]
    run = run_child("tests", cmd, plan.caps["tests"], clock, {"CONDSEARCH_TEST_DEVICE": device})
    out: dict[str, Any] = {"command": f"CONDSEARCH_TEST_DEVICE={device} "
                                      f"{' '.join(['python', *cmd[1:-2], cmd[-1]])}",
                           "device": device, "seconds": run.seconds,
                           "cap_s": plan.caps["tests"]}
    if report.exists():
        out.update(junit_counts(report))
    else:
        out.update(passed=0, failed=0, errors=0, skipped=0, xfailed=0, problems=[])
    error = _failure(run, plan.caps["tests"])
    if error is None and out["skipped"]:
        error = f"{out['skipped']} test(s) skipped: the device path was not tested"
    if error is None and not out["passed"]:
        error = "no test ran"
    out["ok"], out["error"] = error is None, error
    return out


def junit_counts(report: Path) -> dict[str, Any]:
    """Passed, failed, errored, skipped and expected-to-fail tests of a JUnit XML report, and
    what went wrong. An xfail marks a known bug in condsearch (its reason names it); JUnit
    counts it among the skipped, this among `xfailed`."""
    root = ET.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None, f"no testsuite in {report}"
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    problems = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = "xfailed" if found.get("type") == "pytest.xfail" else kind
                problems.append({"test": case.get("name"), "outcome": outcome,
                                 "message": (found.get("message") or "")[:500]})
    xfailed = sum(p["outcome"] == "xfailed" for p in problems)
    return {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": counts["failures"], "errors": counts["errors"],
            "skipped": counts["skipped"] - xfailed, "xfailed": xfailed,
            "pytest_seconds": float(suite.get("time", 0.0)), "problems": problems}


# ---- part 2: a search of the joint space ----------------------------------------------------------


class BudgetSpent(KeyboardInterrupt):
    """Raised after a trial is recorded when the next one would not finish within the budget:
    the search stops as it does on Ctrl-C, with every completed trial kept."""


def search_in_this_process(device: str, plan: Plan, budget: float, workdir: Path, result: Path,
                           extra: list[str]) -> None:
    """The search part's child: run the search, then write what the study holds to `result`.
    No trial starts that the slowest so far would not finish within `budget` seconds of the
    search's start; `extra`: more `key.path=value` overrides of the space (`--set`)."""
    import condsearch as cs

    overrides = [*plan.search_overrides, *extra, f"train.device={device}"]
    space = cs.load_space(str(SPACE), overrides=overrides)
    started = time.perf_counter()
    durations: list[float] = []

    def after_trial(study: Any, trial: Any) -> None:
        durations.append(trial.duration.total_seconds() if trial.duration else 0.0)
        values = ", ".join(f"{v:.4g}" for v in trial.values or []) or trial.state.name.lower()
        print(f"trial {trial.number} ({len(durations)}/{plan.trials}) {durations[-1]:.1f} s: "
              f"{values}", flush=True)
        elapsed = time.perf_counter() - started
        if len(durations) < plan.trials and elapsed + max(durations) > budget:
            raise BudgetSpent(f"{elapsed:.1f} s spent and the slowest trial took "
                              f"{max(durations):.1f} s, against a budget of {budget:.0f} s")

    summary, stopped = None, None
    try:
        summary = cs.search(space, trials=plan.trials, workdir=workdir, progress=False,
                            tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
                            callbacks=[after_trial])
    except BudgetSpent as exc:
        stopped = f"stopped at the time budget: {exc}"
    except KeyboardInterrupt:
        stopped = "stopped: the part ran past its cap"
    seconds = time.perf_counter() - started
    out = read_search(workdir)
    out.update(space=str(SPACE.relative_to(ROOT)), overrides=overrides,
               trials_requested=plan.trials, budget_s=budget, wall_s=seconds,
               trial_seconds=durations, stopped=stopped)
    if summary is not None:  # the search's own figure, which the study's must equal
        out["hypervolume_reported"] = summary.hypervolume
    result.write_text(json.dumps(out, indent=2))


def read_search(workdir: Path) -> dict[str, Any]:
    """Trials, front and hypervolume as the study in `workdir` records them."""
    import optuna

    import condsearch as cs
    from condsearch._names import ATTR_DERIVED_FROM, ATTR_ERROR, ATTR_HYPERVOLUME_REFERENCE
    from condsearch.orchestrate._pareto import hypervolume

    state, points = cs.all_points(workdir)
    study = optuna.load_study(study_name=state.study_name, storage=state.storage)
    trained = [t for t in study.get_trials(deepcopy=False)
               if ATTR_DERIVED_FROM not in t.user_attrs]
    done = [t for t in trained if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in trained if t.state == optuna.trial.TrialState.FAIL]
    names, directions = state.names(), state.directions()
    front = sorted((p for p in points if p.on_front), key=lambda p: p.values["flops"])
    reference = study.user_attrs.get(ATTR_HYPERVOLUME_REFERENCE)
    volume = (hypervolume([[p.values[n] for n in names] for p in front], directions, reference)
              if reference is not None and front else 0.0)
    return {
        "trials_completed": len(done), "trials_failed": len(failed),
        "failures": [{"trial": t.number, "reason": str(t.user_attrs.get(ATTR_ERROR, ""))[:500]}
                     for t in failed],
        "points": len(points),
        "front": [{"trial": p.trial, "derived": p.derived, "accuracy": p.values["accuracy"],
                   "flops": p.values["flops"], "knobs": p.knobs,
                   "backbone": p.arch.get("model", {}).get("backbone"),
                   "components": sorted(name for name, c in
                                        p.arch.get("model", {}).get("components", {}).items()
                                        if isinstance(c, dict) and c.get("enabled"))}
                  for p in front],
        "hypervolume": volume,
        "hypervolume_reference": dict(zip(names, reference)) if reference else None,
    }


def part_search(device: str, plan: Plan, tiny: bool, cap: float, workdir: Path,
                extra: list[str], tmp: Path, clock: Clock) -> dict[str, Any]:
    """The search in a child process (this script with --search-child), stopped at `cap`."""
    result = tmp / "search.json"
    budget = max(1.0, cap - SEARCH_MARGIN_S)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--device", device,
           "--trials", str(plan.trials), "--workdir", str(workdir), "--search-child", str(result),
           f"--budget={budget:.0f}", *(f"--set={override}" for override in extra),
           *(["--tiny"] if tiny else [])]
    run = run_child("search", cmd, cap, clock)
    out: dict[str, Any] = json.loads(result.read_text()) if result.exists() else {}
    out.update(seconds=run.seconds, cap_s=cap, workdir=str(workdir))
    error = _failure(run, cap)
    if error is None and out.get("trials_failed"):
        reasons = "; ".join(f"trial {f['trial']}: {f['reason']}" for f in out["failures"][:3])
        error = f"{out['trials_failed']} trial(s) failed: {reasons}"
    if error is None and not out.get("trials_completed"):
        error = "no trial completed"
    out["ok"], out["error"] = error is None, error
    return out


# ---- part 3: realized savings ---------------------------------------------------------------------


def part_realized(device: str, plan: Plan, tmp: Path, clock: Clock) -> dict[str, Any]:
    """The realized-savings benchmark on the device, at batch 1 and batch 256."""
    report = tmp / "realized_savings.json"
    cmd = [sys.executable, str(REALIZED), "--device", device, *plan.realized_args,
           "--batches", "1", "256", "--out", str(report)]
    run = run_child("realized", cmd, plan.caps["realized"], clock)
    out: dict[str, Any] = {"command": " ".join(["python", str(REALIZED.relative_to(ROOT)),
                                                *cmd[2:-2]]),
                           "seconds": run.seconds, "cap_s": plan.caps["realized"]}
    error = _failure(run, plan.caps["realized"])
    if report.exists():
        found = json.loads(report.read_text())
        out.update(rows=found["results"], flop_cross_checks=found["flop_cross_checks"],
                   seconds_per_section=found["seconds_per_section"],
                   measured_on=found["machine"])
        if error is None and not {1, 256} <= {r["batch"] for r in found["results"]}:
            error = "no rows at both batch 1 and batch 256"
    elif error is None:
        error = "it wrote no report"
    out["ok"], out["error"] = error is None, error
    return out


# ---- the whole check ------------------------------------------------------------------------------


def machine(device: str) -> dict[str, Any]:
    """The machine, as the experiments' reports name it, and the GPU's name on CUDA."""
    import torch

    sys.path.insert(0, str(ROOT / "experiments"))
    from reporting import machine as machine_line

    found: dict[str, Any] = {"machine": machine_line(), "torch": torch.__version__,
                             "cuda_available": torch.cuda.is_available()}
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        found.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                     gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="where every part computes (default cuda)")
    parser.add_argument("--tiny", action="store_true",
                        help="a small version of each part (about a minute on two CPU cores)")
    parser.add_argument("--out", default=str(HERE / "gpu.json"), help="the JSON to write")
    parser.add_argument("--workdir", help="the search's workdir (default: a temporary one, "
                                          "removed at the end); an existing one is resumed")
    parser.add_argument("--trials", type=int, help="the search's trials (default 16; 2 with "
                                                   "--tiny); it stops earlier at its budget")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the searched space, as `condsearch search "
                             "--set` does (e.g. task.path=DIR where Fashion-MNIST's IDX files "
                             "are not installed); repeatable")
    parser.add_argument("--search-child", metavar="RESULT", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = TINY if args.tiny else FULL
    if args.trials is not None:
        plan = dataclasses.replace(plan, trials=args.trials)
    if args.search_child:
        search_in_this_process(args.device, plan, args.budget, Path(args.workdir),
                               Path(args.search_child), args.set)
        return 0

    clock = Clock()
    out = Path(args.out).resolve()
    clock.say("check", f"device {args.device}, {'tiny' if args.tiny else 'full'} plan; "
                       f"writing {out}")
    report: dict[str, Any] = {
        "command": " ".join(["bash experiments/gpu/run.sh", *(argv or sys.argv[1:])]),
        "device": args.device, "tiny": args.tiny,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "plan": asdict(plan), **machine(args.device), "parts": {}}
    clock.say("check", f"{report['machine']}" + (f"; GPU {report['gpu']}" if "gpu" in report
                                                 else ""))
    if args.device == "cuda" and not report["cuda_available"]:
        report.update(ok=False, seconds=clock(),
                      error="--device cuda but no CUDA device is visible to this process; "
                            "--device cpu --tiny runs the same path on the CPU")
        _write(out, report)
        clock.say("check", report["error"])
        return 2
    with tempfile.TemporaryDirectory(prefix="condsearch-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        workdir = Path(args.workdir).resolve() if args.workdir else tmp / "search"
        for part in PARTS:
            cap = plan.caps[part]
            if part == "search":  # last: what the others left, less a stopped part's grace
                cap = min(cap, plan.total_s - clock() - GRACE_S)
            clock.say(part, f"started (cap {cap:.0f} s)")
            try:
                if part == "tests":
                    result = part_tests(args.device, plan, tmp, clock)
                elif part == "realized":
                    result = part_realized(args.device, plan, tmp, clock)
                else:
                    result = part_search(args.device, plan, args.tiny, cap, workdir, args.set,
                                         tmp, clock)
            except Exception as exc:  # this script's own fault: recorded, the next part runs
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            if not args.workdir and part == "search":
                result["workdir"] = None  # removed with the temporary folder
            report["parts"][part] = result
            _write(out, report)  # what is known so far, should a later part hang the machine
            clock.say(part, "ok" if result["ok"] else f"FAILED: {result['error']}")
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["ok"] = all(p["ok"] for p in report["parts"].values())
    report["seconds"] = clock()
    _write(out, report)
    print(summary(report), flush=True)
    return 0 if report["ok"] else 1


def summary(report: dict[str, Any]) -> str:
    """A few lines on what each part found."""
    parts = report["parts"]
    lines = [f"\n{report['device']}, {report['seconds']:.0f} s in all; "
             f"{'every part ok' if report['ok'] else 'a part FAILED'}"]
    tests = parts.get("tests", {})
    if "passed" in tests:
        lines.append(f"  tests: {tests['passed']} passed, {tests['failed']} failed, "
                     f"{tests['errors']} errors, {tests['skipped']} skipped, "
                     f"{tests['xfailed']} xfailed (known bugs) ({tests['seconds']:.0f} s)")
    search = parts.get("search", {})
    if "trials_completed" in search:
        lines.append(f"  search: {search['trials_completed']}/{search['trials_requested']} trials "
                     f"in {search['wall_s']:.0f} s, front of {len(search['front'])}, "
                     f"hypervolume {search['hypervolume']:.4g}")
        lines += [f"    accuracy {p['accuracy']:.4f}  flops {p['flops']:,.0f}  "
                  f"({_model_name(p)}, trial {p['trial']}{', derived' if p['derived'] else ''})"
                  for p in search["front"]]
    realized = parts.get("realized", {})
    for row in realized.get("rows", []):
        lines.append(f"  {row['component']:15} batch {row['batch']:>3}  FLOPs saving "
                     f"{row['flops_saving']:6.1%}  time saving {row['time_saving']:6.1%}  "
                     f"{row['figure']} {row['value']:.2f}  vs {row['baseline']}")
    for name, part in parts.items():
        if not part["ok"]:
            lines.append(f"  {name} FAILED: {part['error']}")
    return "\n".join(lines)


def _model_name(point: dict[str, Any]) -> str:
    """A front point's backbone, and for the token transformer its components (or dense)."""
    if point["backbone"] != "token_transformer":
        return str(point["backbone"])
    return f"token_transformer {'+'.join(point['components']) or 'dense'}"


def _write(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
