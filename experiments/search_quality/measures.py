"""What the search-quality study measures on a finished search: the hypervolume of its
validation front after each trained trial, and how the fronts of two searches compare at equal
FLOPs. Read from the search's Optuna study, the same record `condsearch pareto` reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import optuna

from condsearch.orchestrate import all_points
from condsearch.orchestrate._pareto import hypervolume, non_dominated
from condsearch.orchestrate._points import ATTR_DERIVED_FROM, Point

DIRECTIONS = ["maximize", "minimize"]  # accuracy, FLOPs


@dataclass
class SearchRecord:
    """One finished search: its trained trials in order (failed ones included) and its points."""

    trained: list[int]
    failed: int
    points: list[Point]


def read_search(workdir: Path) -> SearchRecord:
    """The trained trials and completed points of the search in `workdir`."""
    state, points = all_points(workdir)
    study = optuna.load_study(study_name=state.study_name, storage=state.storage)
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if ATTR_DERIVED_FROM not in t.user_attrs]
    failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trained)
    return SearchRecord([t.number for t in trained], failed, points)


def pairs(points: list[Point]) -> list[tuple[float, float]]:
    """(accuracy, FLOPs) of the feasible points."""
    return [(p.values["accuracy"], p.values["flops"]) for p in points if p.feasible]


def front(values: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated (accuracy, FLOPs) pairs, cheapest first."""
    keep = non_dominated([list(v) for v in values], DIRECTIONS)
    return sorted((values[i] for i in keep), key=lambda v: (v[1], -v[0]))


def normalised_hypervolume(values: list[tuple[float, float]], flops_ref: float) -> float:
    """Hypervolume against (accuracy 0, FLOPs `flops_ref`), divided by the box's area, so 1.0
    would be accuracy 1 at zero FLOPs."""
    f = front(values)
    if not f:
        return 0.0
    return hypervolume([list(v) for v in f], DIRECTIONS, [0.0, flops_ref]) / flops_ref


def hypervolume_curve(record: SearchRecord, flops_ref: float, derived: bool = True
                      ) -> list[float]:
    """Normalised hypervolume after each trained trial; with `derived` False, the knob-sweep
    points are left out (the front of the trained settings alone)."""
    curve = []
    for k in range(1, len(record.trained) + 1):
        allowed = set(record.trained[:k])
        chosen = [p for p in record.points if p.trial in allowed and (derived or not p.derived)]
        curve.append(normalised_hypervolume(pairs(chosen), flops_ref))
    return curve


def points_of_first(record: SearchRecord, n: int) -> list[Point]:
    """The points (trained and derived) of the first `n` trained trials."""
    allowed = set(record.trained[:n])
    return [p for p in record.points if p.trial in allowed]


def best_below(values: list[tuple[float, float]], budget: float) -> float:
    """The best accuracy at FLOPs ≤ `budget` (nan when nothing fits)."""
    fits = [a for a, f in values if f <= budget]
    return max(fits) if fits else math.nan


def accuracy_bought(adaptive: list[tuple[float, float]], dense: list[tuple[float, float]],
                    levels: list[float]) -> list[dict[str, float]]:
    """At each FLOPs budget: the best dense and best adaptive accuracy within it, and the gap."""
    rows = []
    for level in levels:
        a, d = best_below(adaptive, level), best_below(dense, level)
        rows.append({"flops": level, "adaptive": a, "dense": d,
                     "gain": a - d if math.isfinite(a) and math.isfinite(d) else math.nan})
    return rows


def log_levels(low: float, high: float, count: int) -> list[float]:
    """`count` FLOPs budgets spaced evenly in log scale from `low` to `high`."""
    if count == 1 or high <= low:
        return [high]
    step = (math.log(high) - math.log(low)) / (count - 1)
    return [math.exp(math.log(low) + i * step) for i in range(count)]
