"""Multi-fidelity in the search: the space's MO-ASHA, its rung results kept on the study, and the
judge that measures a local trial at each rung and stops it when MO-ASHA says so.

A rung result is the trial's accuracy on the whole validation split (the fit evaluates it every
epoch anyway) and its mean per-sample FLOPs (and parameters, latency) on the fixed, seeded
validation subset of `condsearch.train._interim`, measured only at a rung epoch. At the last
rung (train.epochs) the trial's full evaluation stands for the result. Both backends keep the
results the same way: on the Optuna trial as `condsearch.rungs`, written as each rung is
reached (so a Ctrl-C loses none), and on its MLflow run as `rung_<objective>` metrics stepped by
epoch; a resumed search replays them into a fresh MO-ASHA (`replay`).
"""

from __future__ import annotations

import math
from typing import Any

from condsearch._names import (
    ATTR_RUNGS,
    OBJECTIVE_METRICS,
    RUNG_METRIC_PREFIX,
)
from condsearch.orchestrate._record import measured_constraint_values
from condsearch.schedule import MOASHA

#: study states whose rung results a resumed scheduler replays: a trial interrupted between rungs
#: (FAIL) keeps the results others were judged against
_REPLAYED = ("COMPLETE", "PRUNED", "FAIL")


def make_scheduler(space: Any, seed: int) -> MOASHA | None:
    """The space's MO-ASHA (`search.scheduler.mo_asha`), seeded with the search's seed; None
    when the space stops no trial early."""
    settings = space.mo_asha
    if settings is None:
        return None
    return MOASHA(space.objectives, settings["min_epochs"], settings["reduction_factor"],
                  settings["max_epochs"], settings["brackets"], seed=seed)


def rung_values(metrics: dict[str, float], objectives: list[tuple[str, str]]) -> dict[str, float]:
    """The objective values of a rung result, by objective name, from metric keys."""
    return {name: float(metrics.get(OBJECTIVE_METRICS[name], math.nan)) for name, _ in objectives}


def rung_feasible(metrics: dict[str, float], constraints: dict[str, Any]) -> bool:
    """Whether a rung result keeps the space's constraints (a metric a constraint bounds that was
    not measured counts as kept: the trial's final evaluation checks it)."""
    return all(v <= 0 for v in measured_constraint_values(metrics, constraints).values())


