"""Benchmark: orchestration overhead per trial, beyond training and evaluation.

Real searches (`condsearch.orchestrate.search`) of a tiny space (digits, 200 training samples, a
one-layer dim-8 transformer, one epoch, random sampler, no sweep), tracked in a temporary
workdir (SQLite study and MLflow store, as a search creates by default). A trial's overhead is
its wall time in the search minus the time it spent training and evaluating.

How the split is measured. The benchmark wraps, in its own process only, the functions a trial
calls and charges each call its exclusive time (a nested wrapped call is charged to itself, not
to its caller):

- compute: `condsearch.train.fit` (training, including its per-epoch validation accuracy),
  `condsearch.train.evaluate` (accuracy and per-sample FLOPs), `condsearch.cost.batch1_latency_ms`
  (the latency objective) and `condsearch.train.sweep_knobs`. MLflow calls made from inside
  `fit` (the per-epoch metrics) are charged to MLflow, not to compute.
- overhead, itemised: `Study.ask`, `SearchSpace.sample`, `load_task`, `build_model`, the trial's
  MLflow runs (`TrialRun`), saving weights and arch (`_save_weights_and_arch`, less its MLflow
  upload), `record_result` (telling the study), the front update, the Pareto tags, the
  hypervolume metric, `gc.collect`, and "other" (the rest of the trial's wall time).

Store writes: per local trial, the database commits (Optuna's and MLflow's SQLite stores) and the
`MlflowClient` calls, counted; unlike the times they do not depend on the machine's load.

Local backend: a trial's wall time runs from `Study.ask` to the end of `Session.record`. The
search's fixed cost (opening the study and the MLflow store, the parent run; at the end the
front files) is reported apart, and also spread over the trials ("amortised").

Ray backend: the benchmark starts a local Ray instance (`ray.init(address="local")`, so it never
joins a cluster that is already running on the machine) with a worker setup hook that installs
the same wrappers in every worker; each worker appends its trial's times to a file. A trial's
wall time runs from `SpaceSearcher.suggest` to the end of `on_trial_complete` in the driver. It
is split into dispatch (suggest to `run_trial` starting on a worker), the trial itself, and
return (`run_trial` ending to the driver having recorded it). MLflow's own start and end times of
each trial run are kept as a cross-check. Concurrency 1 gives the overhead per trial;
concurrency 2 the throughput of this machine's 2 cores.

Memory: the resident set (VmRSS) of the search process after every trial, and its peak.

Targets (docs/architecture.md): overhead <= 0.1 s per trial locally, flat up to 1,000 trials; <= 1.5 s on
Ray; the local search process under 1.5 GB resident after 1,000 trials. "Flat" is judged here by
the least-squares slope of the per-trial overhead over the whole search (trial 1, which pays the
first imports, left out): its growth over 1,000 trials must stay within 20% of the median
overhead, plus 5 ms. Comparing the first and last trials alone measures the machine's load at
those two moments as much as the search (their training slows down just as much); those windows
(10 trials, and a tenth of the search) are reported beside it.

    python experiments/benchmarks/orchestration.py [--trials 10 200] [--ray-trials 8]
        [--concurrency 1 2] [--no-ray] [--flip-actor-reuse] [--profile N] [--quick] [--out PATH]
    python experiments/benchmarks/orchestration.py --rescore PATH   # verdicts of a saved report
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import json
import os
import platform
import pstats
import re
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

TARGETS = {
    "local_overhead_s": 0.1,
    "local_flat_growth": 0.2,  # growth over 1,000 trials / median overhead, + FLAT_SLACK_S
    "ray_overhead_s": 1.5,
    "local_rss_mb_after_1000": 1536.0,
}
FLAT_SLACK_S = 0.005

SPACE = """\
name: orchestration_bench
task: {dataset: digits, train_limit: 200, seed: 0}
model:
  backbone: token_transformer
  dim: 8
  depth: 1
  heads: 2
  patch_size: {choice: [2, 4]}
objectives: [accuracy, flops]
train: {epochs: 1, batch_size: 64, lr: {float: [1.0e-3, 1.0e-2], log: true}, eval_batch_size: 256}
sampler: random
search: {trials: 10, seed: 0, concurrency: CONCURRENCY, cpus_per_trial: 1}
"""

COMPUTE = ("fit", "evaluate", "latency", "sweep")
TIMINGS_ENV = "CONDSEARCH_BENCH_TIMINGS"


# ---------------------------------------------------------------------------------------------
# exclusive timers


class Clock:
    """Exclusive seconds per category: a wrapped call nested in another is charged to itself."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []

    def wrap(self, fn: Callable, name: str) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [0.0]
            self._stack.append(frame)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self._stack.pop()
                self.totals[name] += elapsed - frame[0]
                if self._stack:
                    self._stack[-1][0] += elapsed

        timed.__wrapped_by_bench__ = True  # type: ignore[attr-defined]
        return timed

    def take(self) -> dict[str, float]:
        out, self.totals = dict(self.totals), defaultdict(float)
        return out

    def counter(self, fn: Callable, name: str) -> Callable:
        """`fn`, counting its calls as `name` (no timing)."""

        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return fn(*args, **kwargs)

        counted.__counted_by_bench__ = True  # type: ignore[attr-defined]
        return counted

    def take_counts(self) -> dict[str, int]:
        out, self.counts = dict(self.counts), defaultdict(int)
        return out


