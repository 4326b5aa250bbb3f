"""Telling the study what a trial measured: its values, constraints and derived points.

Both backends record through here, so the study looks the same however trials ran.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

from condsearch.search._points import (
    ATTR_ARCH,
    ATTR_DERIVED_FROM,
    ATTR_KNOBS,
    ATTR_METRICS,
    ATTR_RUN,
    ATTR_TASK,
    ATTR_WEIGHTS_RUN,
    Point,
)
from condsearch.search._trial import OBJECTIVE_METRICS, TrialResult
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


def record_result(study: optuna.Study, trial: optuna.Trial, arch: dict[str, Any],
                  task: dict[str, Any], result: TrialResult, objectives: list[tuple[str, str]],
                  constraints: dict[str, Any]) -> list[Point]:
    """Tell the study the trial's outcome and add its derived points; return the new points."""
    names = [n for n, _ in objectives]
    values = _values(result.metrics, objectives) if result.ok else None
    if values is None:
        reason = result.error or f"no finite objective values in {result.metrics}"
        trial.set_user_attr(ATTR_ERROR, reason[:2000])
        if result.run_id:
            trial.set_user_attr(ATTR_RUN, result.run_id)
        study.tell(trial, state=TrialState.FAIL)
        return []
    cons = constraint_values(result.metrics, constraints)
    for key, value in cons.items():
        trial.set_constraint(key, value)
    attrs = {ATTR_METRICS: result.metrics, ATTR_KNOBS: result.knobs, ATTR_ARCH: arch,
             ATTR_TASK: task, ATTR_RUN: result.run_id, ATTR_WEIGHTS_RUN: result.run_id}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
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