def stored_rungs(results: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """MO-ASHA's `results_of` as the study stores it: epochs as str keys (JSON), NaN as None."""
    return {str(epoch): {"values": {k: (v if math.isfinite(v) else None)
                                    for k, v in r["values"].items()},
                         "feasible": bool(r["feasible"])}
            for epoch, r in sorted(results.items())}


def replay(scheduler: MOASHA, trials: list[Any]) -> int:
    """Feed the rung results the study's trials hold back into `scheduler` (a resumed search),
    marking a PRUNED trial stopped at its last rung; the number of results replayed."""
    replayed = 0
    for trial in sorted(trials, key=lambda t: t.number):
        rungs = trial.user_attrs.get(ATTR_RUNGS)
        if not rungs or trial.state.name not in _REPLAYED:
            continue
        epochs = sorted(int(e) for e in rungs)
        for epoch in epochs:
            result = rungs[str(epoch)]
            values = {k: (math.nan if v is None else float(v))
                      for k, v in result["values"].items()}
            stopped = trial.state.name == "PRUNED" and epoch == epochs[-1]
            replayed += scheduler.record(trial.number, epoch, values, bool(result["feasible"]),
                                         stopped=stopped)
    return replayed


def rung_metrics(values: dict[str, float]) -> dict[str, float]:
    """A rung result as MLflow metrics (`rung_accuracy`, `rung_flops`, ...), finite ones only."""
    return {f"{RUNG_METRIC_PREFIX}{OBJECTIVE_METRICS[name]}": v for name, v in values.items()
            if math.isfinite(v)}


class RungJudge:
    """The epoch hook of a trial run in this process: at each rung epoch before the last it
    measures the trial (`rung_result`), asks `scheduler`, hands the result to
    `on_rung(trial, epoch, decision, run_id, metrics)` to keep, and raises `TrialStopped` when
    the scheduler stops the trial. `state` is the trial's `FitState` (the live model), `batch`
    its evaluation batch size; `on_run` catches its MLflow run id."""

    def __init__(self, scheduler: MOASHA, space: Any, trial: Any, state: Any, batch: int,
                 on_rung: Any) -> None:
        self.scheduler, self.space, self.trial, self.state = scheduler, space, trial, state
        self.batch, self.on_rung = batch, on_rung
        self.run_id: str | None = None

    def on_run(self, run_id: str | None) -> None:
        self.run_id = run_id

    def __call__(self, epoch: int, epochs: int, record: dict[str, float]) -> None:
        from condsearch.orchestrate._trial import TrialStopped

        scheduler, number, space = self.scheduler, self.trial.number, self.space
        if epoch >= scheduler.max_epochs or not scheduler.needs_values(number, epoch):
            return  # the last rung is the trial's full evaluation, recorded with its outcome
        metrics = rung_result(self.state, record, space.objectives, self.batch)
        decision = scheduler.on_result(number, epoch, rung_values(metrics, space.objectives),
                                       rung_feasible(metrics, space.constraints))
        self.on_rung(self.trial, epoch, decision, self.run_id, metrics)
        if decision.stop:
            raise TrialStopped(epoch, decision.reason, metrics)


def keep_rung(study: Any, trial: Any, scheduler: MOASHA, objectives: list[tuple[str, str]],
              tracking_uri: str | None, run_id: str | None, epoch: int,
              metrics: dict[str, float]) -> None:
    """Keep a running trial's rung results on the study now (a Ctrl-C later loses none) and log
    the rung to its MLflow run as `rung_*` metrics stepped by epoch (best effort)."""
    from condsearch.orchestrate._keeper import best_effort
    from condsearch.orchestrate._record import write_trial_attrs
    from condsearch.track._trial_runs import log_stepped

    write_trial_attrs(study, trial, {ATTR_RUNGS: stored_rungs(scheduler.results_of(
        trial.number))})
    if run_id and tracking_uri:
        best_effort(log_stepped, tracking_uri, run_id,
                    rung_metrics(rung_values(metrics, objectives)), epoch)


def final_rung(scheduler: MOASHA | None, number: int, result: Any, space: Any
               ) -> dict[str, Any] | None:
    """The trial's rung results to store with its outcome: a finished trial's full evaluation
    is its result at the last rung (recorded once: Ray's scheduler may have seen it already).
    None without a scheduler."""
    if scheduler is None:
        return None
    values = result.values(space.objectives)
    if values is not None and result.stopped_at is None:
        scheduler.on_result(number, scheduler.max_epochs,
                            dict(zip([n for n, _ in space.objectives], values)),
                            rung_feasible(result.metrics, space.constraints))
    return stored_rungs(scheduler.results_of(number))


def rung_result(state: Any, record: dict[str, float], objectives: list[tuple[str, str]],
                batch: int, dist: Any = None) -> dict[str, float]:
    """A trial's metrics at a rung: the epoch's accuracy on the whole validation split (the
    fit's own evaluation) and FLOPs, parameters (and latency) on the fixed validation subset.
    With `dist` (a data-parallel trial's rank) every rank calls it and gets the same figures."""
    from condsearch.train._interim import interim_metrics, subset_indices

    x_val = state.task.val[0]
    x = x_val[subset_indices(int(x_val.shape[0]))].to(state.device)
    keys = [OBJECTIVE_METRICS[name] for name, _ in objectives]
    return {**interim_metrics(state.model, x, keys, batch, dist),
            "accuracy": float(record["val_accuracy"])}