def install_counters(clock: Clock) -> None:
    """Count the store writes a trial makes: database commits (Optuna's and MLflow's SQLite
    stores alike) and MLflow client calls. Unlike times, these do not depend on the load."""
    from mlflow import MlflowClient
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if getattr(MlflowClient.log_batch, "__counted_by_bench__", False):
        return
    event.listen(Engine, "commit", lambda conn: clock.counts.__setitem__(
        "db_commits", clock.counts["db_commits"] + 1))
    for method in ("create_run", "log_batch", "set_tag", "set_terminated", "log_artifacts",
                   "get_run", "search_runs"):
        setattr(MlflowClient, method, clock.counter(getattr(MlflowClient, method),
                                                     f"mlflow_{method}"))


def _patch(owner: Any, attr: str, clock: Clock, name: str, required: bool = True) -> None:
    """Time `owner.attr` as `name`; an optional one (an itemised part of the overhead, not
    compute) that no longer exists is left out of the breakdown (it lands in "other")."""
    fn = getattr(owner, attr, None)
    if fn is None and not required:
        return
    if fn is None:
        raise AttributeError(f"{owner.__name__} has no {attr}: update the benchmark's timers")
    if not getattr(fn, "__wrapped_by_bench__", False):
        setattr(owner, attr, clock.wrap(fn, name))


def install_trial_timers(clock: Clock) -> None:
    """Wrap what `run_trial` calls (used in the driver for local trials, in Ray workers)."""
    import condsearch.cost
    import condsearch.data
    import condsearch.models
    import condsearch.orchestrate._trial
    import condsearch.train
    from condsearch.track._trial_runs import TrialRun

    _patch(condsearch.train, "fit", clock, "fit")
    _patch(condsearch.train, "evaluate", clock, "evaluate")
    _patch(condsearch.train, "sweep_knobs", clock, "sweep")
    _patch(condsearch.cost, "batch1_latency_ms", clock, "latency")
    _patch(condsearch.data, "load_task", clock, "load_task", required=False)
    _patch(condsearch.models, "build_model", clock, "build_model", required=False)
    _patch(condsearch.orchestrate._trial, "_save_weights_and_arch", clock, "save_weights", required=False)
    for method in ("__init__", "log_params", "log_metrics", "set_tags", "log_artifacts", "end"):
        _patch(TrialRun, method, clock, "mlflow_trial_runs", required=False)
    _patch(gc, "collect", clock, "gc", required=False)


def install_driver_timers(clock: Clock) -> None:
    """Wrap what the driver does per trial: ask, sample, record (tell, front, tags)."""
    import optuna

    import condsearch.orchestrate._session
    from condsearch.orchestrate._keeper import FrontKeeper
    from condsearch.space import SearchSpace
    from condsearch.track import ParetoTagger

    _patch(optuna.study.Study, "ask", clock, "ask", required=False)
    _patch(SearchSpace, "sample", clock, "sample", required=False)
    _patch(condsearch.orchestrate._session, "record_result", clock, "record_result", required=False)
    _patch(FrontKeeper, "_refresh", clock, "front_update", required=False)
    _patch(ParetoTagger, "update", clock, "pareto_tags", required=False)
    _patch(FrontKeeper, "_log_hypervolume", clock, "hypervolume_metric", required=False)
    # the search's fixed costs, before the first trial and after the last
    import condsearch.track

    _patch(condsearch.track, "open_experiment", clock, "open_experiment", required=False)
    _patch(condsearch.track, "start_parent_run", clock, "start_parent_run", required=False)
    _patch(condsearch.track, "end_run", clock, "end_run", required=False)
    _patch(condsearch.track, "write_front_files", clock, "front_files", required=False)
    _patch(condsearch.orchestrate._session, "open_study", clock, "open_study", required=False)
    _patch(ParetoTagger, "_load", clock, "pareto_tags_load", required=False)


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# ---------------------------------------------------------------------------------------------
# local backend


def _write_space(directory: Path, concurrency: int = 1) -> Path:
    path = directory / f"space_c{concurrency}.yaml"
    path.write_text(SPACE.replace("CONCURRENCY", str(concurrency)))
    return path


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _slope_per_100(values: list[float]) -> float:
    """Least-squares growth of `values` per 100 trials (seconds or MB)."""
    n = len(values)
    if n < 3:
        return float("nan")
    xs = range(n)
    mx, my = (n - 1) / 2, statistics.fmean(values)
    sxx = sum((x - mx) ** 2 for x in xs)
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True)) / sxx


