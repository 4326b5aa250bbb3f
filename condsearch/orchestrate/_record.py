"""Telling the study what a trial measured: its values, constraints and derived points.

Both backends record through here, so the study looks the same however trials ran.
"""

from __future__ import annotations

import math
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
    ATTR_WEIGHTS_RUN,
    CONSTRAINT_METRICS,
    OBJECTIVE_METRICS,
)
from condsearch.orchestrate._optuna_private import (
    add_trial_numbered,
    constraint_system_attrs,
    distribution_contains,
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

