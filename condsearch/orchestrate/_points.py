"""Points of a search (trained trials and their derived knob settings) and the front among them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condsearch._names import (
    ATTR_ARCH,
    ATTR_DERIVED_FROM,
    ATTR_KNOBS,
    ATTR_METRICS,
    ATTR_RUN,
    ATTR_STOPPED_AT,
    ATTR_TASK,
    ATTR_WEIGHTS_RUN,
    OBJECTIVE_METRICS,
)
from condsearch.orchestrate._pareto import knee_index, non_dominated
from condsearch.orchestrate._workdir import SearchError, WorkdirState, read_workdir

PICKS = ("knee", "max-accuracy", "min-flops")


@dataclass
class Point:
    """One completed (accuracy, FLOPs, ...) point: a trained trial or a derived knob setting."""

    number: int
    trial: int
    derived: bool
    values: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)
    knobs: dict[str, float] = field(default_factory=dict)
    arch: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    weights_run_id: str | None = None
    feasible: bool = True
    on_front: bool = False
    #: a trial a scheduler stopped early: the epoch of its last rung, whose values these are
    #: (never on the front: it has no trained weights and no full evaluation)
    stopped_at: int | None = None

    def row(self) -> dict[str, Any]:
        """A JSON-able summary, as `condsearch pareto --json` prints it."""
        return {
            "number": self.number, "trial": self.trial, "derived": self.derived,
            "values": self.values, "metrics": self.metrics, "knobs": self.knobs,
            "feasible": self.feasible, "on_front": self.on_front, "run_id": self.run_id,
            "weights_run_id": self.weights_run_id, "arch": self.arch,
            "stopped_at": self.stopped_at,
        }


def mark_front(points: list[Point], objectives: list[tuple[str, str]]) -> list[Point]:
    """Set `on_front` on the feasible non-dominated points; return the front, cheapest first."""
    names, directions = [n for n, _ in objectives], [d for _, d in objectives]
    feasible = [p for p in points if p.feasible]
    front_idx = set(non_dominated([[p.values[n] for n in names] for p in feasible], directions))
    for p in points:
        p.on_front = False
    for i in front_idx:
        feasible[i].on_front = True
    return sorted((p for p in points if p.on_front), key=_order_key(objectives))


def _order_key(objectives: list[tuple[str, str]]):
    names = [n for n, _ in objectives]
    first = "flops" if "flops" in names else names[-1]
    return lambda p: (p.values[first], p.number)


def point_from_trial(trial: Any, names: list[str]) -> Point:
    """Rebuild a point from a completed Optuna FrozenTrial written by a search."""
    attrs = trial.user_attrs
    derived_from = attrs.get(ATTR_DERIVED_FROM)
    return Point(
        number=trial.number,
        trial=trial.number if derived_from is None else int(derived_from),
        derived=derived_from is not None,
        values=dict(zip(names, trial.values)),
        metrics=attrs.get(ATTR_METRICS, {}),
        knobs=attrs.get(ATTR_KNOBS, {}),
        arch=attrs.get(ATTR_ARCH, {}),
        task=attrs.get(ATTR_TASK, {}),
        run_id=attrs.get(ATTR_RUN),
        weights_run_id=attrs.get(ATTR_WEIGHTS_RUN),
        feasible=all(v <= 0 for v in trial.constraints.values()),
    )


def stopped_point(trial: Any, names: list[str]) -> Point | None:
    """A PRUNED trial's last rung as a point (`stopped_at` set), or None when it has none."""
    attrs = trial.user_attrs
    stopped_at, metrics = attrs.get(ATTR_STOPPED_AT), attrs.get(ATTR_METRICS) or {}
    values = {n: metrics.get(OBJECTIVE_METRICS[n]) for n in names}
    if stopped_at is None or any(not isinstance(v, (int, float)) for v in values.values()):
        return None
    return Point(number=trial.number, trial=trial.number, derived=False, values=values,
                 metrics=metrics, arch=attrs.get(ATTR_ARCH, {}), task=attrs.get(ATTR_TASK, {}),
                 run_id=attrs.get(ATTR_RUN), feasible=all(v <= 0 for v in
                                                          trial.constraints.values()),
                 stopped_at=int(stopped_at))


def all_points(workdir: str | Path | WorkdirState, stopped: bool = False
               ) -> tuple[WorkdirState, list[Point]]:
    """Every completed point of the search in `workdir` (or described by a state read from its
    storage), with `on_front` set; with `stopped`, also the last rung of each trial a scheduler
    stopped early (never on the front)."""
    import optuna

    state = read_workdir(workdir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=state.study_name, storage=state.storage)
    except KeyError:
        raise SearchError(f"no study {state.study_name!r} in {state.storage}: the search has "
                          "recorded no trial there yet") from None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    points = [point_from_trial(t, state.names()) for t in complete]
    objectives = [(n, d) for n, d in state.objectives]
    mark_front(points, objectives)
    if stopped:
        pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
        points += [p for p in (stopped_point(t, state.names()) for t in pruned) if p]
    return state, points


def load_front(workdir: str | Path | WorkdirState) -> list[Point]:
    """The current Pareto front of the search in `workdir`, cheapest first."""
    state, points = all_points(workdir)
    return mark_front(points, [(n, d) for n, d in state.objectives])


def knee_point(points: list[Point], objectives: list[tuple[str, str]]) -> Point | None:
    """The knee of the front `points` mark (`--pick knee`), or None on an empty front."""
    front = [p for p in points if p.on_front]
    return pick_point(front, objectives, pick="knee") if front else None


def pick_point(
    points: list[Point], objectives: list[tuple[str, str]], trial: int | None = None,
    pick: str | None = None,
) -> Point:
    """The point `--trial N` (any completed point) or `--pick` (a front point) names."""
    if (trial is None) == (pick is None):
        raise SearchError("name exactly one of --trial N or --pick knee|max-accuracy|min-flops")
    if trial is not None:
        for p in points:
            if p.number == trial:
                return p
        known = ", ".join(str(p.number) for p in points[:20])
        raise SearchError(f"no completed trial {trial}; completed: {known or 'none'}")
    front = mark_front(points, objectives)
    if not front:
        raise SearchError("the search has no feasible completed point yet")
    names = [n for n, _ in objectives]
    if pick == "knee":
        directions = [d for _, d in objectives]
        return front[knee_index([[p.values[n] for n in names] for p in front], directions)]
    if pick == "max-accuracy":
        return max(front, key=lambda p: (p.metrics.get("accuracy", p.values.get("accuracy", 0)),
                                          -p.metrics.get("flops", 0)))
    if pick == "min-flops":
        return min(front, key=lambda p: (p.metrics.get("flops", p.values.get("flops", 0)),
                                          -p.metrics.get("accuracy", 0)))
    raise SearchError(f"unknown --pick {pick!r}; choose one of {', '.join(PICKS)}")