def run_local(trials: int, root: Path, clock: Clock) -> dict:
    """One local search of `trials` trials in a fresh workdir; per-trial times and memory."""
    from condsearch.orchestrate import _session, search

    workdir = Path(tempfile.mkdtemp(prefix=f"local{trials}-", dir=root))
    space = _write_space(root)
    records: list[dict] = []
    marks: dict[str, float] = {}
    setup_parts: dict[str, float] = {}
    original_record = _session.Session.record

    import optuna

    timed_ask = optuna.study.Study.ask

    def ask(self: Any, *args: Any, **kwargs: Any) -> Any:
        marks["ask"] = time.perf_counter()
        before = clock.take()  # the search's setup before the first trial, else nothing
        clock.take_counts()
        if "first_ask" not in marks:
            marks["first_ask"] = marks["ask"]
            setup_parts.update(before)
        return timed_ask(self, *args, **kwargs)

    def record(self: Any, trial: Any, arch: Any, result: Any, seconds: float) -> None:
        original_record(self, trial, arch, result, seconds)
        end = time.perf_counter()
        parts = clock.take()
        counts = clock.take_counts()
        compute = sum(parts.get(k, 0.0) for k in COMPUTE)
        wall = end - marks["ask"]
        named = sum(parts.values())
        records.append({"number": trial.number, "ok": bool(result.ok), "wall_s": wall,
                        "compute_s": compute, "overhead_s": wall - compute,
                        "parts_s": {**parts, "other": wall - named}, "counts": counts,
                        "rss_mb": _rss_mb()})
        marks.setdefault("first_record", end)
        marks["last_record"] = end

    optuna.study.Study.ask = ask
    _session.Session.record = record
    try:
        clock.take()
        start = time.perf_counter()
        summary = search(str(space), trials=trials, workdir=workdir, backend="local",
                         progress=False)
        wall = time.perf_counter() - start
    finally:
        optuna.study.Study.ask = timed_ask
        _session.Session.record = original_record
    leftover = clock.take()  # front files at the end of the search
    overhead = [r["overhead_s"] for r in records]
    compute = sum(r["compute_s"] for r in records)
    first = overhead[1:11]
    last = overhead[-10:]
    window = max(10, trials // 10)  # the flatness check: first vs last tenth, by median
    parts: dict[str, float] = defaultdict(float)
    for r in records:
        for k, v in r["parts_s"].items():
            parts[k] += v / len(records)
    tenths = [records[len(records) * i // 10 : len(records) * (i + 1) // 10] for i in range(10)]
    tenths = [t for t in tenths if t]
    return {
        "backend": "local", "trials": trials, "completed": summary.completed,
        "failed": summary.failed, "search_wall_s": wall,
        "setup_s": marks["first_ask"] - start, "teardown_s": start + wall - marks["last_record"],
        "setup_parts_s": setup_parts, "teardown_parts_s": leftover,
        "compute_per_trial_s": compute / trials,
        "overhead_per_trial_mean_s": _mean(overhead),
        "overhead_per_trial_median_s": statistics.median(overhead),
        "overhead_trial0_s": overhead[0],
        "overhead_trials_2_to_11_mean_s": _mean(first),
        "overhead_last10_mean_s": _mean(last),
        "overhead_trials_2_to_11_median_s": statistics.median(first) if first else float("nan"),
        "overhead_last10_median_s": statistics.median(last),
        "flat_window": window,
        "overhead_first_window_median_s": statistics.median(overhead[1 : window + 1])
        if trials > 1 else float("nan"),
        "overhead_last_window_median_s": statistics.median(overhead[-window:]),
        "overhead_growth_per_100_trials_s": _slope_per_100(overhead[1:]),
        "overhead_amortised_per_trial_s": (wall - compute) / trials,
        "trials_per_hour": 3600 * trials / wall,
        "trials_per_hour_steady": 3600 * (trials - 1) / (marks["last_record"]
                                                          - marks["first_record"])
        if trials > 1 else float("nan"),
        "parts_mean_s": dict(parts),
        # trial 1 left out: it opens the stores
        "counts_mean_per_trial": {
            k: _mean([r["counts"].get(k, 0) for r in records[1:]])
            for k in sorted({k for r in records[1:] for k in r["counts"]})},
        "overhead_by_tenth_s": [_mean([r["overhead_s"] for r in t]) for t in tenths],
        "parts_growth_per_100_trials_s": {
            k: _slope_per_100([r["parts_s"].get(k, 0.0) for r in records[1:]]) for k in parts},
        "parts_by_tenth_s": [{k: _mean([r["parts_s"].get(k, 0.0) for r in t]) for k in parts}
                             for t in tenths],
        "rss_mb_after_first": records[0]["rss_mb"], "rss_mb_after_last": records[-1]["rss_mb"],
        "rss_growth_per_100_trials_mb": _slope_per_100([r["rss_mb"] for r in records[1:]]),
        "maxrss_mb": _maxrss_mb(),
        # per trial, in trial order (the parts only as means, above and by tenth of the run)
        "per_trial": {key: [round(r[key], 4) for r in records]
                      for key in ("wall_s", "compute_s", "overhead_s", "rss_mb")},
    }


# ---------------------------------------------------------------------------------------------
# ray backend


def _process_start_epoch() -> float:
    """When this process started (epoch seconds, to 10 ms), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - (uptime - started)


def _worker_setup() -> None:
    """Ray worker setup hook: time each trial's parts and append them to the timings file."""
    import json as _json
    import os as _os
    import time as _time

    hook_start = _time.time()
    path = _os.environ.get(TIMINGS_ENV)
    if not path:
        return
    # what the trainable would import anyway when Ray deserialises it (torch, mlflow, optuna)
    import condsearch.tune._trainable as ray_backend

    if getattr(ray_backend.run_trial, "__wrapped_by_bench__", False):
        return
    try:
        process_start = _process_start_epoch()
    except (OSError, ValueError, IndexError):
        process_start = float("nan")
    with open(path, "a") as f:
        f.write(_json.dumps({"worker": _os.getpid(), "process_start": process_start,
                             "hook_start": hook_start, "hook_end": _time.time()}) + "\n")
    clock = Clock()
    install_trial_timers(clock)
    inner = ray_backend.run_trial
    close = ray_backend.close_abandoned_runs
    closing: dict[str, float] = {}

    def close_abandoned_runs(spec: Any) -> None:  # called by the trainable before run_trial
        closing["start"] = _time.time()
        try:
            close(spec)
        finally:
            closing["end"] = _time.time()

    def run_trial(spec: Any, *args: Any, **kwargs: Any) -> Any:
        clock.take()
        start = _time.time()
        try:
            return inner(spec, *args, **kwargs)
        finally:
            end = _time.time()
            line = {"number": spec.number, "start": start, "end": end, "pid": _os.getpid(),
                    "close_abandoned_runs": dict(closing), "parts_s": clock.take()}
            with open(path, "a") as f:
                f.write(_json.dumps(line) + "\n")

    run_trial.__wrapped_by_bench__ = True  # type: ignore[attr-defined]
    ray_backend.run_trial = run_trial
    ray_backend.close_abandoned_runs = close_abandoned_runs


def start_ray(root: Path) -> tuple[float, Path]:
    """A fresh local Ray instance (never one already running here), workers timed."""
    import ray

    timings = root / "ray_trial_timings.jsonl"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.perf_counter()
    # The same options as condsearch's own `ray.init` (orchestrate/_ray.py `_connect`).
    ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
             log_to_driver=False, logging_level="ERROR", configure_logging=True,
             runtime_env={"worker_process_setup_hook": _worker_setup,
                          "env_vars": {TIMINGS_ENV: str(timings),
                                       "OMP_NUM_THREADS": "1"}})
    return time.perf_counter() - start, timings


def _mlflow_trial_spans(uri: str) -> dict[int, float]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True,
                              filter_string="tags.`condsearch.role` = 'trial'")
    spans = {}
    for _, row in runs.iterrows():
        spans[int(row["tags.condsearch.trial"])] = (row["end_time"] - row["start_time"]
                                                    ).total_seconds()
    return spans


def run_ray(trials: int, concurrency: int, root: Path, timings: Path, clock: Clock,
            flip_actor_reuse: bool = False) -> dict:
    """One Ray search. `flip_actor_reuse` (a what-if, informational) hands Ray Tune the opposite
    of the `reuse_actors` setting condsearch passes: reused, a worker process runs trial after
    trial; not reused, every trial starts a new worker process."""
    from ray import tune

    from condsearch.orchestrate import search
    from condsearch.orchestrate._ray import SpaceSearcher

    workdir = Path(tempfile.mkdtemp(prefix=f"ray{trials}c{concurrency}-", dir=root))
    space = _write_space(root, concurrency)
    timings.write_text("")
    stamps: dict[str, dict[str, float]] = defaultdict(dict)
    numbers: dict[str, int] = {}
    driver_parts: dict[str, dict[str, float]] = {}
    suggest, complete = SpaceSearcher.suggest, SpaceSearcher.on_trial_complete

    def timed_suggest(self: Any, trial_id: str) -> Any:
        t = time.time()
        config = suggest(self, trial_id)
        if config is not None:
            stamps[trial_id]["suggest"] = t
            numbers[trial_id] = self.trial_number(trial_id)
        return config

    def timed_complete(self: Any, trial_id: str, result: Any = None, error: bool = False) -> None:
        clock.take()
        complete(self, trial_id, result, error)
        stamps[trial_id].setdefault("complete", time.time())
        driver_parts[trial_id] = clock.take()

    SpaceSearcher.suggest, SpaceSearcher.on_trial_complete = timed_suggest, timed_complete
    tune_config = tune.TuneConfig
    passed: dict[str, bool] = {}

    def config(*args: Any, **kwargs: Any) -> Any:
        made = tune_config(*args, **kwargs)
        passed["reuse_actors"] = bool(made.reuse_actors)  # what condsearch asked for
        if flip_actor_reuse:
            made.reuse_actors = not made.reuse_actors
        return made

    tune.TuneConfig = config
    try:
        start = time.perf_counter()
        start_epoch = time.time()
        summary = search(str(space), trials=trials, workdir=workdir, backend="ray",
                         progress=False)
        wall = time.perf_counter() - start
    finally:
        SpaceSearcher.suggest, SpaceSearcher.on_trial_complete = suggest, complete
        tune.TuneConfig = tune_config
    worker, processes = {}, {}
    for line in timings.read_text().splitlines():
        row = json.loads(line)
        if "worker" in row:
            processes[row["worker"]] = row
        else:
            worker[row["number"]] = row  # a retried trial keeps its last attempt
    spans = _mlflow_trial_spans(summary.tracking_uri)
    records = []
    stamps_by_number = {n: stamps[t].get("suggest", float("nan")) for t, n in numbers.items()}
    for trial_id, number in sorted(numbers.items(), key=lambda kv: kv[1]):
        s, w = stamps[trial_id], worker.get(number)
        if w is None or "complete" not in s:
            continue
        parts = w["parts_s"]
        compute = sum(parts.get(k, 0.0) for k in COMPUTE)
        wall_t = s["complete"] - s["suggest"]
        in_trial = w["end"] - w["start"]
        proc, closing = processes.get(w["pid"]), w.get("close_abandoned_runs") or {}
        if proc is not None and proc["process_start"] > s["suggest"]:  # a new worker process
            dispatch = {"to_process_start": proc["process_start"] - s["suggest"],
                        "process_start_to_imports": proc["hook_start"] - proc["process_start"],
                        "imports": proc["hook_end"] - proc["hook_start"]}
            ready = proc["hook_end"]
        else:  # a worker process kept from an earlier trial
            dispatch, ready = {}, s["suggest"]
        if "end" in closing:  # the trainable's MLflow check for an earlier attempt's runs
            dispatch["to_trainable"] = closing["start"] - ready
            dispatch["close_abandoned_runs"] = closing["end"] - closing["start"]
            dispatch["to_run_trial"] = w["start"] - closing["end"]
        else:
            dispatch["to_run_trial"] = w["start"] - ready
        records.append({
            "number": number, "wall_s": wall_t, "compute_s": compute,
            "overhead_s": wall_t - compute, "dispatch_s": w["start"] - s["suggest"],
            "in_trial_overhead_s": in_trial - compute, "return_s": s["complete"] - w["end"],
            "dispatch_parts_s": dispatch,
            "worker_pid": w["pid"], "mlflow_trial_run_s": spans.get(number),
            "worker_parts_s": parts, "driver_parts_s": driver_parts.get(trial_id, {}),
        })
    compute = sum(r["compute_s"] for r in records)
    first_suggest = min(s["suggest"] for s in stamps.values() if "suggest" in s)
    last_complete = max(s["complete"] for s in stamps.values() if "complete" in s)
    # warm: a trial on a worker process that had already run one (no process start, imports
    # or first calls); a search pays the cold start once per worker it starts
    seen: set[int] = set()
    for r in records:
        r["warm_worker"] = r["worker_pid"] in seen
        seen.add(r["worker_pid"])
    warm = [r for r in records if r["warm_worker"]]
    cold = [r for r in records if not r["warm_worker"]]
    warm_start = min((stamps_by_number[r["number"]] for r in warm), default=None)
    return {
        "backend": "ray", "trials": trials, "concurrency": concurrency,
        "reuse_actors": passed.get("reuse_actors", False) != flip_actor_reuse,
        "actor_reuse_flipped": flip_actor_reuse,
        "completed": summary.completed, "failed": summary.failed, "search_wall_s": wall,
        "setup_s": first_suggest - start_epoch,
        "teardown_s": start_epoch + wall - last_complete,
        "compute_per_trial_s": compute / max(1, len(records)),
        "overhead_per_trial_mean_s": _mean([r["overhead_s"] for r in records]),
        "overhead_per_trial_median_s": statistics.median(r["overhead_s"] for r in records),
        "dispatch_mean_s": _mean([r["dispatch_s"] for r in records]),
        "dispatch_parts_mean_s": {
            k: _mean([r["dispatch_parts_s"].get(k, 0.0) for r in records])
            for k in dict.fromkeys(k for r in records for k in r["dispatch_parts_s"])},
        "in_trial_overhead_mean_s": _mean([r["in_trial_overhead_s"] for r in records]),
        "return_mean_s": _mean([r["return_s"] for r in records]),
        "overhead_amortised_per_trial_s": (wall - compute) / trials,
        "overhead_warm_worker_mean_s": _mean([r["overhead_s"] for r in warm]),
        "overhead_cold_worker_mean_s": _mean([r["overhead_s"] for r in cold]),
        "warm_trials": len(warm),
        "trials_per_hour": 3600 * trials / wall,
        "trials_per_hour_steady": 3600 * trials / (last_complete - first_suggest),
        "trials_per_hour_warm": 3600 * len(warm) / (last_complete - warm_start)
        if warm else float("nan"),
        "worker_processes": len({r["worker_pid"] for r in records}),
        "driver_rss_mb": _rss_mb(),
        "per_trial": records,
    }


# ---------------------------------------------------------------------------------------------
# profile


def profile_local(trials: int, root: Path, top: int = 30) -> dict:
    """cProfile over a local search of `trials` trials (after one warm-up search)."""
    from condsearch.orchestrate import search

    workdir = Path(tempfile.mkdtemp(prefix="profile-", dir=root))
    space = _write_space(root)
    search(str(space), trials=1, workdir=workdir, progress=False)  # the store exists; imports done
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    search(str(space), trials=trials, workdir=workdir, progress=False)
    profiler.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        rows.append({"function": f"{_short(file)}:{line}({name})", "calls": calls,
                     "tottime_s": tottime, "cumtime_s": cumtime})
    by_cum = sorted(rows, key=lambda r: -r["cumtime_s"])[:top]
    by_tot = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    ours = sorted((r for r in rows if r["function"].startswith("condsearch/")),
                  key=lambda r: -r["cumtime_s"])[:top]
    return {"trials": trials, "wall_s": wall, "top_cumulative": by_cum, "top_self": by_tot,
            "condsearch_cumulative": ours}


def _short(file: str) -> str:
    for marker in ("site-packages/", f"{Path(__file__).resolve().parents[2]}/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# ---------------------------------------------------------------------------------------------


def _compare_with_local(ray_runs: list[dict], local: dict) -> None:
    """Ray trial wall time minus the compute of the same trial (same seed and space, so the
    same sampled arch and training) in the first local search: this also charges the slower
    first calls of a fresh worker process (its compute runs cold) to the orchestration."""
    compute = local["per_trial"]["compute_s"]
    for r in ray_runs:
        pairs = [(t["wall_s"], compute[t["number"]], t["compute_s"]) for t in r["per_trial"]
                 if t["number"] < len(compute)]
        r["overhead_vs_local_compute_mean_s"] = _mean([w - c for w, c, _ in pairs])
        r["cold_compute_extra_mean_s"] = _mean([rc - c for _, c, rc in pairs])
        r["local_run_compared"] = local["trials"]


def _code_state() -> dict:
    """The commit measured, and the condsearch files changed from it in the working tree."""
    import subprocess

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "condsearch").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "condsearch_changed": changed}


