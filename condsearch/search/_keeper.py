"""The search's live view of its points: front, hypervolume and the MLflow tags that show them.

Everything is kept in memory, so recording a trial costs the same at trial 10 and trial 1,000.
"""

from __future__ import annotations

from typing import Any

from condsearch.search._pareto import hypervolume
from condsearch.search._points import Point, mark_front
from condsearch.search._record import CONSTRAINT_METRICS

REFERENCE_ATTR = "condsearch.hypervolume_reference"


def reference_point(points: list[Point], objectives: list[tuple[str, str]],
                    constraints: dict[str, Any]) -> list[float]:
    """The hypervolume reference: accuracy 0 (the worst possible); for a cost, its constraint
    bound when there is one, else twice the largest cost among the first points."""
    bounds = {metric: constraints.get(name) for name, metric in CONSTRAINT_METRICS.items()}
    ref = []
    for name, direction in objectives:
        if direction == "maximize":
            ref.append(0.0 if name == "accuracy" else min(p.values[name] for p in points) - 1.0)
        elif bounds.get(name):
            ref.append(float(bounds[name]))
        else:
            ref.append(2.0 * max(p.values[name] for p in points))
    return ref


class FrontKeeper:
    """Holds every completed point; after each trial updates the front, tags and hypervolume."""

    def __init__(self, objectives: list[tuple[str, str]], constraints: dict[str, Any],
                 reference: list[float] | None, tagger: Any = None, target: Any = None) -> None:
        self.objectives = objectives
        self.constraints = constraints
        self.reference = reference
        self.tagger = tagger
        self.target = target
        self.points: list[Point] = []
        self.front: list[Point] = []
        self.hypervolume = 0.0
        self.trained = 0

    def load(self, points: list[Point]) -> None:
        """Take the points of earlier invocations and bring every tag up to date."""
        self.points = list(points)
        self.trained = sum(not p.derived for p in points)
        self._refresh({})

    def add(self, points: list[Point]) -> None:
        """Record one trial's points; a failed trial adds none but still counts nothing."""
        if not points:
            return
        self.points.extend(points)
        self.trained += 1
        extra = {p.run_id: {"condsearch.trial": str(p.number)} for p in points
                 if p.derived and p.run_id}
        for p in points:
            if not p.feasible and p.run_id:
                extra.setdefault(p.run_id, {})["condsearch.feasible"] = "false"
        self._refresh(extra)
        best_effort(self._log_hypervolume)

    def _refresh(self, extra: dict[str, dict[str, str]]) -> None:
        self.front = mark_front(self.points, self.objectives)
        if self.points and self.reference is None:
            self.reference = reference_point(self.points, self.objectives, self.constraints)
        names = [n for n, _ in self.objectives]
        self.hypervolume = hypervolume(
            [[p.values[n] for n in names] for p in self.front],
            [d for _, d in self.objectives], self.reference) if self.front else 0.0
        if self.tagger is not None:
            best_effort(self.tagger.update,
                         {p.run_id: p.on_front for p in self.points if p.run_id}, extra)

    def _log_hypervolume(self) -> None:
        if self.target is None:
            return
        import time

        from mlflow import MlflowClient
        from mlflow.entities import Metric

        MlflowClient(self.target.uri).log_batch(self.target.parent_run_id, metrics=[
            Metric("hypervolume", self.hypervolume, int(time.time() * 1000), self.trained),
            Metric("front_size", float(len(self.front)), int(time.time() * 1000), self.trained),
        ])


def best_effort(method: Any, *args: Any) -> None:
    """Call an MLflow update that must not stop the search: front tags and curves are rewritten
    after every trial, so what MLflow drops (after its own retries) is caught up by the next
    one, and the study, not MLflow, holds the results."""
    try:
        method(*args)
    except Exception as exc:
        import warnings

        from condsearch.track._trial_runs import TrackingUnavailable

        warnings.warn(f"MLflow update skipped ({type(exc).__name__}: {str(exc)[:300]}); it is "
                      "caught up after the next trial if there is one", TrackingUnavailable, stacklevel=2)
