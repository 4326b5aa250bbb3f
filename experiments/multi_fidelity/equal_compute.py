"""What the multi-fidelity study measures on a finished search, at equal compute.

A search's trials are read into `TrialRecord`s, in the order they ran: the compute each spent
(epochs trained: `train.epochs` for a trial that finished, the epoch it was stopped at for one a
scheduler stopped, what it had recorded for a failed one), the accuracy it had at each epoch, and,
for a finished trial, its final point and its swept (derived) points. condsearch's searches are
read from their Optuna study (and MLflow, for the per-epoch accuracy of trials no scheduler
judged); Syne Tune's arm from the trial files it leaves (`syne_tune_arm.read_trials`).

At a compute budget B, the front is made of the finished trials whose cumulative compute (in the
order they ran) is within B: the first trials until their epochs add up past B. Its hypervolume
is the normalised one of the search-quality study (`experiments/search_quality/measures.py`):
against one fixed reference point for the whole study, divided by the reference box.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _search_quality_measures():
    """experiments/search_quality/measures.py, loaded under a name of its own."""
    spec = importlib.util.spec_from_file_location(
        "search_quality_measures", HERE.parent / "search_quality" / "measures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_measures = _search_quality_measures()
front = _measures.front
normalised_hypervolume = _measures.normalised_hypervolume


@dataclass
class TrialRecord:
    """One trained trial (never a derived point) of a search, as the study needs it."""

    number: int
    state: str
    compute: int
    finished: bool
    #: (accuracy, FLOPs) of the trained setting, for a finished, feasible trial
    point: tuple[float, float] | None = None
    #: (accuracy, FLOPs) of its swept knob settings (derived points)
    derived: list[tuple[float, float]] = field(default_factory=list)
    #: validation accuracy after each epoch it trained (at least at each rung)
    accuracy: dict[int, float] = field(default_factory=dict)
    #: wall-clock start and end (seconds since the epoch), derived points included
    started: float = math.nan
    ended: float = math.nan


# ---- reading condsearch's searches ------------------------------------------------------------


def _epochs_recorded(attrs: dict[str, Any]) -> int:
    """The epochs a trial that did not finish had trained, as far as its attributes say."""
    from condsearch._names import ATTR_LAST_REPORT, ATTR_RUNGS, ATTR_STOPPED_AT

    seen = [0]
    if attrs.get(ATTR_STOPPED_AT) is not None:
        seen.append(int(attrs[ATTR_STOPPED_AT]))
    seen += [int(e) for e in (attrs.get(ATTR_RUNGS) or {})]
    last = attrs.get(ATTR_LAST_REPORT) or {}
    if isinstance(last, dict) and isinstance(last.get("epoch"), (int, float)):
        seen.append(int(last["epoch"]))
    return max(seen)


def read_condsearch(workdir: Path, epochs: int, history: bool = False) -> list[TrialRecord]:
    """The trained trials of the search in `workdir`, in trial-number order (the order they ran).

    `history`: also read each finished trial's per-epoch validation accuracy from its MLflow run
    (for trials no scheduler judged, which carry no rung results)."""
    import optuna

    from condsearch._names import ATTR_DERIVED_FROM, ATTR_RUN, ATTR_RUNGS
    from condsearch.orchestrate._points import point_from_trial
    from condsearch.orchestrate._workdir import read_workdir

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    state = read_workdir(workdir)
    names = state.names()
    study = optuna.load_study(study_name=state.study_name, storage=state.storage)
    trials = study.get_trials(deepcopy=False)
    derived: dict[int, list[Any]] = {}
    for t in trials:
        if ATTR_DERIVED_FROM in t.user_attrs and t.state == optuna.trial.TrialState.COMPLETE:
            derived.setdefault(int(t.user_attrs[ATTR_DERIVED_FROM]), []).append(t)
    records = []
    for t in sorted((t for t in trials if ATTR_DERIVED_FROM not in t.user_attrs),
                    key=lambda t: t.number):
        finished = t.state == optuna.trial.TrialState.COMPLETE
        compute = epochs if finished else _epochs_recorded(t.user_attrs)
        record = TrialRecord(number=t.number, state=t.state.name, compute=compute,
                             finished=finished)
        rungs = t.user_attrs.get(ATTR_RUNGS) or {}
        record.accuracy = {int(e): float(r["values"]["accuracy"]) for e, r in rungs.items()
                           if (r.get("values") or {}).get("accuracy") is not None}
        ends = [t.datetime_complete]
        if finished:
            point = point_from_trial(t, names)
            if point.feasible:
                record.point = (point.values["accuracy"], point.values["flops"])
                record.accuracy.setdefault(epochs, record.point[0])
            for d in derived.get(t.number, []):
                p = point_from_trial(d, names)
                if p.feasible:
                    record.derived.append((p.values["accuracy"], p.values["flops"]))
                ends.append(d.datetime_complete)
        if t.datetime_start is not None:
            record.started = t.datetime_start.timestamp()
        ends = [e.timestamp() for e in ends if e is not None]
        if ends:
            record.ended = max(ends)
        if history and finished and t.user_attrs.get(ATTR_RUN):
            record.accuracy = {**_mlflow_accuracy(state.tracking_uri, t.user_attrs[ATTR_RUN]),
                               **record.accuracy}
        records.append(record)
    return records


def _mlflow_accuracy(uri: str, run_id: str) -> dict[int, float]:
    """`val_accuracy` after each epoch, as the trial's MLflow run logged it (stepped by epoch)."""
    try:
        from mlflow import MlflowClient

        history = MlflowClient(uri).get_metric_history(run_id, "val_accuracy")
    except Exception:  # the view is gone or unreadable: the rung results still stand
        return {}
    return {int(m.step): float(m.value) for m in history}


