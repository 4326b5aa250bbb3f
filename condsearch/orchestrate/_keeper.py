"""The search's live view of its points: front, hypervolume and the MLflow tags that show them.

Everything is kept in memory and updated incrementally, so recording a trial costs the same at
trial 10 and trial 1,000.
"""

from __future__ import annotations

import time
from typing import Any

from condsearch._names import CONSTRAINT_METRICS
from condsearch.orchestrate._pareto import dominates, hypervolume
from condsearch.orchestrate._points import Point, _order_key, mark_front


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


#: the hypervolume curve reaches MLflow at least this often (and when the search ends)
CURVE_FLUSH_S = 10.0


class FrontKeeper:
    """Holds every completed point; after each trial updates the front, tags and hypervolume.

    A trial costs O(front size), not O(points): a new point enters the front unless a front
    point dominates it and pushes out the front points it dominates; only runs whose flag
    changes get a tag write, and the hypervolume is recomputed only when the front changed.
    """

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
        self._names = [n for n, _ in objectives]
        self._directions = [d for _, d in objectives]
        self._curve: list[tuple[float, float, int, int]] = []
        self._curve_flushed = time.monotonic()

    def load(self, points: list[Point]) -> None:
        """Take the points of earlier invocations and bring every tag up to date."""
        self.points = list(points)
        self.trained = sum(not p.derived for p in points)
        self.front = mark_front(self.points, self.objectives)
        self._update_hypervolume()
        if self.tagger is not None:
            best_effort(self.tagger.update, {p.run_id: p.on_front for p in self.points if p.run_id})

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
        self._refresh(points, extra)
        self._curve.append((self.hypervolume, float(len(self.front)),
                            int(time.time() * 1000), self.trained))
        if time.monotonic() - self._curve_flushed >= CURVE_FLUSH_S:
            self.flush()

    def _refresh(self, new: list[Point], extra: dict[str, dict[str, str]]) -> None:
        changed = self._insert(new)
        if changed is not None or self.reference is None:
            self._update_hypervolume()
        if self.tagger is not None:
            flags = {p.run_id: p.on_front for p in new if p.run_id}
            flags.update(changed or {})
            best_effort(self.tagger.update, flags, extra)

    def _insert(self, new: list[Point]) -> dict[str, bool] | None:
        """Put `new` into the front; return run id -> False for the front points it pushed
        out, or None when the front did not change. The front of the old points plus one more
        is the old front's members it does not dominate, plus the point unless one dominates it."""
        left: dict[str, bool] = {}
        changed = False
        for p in new:
            p.on_front = False
            if not p.feasible:
                continue
            vec = self._vector(p)
            if any(dominates(self._vector(q), vec, self._directions) for q in self.front):
                continue
            kept = []
            for q in self.front:
                if dominates(vec, self._vector(q), self._directions):
                    q.on_front = False
                    if q.run_id:
                        left[q.run_id] = False
                else:
                    kept.append(q)
            p.on_front = True
            self.front = kept + [p]
            changed = True
        if not changed:
            return None
        self.front.sort(key=_order_key(self.objectives))
        return left

    def _vector(self, p: Point) -> list[float]:
        return [p.values[n] for n in self._names]

    def _update_hypervolume(self) -> None:
        if self.points and self.reference is None:
            self.reference = reference_point(self.points, self.objectives, self.constraints)
        self.hypervolume = hypervolume(
            [self._vector(p) for p in self.front], self._directions, self.reference
        ) if self.front else 0.0

    def flush(self) -> None:
        """Log the hypervolume and front size of every trial since the last flush to the parent
        run (one `log_batch`); kept for the next flush if MLflow fails."""
        self._curve_flushed = time.monotonic()
        if self._curve:
            best_effort(self._log_hypervolume)

    def _log_hypervolume(self) -> None:
        if self.target is None:
            self._curve.clear()
            return
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        metrics = []
        for volume, size, stamp, step in self._curve:
            metrics += [Metric("hypervolume", volume, stamp, step),
                        Metric("front_size", size, stamp, step)]
        MlflowClient(self.target.uri).log_batch(self.target.parent_run_id, metrics=metrics)
        self._curve.clear()


def best_effort(method: Any, *args: Any) -> None:
    """Call an MLflow update that must not stop the search: a tag or curve point MLflow drops
    (after its own retries) is kept and written again with the next update, and the study, not
    MLflow, holds the results."""
    try:
        method(*args)
    except Exception as exc:
        import warnings

        from condsearch.track._trial_runs import TrackingUnavailable

        warnings.warn(f"MLflow update skipped ({type(exc).__name__}: {str(exc)[:300]}); it is "
                      "caught up after the next trial if there is one", TrackingUnavailable, stacklevel=2)