def _machine(threads: int) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("optuna", "mlflow", "ray"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"platform": platform.platform(), "cpu_model": cpu or platform.processor(),
            "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads,
            "python": platform.python_version(), **versions}


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _verdicts(local: list[dict], ray_runs: list[dict]) -> list[dict]:
    rows = []
    for r in local:
        n = r["trials"]
        rows.append({"check": f"local overhead per trial, {n} trials (mean)",
                     "value": r["overhead_per_trial_mean_s"], "unit": "s",
                     "target": f"<= {TARGETS['local_overhead_s']}",
                     "ok": r["overhead_per_trial_mean_s"] <= TARGETS["local_overhead_s"]})
        if n >= 21:
            growth = 10 * r["overhead_growth_per_100_trials_s"]  # over 1,000 trials
            allowed = TARGETS["local_flat_growth"] * r["overhead_per_trial_median_s"]
            rows.append({"check": f"local overhead growth over 1,000 trials (slope of {n})",
                         "value": growth, "unit": "s",
                         "target": f"<= {TARGETS['local_flat_growth']:.0%} of median "
                                   f"+{FLAT_SLACK_S * 1e3:.0f} ms",
                         "ok": growth <= allowed + FLAT_SLACK_S})
        rss = r["rss_mb_after_last"]
        if n >= 1000:
            check, ok = f"local RSS after {n} trials", rss < TARGETS["local_rss_mb_after_1000"]
        else:
            growth = max(0.0, r["rss_growth_per_100_trials_mb"])
            projected = rss + growth * (1000 - n) / 100
            check = f"local RSS after {n} trials (projected to 1,000: {projected:.0f} MB)"
            ok = projected < TARGETS["local_rss_mb_after_1000"]
        rows.append({"check": check, "value": rss, "unit": "MB",
                     "target": f"< {TARGETS['local_rss_mb_after_1000']:.0f} at 1,000", "ok": ok})
    for r in ray_runs:
        if r["concurrency"] != 1 or r["actor_reuse_flipped"]:
            continue
        target = TARGETS["ray_overhead_s"]
        rows.append({"check": f"ray overhead per trial, {r['trials']} trials, concurrency 1",
                     "value": r["overhead_per_trial_mean_s"], "unit": "s",
                     "target": f"<= {target}", "ok": r["overhead_per_trial_mean_s"] <= target})
        if r["warm_trials"]:
            value = r["overhead_warm_worker_mean_s"]
            rows.append({"check": f"ray overhead per trial on a warm worker ({r['warm_trials']} "
                                  "trials)", "value": value, "unit": "s",
                         "target": f"<= {target}", "ok": value <= target})
    return rows