def read_syne_tune(trials: list[dict[str, Any]], epochs: int) -> list[TrialRecord]:
    """Syne Tune's trials (`syne_tune_arm.read_trials`) as trial records, by trial id."""
    records = []
    for r in trials:
        final = r.get("final") or None
        finished = bool(r.get("finished")) and final is not None
        record = TrialRecord(number=int(r["trial_id"]),
                             state="COMPLETE" if finished else ("FAIL" if r.get("error")
                                                                else "STOPPED"),
                             compute=int(r.get("epochs_trained") or 0), finished=finished,
                             started=float(r.get("started", math.nan)),
                             ended=float(r.get("updated", math.nan)))
        record.accuracy = {int(e): float(a) for e, a in (r.get("accuracy_by_epoch") or {}).items()}
        if finished:
            record.compute = max(record.compute, epochs)
            record.point = (float(final["accuracy"]), float(final["flops"]))
            record.accuracy[epochs] = record.point[0]
            record.derived = [(float(d["accuracy"]), float(d["flops"]))
                              for d in r.get("derived") or []]
        records.append(record)
    return records


# ---- equal compute ------------------------------------------------------------------------------


def spent(records: list[TrialRecord]) -> int:
    """Epochs the whole search trained."""
    return sum(r.compute for r in records)


def within(records: list[TrialRecord], budget: float) -> list[TrialRecord]:
    """The trials, in the order they ran, whose cumulative compute is at most `budget`."""
    chosen, total = [], 0
    for r in records:
        total += r.compute
        if total > budget:
            break
        chosen.append(r)
    return chosen


def points(records: list[TrialRecord], derived: bool = True) -> list[tuple[float, float]]:
    """The (accuracy, FLOPs) points of the finished trials, with their swept points or not."""
    out = []
    for r in records:
        if r.point is not None:
            out.append(r.point)
        if derived:
            out += r.derived
    return out


def hypervolume_at(records: list[TrialRecord], budget: float, flops_ref: float,
                   derived: bool = True) -> float:
    """Normalised hypervolume of the front of the trials within `budget` epochs."""
    return normalised_hypervolume(points(within(records, budget), derived), flops_ref)


def seconds_within(records: list[TrialRecord], budget: float, started: float) -> float:
    """Wall time from `started` (the search's start) to the end of the last trial within the
    budget."""
    chosen = [r for r in within(records, budget) if math.isfinite(r.ended)]
    return max(r.ended for r in chosen) - started if chosen else 0.0


