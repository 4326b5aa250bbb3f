"""Telling the study what a trial measured: its values, constraints and derived points.

Both backends record through here, so the study looks the same however trials ran.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from condsearch.orchestrate._points import (
    ATTR_ARCH,
    ATTR_DERIVED_FROM,
    ATTR_KNOBS,
    ATTR_METRICS,
    ATTR_RUN,
    ATTR_TASK,
    ATTR_WEIGHTS_RUN,
    Point,
)
from condsearch.orchestrate._trial import OBJECTIVE_METRICS, TrialResult
from condsearch.space import knob_param

ATTR_ERROR = "condsearch.error"
#: constraint name -> metric it bounds
CONSTRAINT_METRICS = {"max_flops": "flops", "max_params": "params"}


def constraint_values(metrics: dict[str, float], constraints: dict[str, Any]) -> dict[str, float]:
    """Optuna constraint values (feasible when ≤ 0), relative to each bound."""
    values = {}
    for name, metric in CONSTRAINT_METRICS.items():
        bound = constraints.get(name)
        if bound:
            values[name] = (float(metrics[metric]) - float(bound)) / float(bound)
    return values


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a search process that died: record them as failed."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
    return [t.number for t in stale]


def _values(metrics: dict[str, float], objectives: list[tuple[str, str]]) -> list[float] | None:
    values = [float(metrics.get(OBJECTIVE_METRICS[name], math.nan)) for name, _ in objectives]
    return values if all(math.isfinite(v) for v in values) else None


def _knob_params(trial_params: dict[str, Any], distributions: dict[str, Any],
                 knobs: dict[str, float]) -> dict[str, Any]:
    """The trial's params with each swept knob's value put in where the space sampled it."""
    params = dict(trial_params)
    for knob, value in knobs.items():
        key = knob_param(knob)
        dist = distributions.get(key)
        if dist is not None and dist._contains(dist.to_internal_repr(value)):
            params[key] = value
    return params


def write_trial_attrs(study: optuna.Study, trial: optuna.Trial, user_attrs: dict[str, Any],
                      constraints: dict[str, float] | None = None) -> None:
    """Set a running trial's user attributes and constraints, in one storage transaction on a
    database storage: Optuna commits each `set_user_attr` on its own, which cost a trial about
    5 ms apiece. What the study holds afterwards is what those calls would have written."""
    system_attrs = {}
    for key, value in (constraints or {}).items():
        value = float(value)
        if math.isnan(value):
            raise ValueError(f"constraint {key!r} is NaN")
        # the system attribute Trial.set_constraint writes and FrozenTrial.constraints reads
        system_attrs[f"constraints:{key}"] = value
    storage = study._storage
    transaction = _one_transaction(getattr(storage, "_backend", storage))
    if transaction is not None:
        session_scope, write, models = transaction
        with session_scope() as session:
            for key, value in user_attrs.items():
                write(session, models.TrialUserAttributeModel, trial._trial_id, key, value)
            for key, value in system_attrs.items():
                write(session, models.TrialSystemAttributeModel, trial._trial_id, key, value)
    else:  # in-memory, journal or another storage: its own calls, one per attribute
        for key, value in user_attrs.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
        for key, value in system_attrs.items():
            storage.set_trial_system_attr(trial._trial_id, key, value)
    # Trial keeps a copy of its frozen trial that set_user_attr and set_constraint also update.
    trial._cached_frozen_trial.user_attrs.update(user_attrs)
    trial._cached_frozen_trial.system_attrs.update(system_attrs)


def _one_transaction(backend: Any) -> tuple[Any, Any, Any] | None:
    """Optuna's RDB session scope, attribute writer and models, which set_trial_user_attr uses
    per key; None for another storage, or an Optuna whose internals moved."""
    if not isinstance(backend, RDBStorage):
        return None
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return None
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    if write is None:
        return None
    return (lambda: _create_scoped_session(backend.scoped_session)), write, models


def record_result(study: optuna.Study, trial: optuna.Trial, arch: dict[str, Any],
                  task: dict[str, Any], result: TrialResult, objectives: list[tuple[str, str]],
                  constraints: dict[str, Any]) -> list[Point]:
    """Tell the study the trial's outcome and add its derived points; return the new points."""
    names = [n for n, _ in objectives]
    values = _values(result.metrics, objectives) if result.ok else None
    if values is None:
        reason = result.error or f"no finite objective values in {result.metrics}"
        failure = {ATTR_ERROR: reason[:2000]}
        if result.run_id:
            failure[ATTR_RUN] = result.run_id
        write_trial_attrs(study, trial, failure)
        study.tell(trial, state=TrialState.FAIL)
        return []
    cons = constraint_values(result.metrics, constraints)
    attrs = {ATTR_METRICS: result.metrics, ATTR_KNOBS: result.knobs, ATTR_ARCH: arch,
             ATTR_TASK: task, ATTR_RUN: result.run_id, ATTR_WEIGHTS_RUN: result.run_id}
    write_trial_attrs(study, trial, attrs, cons)
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
        number = _add_trial(study, frozen)
        points.append(Point(number, trial.number, True, dict(zip(names, d_values)),
                            derived.metrics, knobs, arch, task, derived.run_id, result.run_id,
                            all(v <= 0 for v in d_cons.values())))
    return points


def _add_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> int:
    # Study.add_trial does not return the new trial's number; its storage call does.
    storage = study._storage
    trial_id = storage.create_new_trial(study._study_id, template_trial=frozen)
    return storage.get_trial_number_from_id(trial_id)
