"""Telling the study what a trial measured: its values, constraints and derived points.

Both backends record through here, so the study looks the same however trials ran.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from condsearch._names import (
    ATTR_ARCH,
    ATTR_DERIVED_FROM,
    ATTR_ERROR,
    ATTR_KNOBS,
    ATTR_METRICS,
    ATTR_RUN,
    ATTR_TASK,
    ATTR_TRACKING,
    ATTR_WEIGHTS_RUN,
    CONSTRAINT_METRICS,
    OBJECTIVE_METRICS,
)
from condsearch.orchestrate._optuna_private import (
    add_trial_numbered,
    constraint_system_attrs,
    distribution_contains,
    heartbeat_expired_trial_ids,
    heartbeat_trial_ids,
    record_heartbeat,
    study_storage,
    trial_id,
    write_running_trial_attrs,
)
from condsearch.orchestrate._points import Point
from condsearch.orchestrate._trial import TrialResult
from condsearch.space import knob_param


def constraint_values(metrics: dict[str, float], constraints: dict[str, Any]) -> dict[str, float]:
    """Optuna constraint values (feasible when ≤ 0), relative to each bound."""
    values = {}
    for name, metric in CONSTRAINT_METRICS.items():
        bound = constraints.get(name)
        if bound:
            values[name] = (float(metrics[metric]) - float(bound)) / float(bound)
    return values


#: environment variables overriding the heartbeat interval and the grace period (seconds)
ENV_HEARTBEAT_S = "CONDSEARCH_HEARTBEAT_S"
ENV_GRACE_S = "CONDSEARCH_GRACE_S"
#: a running trial records a heartbeat this often (seconds) ...
DEFAULT_HEARTBEAT_S = 10.0
#: ... and is stale once its last heartbeat (or, with none, its start) is older than this
DEFAULT_GRACE_S = 60.0


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={text!r}: expected a positive number of seconds")
    return value


def heartbeat_interval() -> float:
    """Seconds between a running trial's heartbeats: $CONDSEARCH_HEARTBEAT_S, else 10."""
    return _seconds(ENV_HEARTBEAT_S, DEFAULT_HEARTBEAT_S)


def grace_period() -> float:
    """Seconds without a heartbeat after which a RUNNING trial is stale: $CONDSEARCH_GRACE_S,
    else 60."""
    return _seconds(ENV_GRACE_S, DEFAULT_GRACE_S)


class TrialHeartbeat:
    """While a trial runs in this process, record its heartbeat every `interval` seconds from a
    daemon thread, so another search process on the same storage sees it is alive (Optuna's own
    heartbeat thread runs only inside `study.optimize`; condsearch asks and tells). Entering
    also notes where the trial's MLflow runs are, for the process that may one day close them."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, tracking: Any = None,
                 interval: float | None = None) -> None:
        self.study, self.trial, self.tracking = study, trial, tracking
        self.interval = interval or heartbeat_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def _beat(self) -> bool:
        try:
            return record_heartbeat(self.study, trial_id(self.trial))
        except Exception as exc:  # a busy or unreachable database: try again next interval
            if not self._warned:
                self._warned = True
                warnings.warn(f"could not record trial {self.trial.number}'s heartbeat "
                              f"({type(exc).__name__}: {str(exc)[:200]}); retrying",
                              RuntimeWarning, stacklevel=2)
            return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def __enter__(self) -> TrialHeartbeat:
        if self.tracking is not None:
            where = {"uri": self.tracking.uri, "experiment_id": str(self.tracking.experiment_id),
                     "parent_run_id": self.tracking.parent_run_id}
            write_running_trial_attrs(self.study, self.trial, {}, {ATTR_TRACKING: where})
        if self._beat():  # the first one now; none at all where the storage keeps none
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"condsearch-heartbeat-{self.trial.number}")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _close_runs(frozen: Any, reason: str, tracking_uri: str | None,
                experiment_id: str | None) -> None:
    """Best effort: close the stale trial's MLflow runs as KILLED, tagged with the reason."""
    from condsearch.track._stale import close_stale_trial_runs

    where = frozen.system_attrs.get(ATTR_TRACKING) or (
        {"uri": tracking_uri, "experiment_id": str(experiment_id)}
        if tracking_uri and experiment_id is not None else None)
    if not where:
        return
    try:
        close_stale_trial_runs(where["uri"], where["experiment_id"], frozen.number, reason,
                               run_id=frozen.user_attrs.get(ATTR_RUN),
                               parent_run_id=where.get("parent_run_id"))
    except Exception as exc:  # noqa: BLE001 - tracking is best effort; the study is the record
        warnings.warn(f"could not close stale trial {frozen.number}'s MLflow run at "
                      f"{where['uri']} ({type(exc).__name__}: {str(exc)[:200]})",
                      RuntimeWarning, stacklevel=3)