def measure(records: list[TrialRecord], budget: int, levels: list[int], flops_ref: float,
            epochs: int, started: float, rungs: list[int]) -> dict[str, Any]:
    """The study's figures for one search; `rungs`: the early epochs whose accuracy is paired
    with the final one (over every trial of the search that finished, cut or not)."""
    cut = within(records, budget)
    return {
        "spent_epochs": spent(records),
        "cut_epochs": spent(cut),
        "trials": len(records),
        "trials_in_cut": len(cut),
        "finished_in_cut": sum(r.finished for r in cut),
        "stopped_in_cut": sum((not r.finished) and r.state != "FAIL" for r in cut),
        "failed_in_cut": sum(r.state == "FAIL" for r in cut),
        "hypervolume": hypervolume_at(records, budget, flops_ref),
        "hypervolume_trained_only": hypervolume_at(records, budget, flops_ref, derived=False),
        "curve": {str(b): hypervolume_at(records, b, flops_ref) for b in levels},
        "curve_trained_only": {str(b): hypervolume_at(records, b, flops_ref, derived=False)
                               for b in levels},
        "seconds_to_budget": seconds_within(records, budget, started),
        "front": sorted(set(front(points(cut))), key=lambda v: (v[1], -v[0])),
        "rank_pairs": {str(e): [[r.accuracy[e], r.accuracy[epochs]] for r in records
                                if r.finished and e in r.accuracy and epochs in r.accuracy]
                       for e in rungs},
    }


# ---- running a search until it has spent a budget ------------------------------------------------


def search_to_budget(space: Path, overrides: list[str], workdir: Path, seed: int, budget: int,
                     epochs: int, first_trial_epochs: float, settings: dict[str, Any],
                     label: str, eta: Any = None, chunk: int | None = None
                     ) -> dict[str, Any]:
    """Run (or reuse, or extend) one condsearch search until it has trained `budget` epochs in
    all; return its workdir, settings and wall time (`done.json` in the workdir).

    It runs in chunks (`search(..., trials=k)` resuming the workdir), each sized from the epochs a
    trial has cost so far (`first_trial_epochs` before any trial ran). A finished search with the
    same `settings` and at least this budget is reused; one with other settings starts over; an
    interrupted one resumes; one that another process is searching is a SearchError.
    `eta(label, used, budget, seconds)` is told after every chunk; `chunk` caps a chunk's
    trials, so that long trials still report often."""
    import condsearch
    from condsearch.orchestrate._workdir import STATE_FILE, WorkdirLock

    done, progress = workdir / "done.json", workdir / "progress.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info["settings"] == settings and info["budget"] >= budget:
            return info
    info = json.loads(progress.read_text()) if progress.exists() else None
    if info is None or info["settings"] != settings:
        if workdir.exists():
            with WorkdirLock(workdir):  # SearchError while another process searches it
                pass
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        info = {"workdir": str(workdir), "settings": settings, "budget": budget,
                "seconds": 0.0, "calls": 0, "started": time.time()}
    info["budget"] = budget
    progress.write_text(json.dumps(info))  # before the first call: an interrupt in it resumes
    done.unlink(missing_ok=True)
    stalled = 0
    records = read_condsearch(workdir, epochs) if (workdir / STATE_FILE).exists() else []
    while True:
        used = spent(records)
        if eta is not None:
            eta(label, used, budget, info["seconds"])
        if used >= budget:
            break
        per_trial = used / len(records) if records and used else first_trial_epochs
        trials = max(1, math.ceil((budget - used) / max(per_trial, 1)))
        trials = min(trials, chunk) if chunk else trials
        print(f"[{time.strftime('%H:%M:%S')}] {label}: {used}/{budget} epochs spent, "
              f"{trials} more trial(s)", flush=True)
        began = time.monotonic()
        try:
            condsearch.search(str(space), trials=trials, workdir=workdir, seed=seed,
                              overrides=overrides, progress=False)
        finally:  # an interrupted call's time counts too: its finished trials are kept
            info["seconds"] += time.monotonic() - began
            info["calls"] += 1
            progress.write_text(json.dumps(info))
        records = read_condsearch(workdir, epochs)
        stalled = stalled + 1 if spent(records) == used else 0
        if stalled >= 3:
            print(f"    {label}: three calls trained nothing (every trial failed); "
                  "giving up below the budget", flush=True)
            break
    done.write_text(json.dumps(info))
    print(f"    {label}: {info['seconds']:.0f} s in {info['calls']} call(s)", flush=True)
    return info


# ---- rank correlation ---------------------------------------------------------------------------


def _ranks(values: list[float]) -> list[float]:
    """Ranks 1..n, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(pairs: list[tuple[float, float]] | list[list[float]]) -> float:
    """Spearman's rank correlation of the pairs (nan for fewer than 3, or a constant side)."""
    if len(pairs) < 3:
        return math.nan
    a = _ranks([p[0] for p in pairs])
    b = _ranks([p[1] for p in pairs])
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    var = math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return cov / var if var > 0 else math.nan