def _ray_name(r: dict) -> str:
    reuse = "workers reused" if r["reuse_actors"] else "a worker per trial"
    flipped = ", flipped (what-if)" if r["actor_reuse_flipped"] else ""
    return f"ray, concurrency {r['concurrency']} ({reuse}{flipped})"


def _print(local: list[dict], ray_runs: list[dict], verdicts: list[dict],
           ray_start_s: float | None) -> None:
    head = (f"{'run':58} {'trials':>6} {'wall s':>7} {'setup s':>7} {'compute/trial':>13} "
            f"{'overhead/trial':>14} {'(median)':>8} {'amortised':>9} {'trials/h':>8} "
            f"{'RSS MB':>7}")
    print(head)
    print("-" * len(head))
    for r in local + ray_runs:
        name = "local" if r["backend"] == "local" else _ray_name(r)
        rss = r.get("rss_mb_after_last", r.get("driver_rss_mb", float("nan")))
        print(f"{name:58} {r['trials']:>6} {r['search_wall_s']:>7.1f} {r['setup_s']:>7.2f} "
              f"{r['compute_per_trial_s']:>13.3f} {r['overhead_per_trial_mean_s']:>14.3f} "
              f"{r['overhead_per_trial_median_s']:>8.3f} "
              f"{r['overhead_amortised_per_trial_s']:>9.3f} {r['trials_per_hour']:>8.0f} "
              f"{rss:>7.0f}")
    if ray_start_s is not None:
        print(f"(ray.init of the local instance: {ray_start_s:.1f} s, not in any search's wall)")
    for r in local:
        print(f"\nlocal, {r['trials']} trials: mean seconds per trial by part "
              f"(overhead = all but {', '.join(COMPUTE)})")
        parts = sorted(r["parts_mean_s"].items(), key=lambda kv: -kv[1])
        print("  " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in parts))
        if r.get("counts_mean_per_trial"):
            print("  store writes per trial: " + ", ".join(
                f"{k} {v:.1f}" for k, v in r["counts_mean_per_trial"].items()))
        print(f"  overhead: trial 1 {r['overhead_trial0_s']:.3f} s, trials 2-11 "
              f"{r['overhead_trials_2_to_11_mean_s']:.3f} s (median "
              f"{r['overhead_trials_2_to_11_median_s']:.3f}), last 10 "
              f"{r['overhead_last10_mean_s']:.3f} s (median {r['overhead_last10_median_s']:.3f}), "
              f"medians of the first and last {r['flat_window']} "
              f"{r['overhead_first_window_median_s']:.3f} and "
              f"{r['overhead_last_window_median_s']:.3f} s, growth "
              f"{r['overhead_growth_per_100_trials_s'] * 1e3:.1f} ms per 100 trials; RSS "
              f"{r['rss_mb_after_first']:.0f} -> {r['rss_mb_after_last']:.0f} MB "
              f"({r['rss_growth_per_100_trials_mb']:.1f} MB per 100 trials)")
    for r in ray_runs:
        print(f"\n{_ray_name(r)}: dispatch {r['dispatch_mean_s']:.3f} s, "
              f"in-trial overhead {r['in_trial_overhead_mean_s']:.3f} s, return "
              f"{r['return_mean_s']:.3f} s per trial; {r['worker_processes']} worker "
              f"process(es); steady {r['trials_per_hour_steady']:.0f} trials/h")
        print(f"  overhead on a worker's first trial {r['overhead_cold_worker_mean_s']:.3f} s, "
              f"on a warm worker {r['overhead_warm_worker_mean_s']:.3f} s "
              f"({r['warm_trials']} trials); warm throughput "
              f"{r['trials_per_hour_warm']:.0f} trials/h")
        print("  dispatch: " + ", ".join(f"{k} {v:.2f} s"
                                         for k, v in r["dispatch_parts_mean_s"].items()))
        if "overhead_vs_local_compute_mean_s" in r:
            print(f"  against the same trials' local compute: overhead "
                  f"{r['overhead_vs_local_compute_mean_s']:.3f} s per trial (worker compute "
                  f"{r['cold_compute_extra_mean_s']:+.3f} s slower than local)")
    print(f"\n{'check':72} {'value':>9}  {'target':24} ok")
    for v in verdicts:
        print(f"{v['check'][:72]:72} {v['value']:>7.3f} {v['unit']:<2} {v['target']:24} "
              f"{'✓' if v['ok'] else '✗'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[10, 200],
                        help="local searches to run, one per count (default 10 200)")
    parser.add_argument("--ray-trials", type=int, default=8, help="trials per Ray search")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2],
                        help="Ray searches to run, one per concurrency (default 1 2)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray searches")
    parser.add_argument("--flip-actor-reuse", action="store_true",
                        help="also run a Ray search at concurrency 1 with Ray Tune's "
                             "reuse_actors set opposite to what condsearch passes "
                             "(informational: what reusing, or not, worker processes costs)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also cProfile a local search of N trials")
    parser.add_argument("--quick", action="store_true",
                        help="a < 60 s smoke run: 5 local trials, no Ray; writes no JSON "
                             "unless --out is given")
    parser.add_argument("--out", default=None,
                        help="JSON report (default orchestration.json beside this script)")
    parser.add_argument("--rescore", metavar="PATH",
                        help="recompute the verdicts of an existing report with the current "
                             "targets and checks (no searches run) and write it back")
    args = parser.parse_args()
    if args.rescore:
        report = json.loads(Path(args.rescore).read_text())
        report["targets"] = TARGETS
        report["verdicts"] = _verdicts(report["local"], report["ray"])
        _print(report["local"], report["ray"], report["verdicts"], report["ray_init_s"])
        _write(report, args.rescore)
        return
    torch.set_num_threads(1)
    if args.quick:
        args.trials, args.no_ray, args.profile = [5], True, 0
    out = args.out or (None if args.quick else str(Path(__file__).with_name(
        "orchestration.json")))
    load_start = _load()
    code_start = _code_state()  # the modules are imported now; a later commit is not measured
    started = time.perf_counter()
    clock = Clock()
    install_trial_timers(clock)
    install_driver_timers(clock)
    install_counters(clock)
    with tempfile.TemporaryDirectory(prefix="orchestration-") as tmp:
        root = Path(tmp)
        local = [run_local(n, root, clock) for n in args.trials]
        # before Ray is imported: the process then holds what a local search holds
        profile = profile_local(args.profile, root) if args.profile else None
        ray_runs: list[dict] = []
        ray_errors: list[str] = []
        ray_start = None
        if not args.no_ray:
            ray_start, timings = start_ray(root)
            try:
                runs = [(c, False) for c in args.concurrency]
                runs += [(1, True)] if args.flip_actor_reuse else []
                for concurrency, flip in runs:
                    try:
                        ray_runs.append(run_ray(args.ray_trials, concurrency, root, timings,
                                                clock, flip_actor_reuse=flip))
                    except Exception as exc:  # e.g. the local Ray instance was stopped
                        ray_errors.append(f"concurrency {concurrency}, flip {flip}: "
                                          f"{type(exc).__name__}: {str(exc)[:300]}")
                        print(f"ray search failed: {ray_errors[-1]}", file=sys.stderr)
            finally:
                import ray

                ray.shutdown()
    elapsed = time.perf_counter() - started
    if local:
        _compare_with_local(ray_runs, local[0])
    verdicts = _verdicts(local, ray_runs)
    _print(local, ray_runs, verdicts, ray_start)
    if profile:
        print(f"\ncProfile of a local search of {profile['trials']} trials "
              f"({profile['wall_s']:.1f} s), condsearch functions by cumulative time:")
        for r in profile["condsearch_cumulative"][:15]:
            print(f"  {r['cumtime_s'] / profile['trials'] * 1e3:8.1f} ms/trial "
                  f"{r['cumtime_s'] / profile['wall_s']:6.1%}  {r['function']}")
    print(f"\n{elapsed:.0f} s in all, load average {load_start} -> {_load()}")
    if _code_state() != code_start:
        print("warning: condsearch changed during the run (commit or working tree); Ray workers "
              "started after the change ran the new code, this process the old", file=sys.stderr)
    if out is None:
        return
    report = {
        "machine": {**_machine(1), "load_average_start": load_start,
                    "load_average_end": _load()},
        "quick": args.quick, "seconds": elapsed, "targets": TARGETS,
        "definitions": {
            "overhead_s": "a trial's wall time in the search minus its compute (fit, evaluate, "
                          "batch-1 latency, knob sweep); local: Study.ask to the end of "
                          "Session.record; ray: SpaceSearcher.suggest to the end of "
                          "on_trial_complete",
            "amortised": "(search wall - all trials' compute) / trials: the per-trial share "
                         "including the search's fixed setup and teardown",
            "setup_s": "search() called to the first trial asked (store, study, parent run)",
            "flat": "least-squares slope of the per-trial overhead (trial 1 left out) times "
                    "1,000 trials <= 20% of the median overhead + 5 ms; the first and last "
                    "windows are reported beside it",
            "rss": "VmRSS of the search process after each trial; maxrss its peak",
            "ray": "local Ray instance started by the benchmark; dispatch = suggest to "
                   "run_trial starting on a worker, return = run_trial ending to the driver "
                   "having recorded the result",
        },
        "code": {**code_start, "changed_during_run": _code_state() != code_start},
        "space": SPACE, "ray_init_s": ray_start, "ray_errors": ray_errors,
        "verdicts": verdicts, "local": local,
        "ray": ray_runs, "profile": profile,
    }
    _write(report, out)


def _write(report: dict, out: str) -> None:
    text = json.dumps(report, indent=2)
    # lists of numbers on one line each (the per-trial series are long)
    text = re.sub(r"\[\s+([-+0-9.eE,\s]+?|NaN[-+0-9.eE,\sNa]*?)\s+\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
                  text)
    Path(out).write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