def fail_stale_trials(study: optuna.Study, tracking_uri: str | None = None,
                      experiment_id: str | None = None,
                      grace_s: float | None = None) -> list[int]:
    """Record as failed the RUNNING trials whose search process is gone, and return their
    numbers; a trial another live process is running is left alone.

    A trial is stale when its last heartbeat is more than `grace_s` seconds old (the database's
    clock; default `grace_period()`), or, when it never recorded one (a study written before
    heartbeats, or a backend that records none), when it started more than `grace_s` seconds
    ago. Each gets a `condsearch.error` attribute saying why, and its still-running MLflow runs
    are closed as KILLED with that reason as a tag (found through the location the trial noted,
    else by the trial's number in `experiment_id` at `tracking_uri`, the session's)."""
    from optuna.exceptions import UpdateFinishedTrialError

    grace = grace_s if grace_s is not None else grace_period()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    expired = heartbeat_expired_trial_ids(study, grace) or set()
    beating = heartbeat_trial_ids(study, [trial_id(t) for t in running])
    now = datetime.now()
    failed = []
    for frozen in running:
        tid = trial_id(frozen)
        if tid in expired:
            reason = (f"stale: no heartbeat for over {grace:g} s; the search process running "
                      "this trial stopped")
        elif tid not in beating and frozen.datetime_start is not None and (
                now - frozen.datetime_start).total_seconds() > grace:
            reason = (f"stale: running for over {grace:g} s without ever recording a heartbeat "
                      "(a search process that predates heartbeats, or one that stopped)")
        else:
            continue
        storage = study_storage(study)
        try:
            storage.set_trial_user_attr(tid, ATTR_ERROR, reason)
            if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # its owner or another process finished it meanwhile
            continue
        _close_runs(frozen, reason, tracking_uri, experiment_id)
        failed.append(frozen.number)
    return failed


def _values(metrics: dict[str, float], objectives: list[tuple[str, str]]) -> list[float] | None:
    values = [float(metrics.get(OBJECTIVE_METRICS[name], math.nan)) for name, _ in objectives]
    return values if all(math.isfinite(v) for v in values) else None


def _knob_params(trial_params: dict[str, Any], distributions: dict[str, Any],
                 knobs: dict[str, float]) -> dict[str, Any]:
    """The trial's params with each swept knob's value put in where the space sampled it."""
    params = dict(trial_params)
    for knob, value in knobs.items():
        # a backbone that keeps its keys directly under `model` samples its knob as model.<knob>
        flat = f"model.{knob.split('.', 1)[1]}"
        for key in (knob_param(knob), *(() if knob_param(knob).startswith(
                "model.components.") else (flat,))):
            dist = distributions.get(key)
            if dist is not None and distribution_contains(dist, value):
                params[key] = value
                break
    return params


def write_trial_attrs(study: optuna.Study, trial: optuna.Trial, user_attrs: dict[str, Any],
                      constraints: dict[str, float] | None = None) -> None:
    """Set a running trial's user attributes and constraints, in one storage transaction on a
    database storage: Optuna commits each `set_user_attr` on its own, which cost a trial about
    5 ms apiece. What the study holds afterwards is what those calls would have written."""
    write_running_trial_attrs(study, trial, user_attrs, constraint_system_attrs(constraints or {}))


def record_result(study: optuna.Study, trial: optuna.Trial, arch: dict[str, Any],
                  task: dict[str, Any], result: TrialResult, objectives: list[tuple[str, str]],
                  constraints: dict[str, Any], tell: bool = True) -> list[Point]:
    """Tell the study the trial's outcome and add its derived points; return the new points.

    With `tell=False` the trial's attributes, constraints and derived points are written but
    its state is left to the caller (an Optuna objective returns its values to `optimize`)."""
    names = [n for n, _ in objectives]
    values = _values(result.metrics, objectives) if result.ok else None
    if values is None:
        reason = result.error or f"no finite objective values in {result.metrics}"
        failure = {ATTR_ERROR: reason[:2000]}
        if result.run_id:
            failure[ATTR_RUN] = result.run_id
        write_trial_attrs(study, trial, failure)
        if tell:
            study.tell(trial, state=TrialState.FAIL)
        return []
    cons = constraint_values(result.metrics, constraints)
    attrs = {ATTR_METRICS: result.metrics, ATTR_KNOBS: result.knobs, ATTR_ARCH: arch,
             ATTR_TASK: task, ATTR_RUN: result.run_id, ATTR_WEIGHTS_RUN: result.run_id}
    write_trial_attrs(study, trial, attrs, cons)
    if tell:
        study.tell(trial, values)
    feasible = all(v <= 0 for v in cons.values())
    points = [Point(trial.number, trial.number, False, dict(zip(names, values)), result.metrics,
                    result.knobs, arch, task, result.run_id, result.run_id, feasible)]
    for derived in result.derived:
        d_values = _values(derived.metrics, objectives)
        if d_values is None:
            continue
        d_cons = constraint_values(derived.metrics, constraints)
        knobs = {**result.knobs, **derived.knobs}
        frozen = optuna.trial.create_trial(
            params=_knob_params(trial.params, trial.distributions, derived.knobs),
            distributions=trial.distributions, values=d_values, constraints=d_cons or None,
            user_attrs={**attrs, ATTR_METRICS: derived.metrics, ATTR_KNOBS: knobs,
                        ATTR_RUN: derived.run_id, ATTR_DERIVED_FROM: trial.number},
        )
        number = add_trial_numbered(study, frozen)
        points.append(Point(number, trial.number, True, dict(zip(names, d_values)),
                            derived.metrics, knobs, arch, task, derived.run_id, result.run_id,
                            all(v <= 0 for v in d_cons.values())))
    return points

