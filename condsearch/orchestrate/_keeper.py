"""The search's live view of its points: front, hypervolume and the MLflow tags that show them.

Everything is kept in memory and updated incrementally, so recording a trial costs the same at
trial 10 and trial 1,000.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from condsearch._names import CONSTRAINT_METRICS
from condsearch.orchestrate._pareto import dominates, hypervolume
from condsearch.orchestrate._points import Point, _order_key, mark_front


def reference_point(points: list[Point], objectives: list[tuple[str, str]],
                    constraints: dict[str, Any],
                    bounds: dict[str, float] | None = None) -> list[float] | None:
    """The hypervolume reference, a point no trial can pass so every better front adds volume.

    Per objective: a value in `bounds` (the costliest candidate's FLOPs, see `costliest_flops`);
    accuracy 0 (the worst possible; another maximised objective: its smallest value less 1);
    for a cost, its constraint bound (`max_flops`, `max_params`) when there is one, else twice the
    largest value among the first points (an estimate a much costlier later point can pass).
    None while that last case has no points to read yet.
    """
    bounds = bounds or {}
    limits = {metric: constraints.get(name) for name, metric in CONSTRAINT_METRICS.items()}
    ref = []
    for name, direction in objectives:
        if name in bounds:
            ref.append(float(bounds[name]))
        elif direction == "maximize" and name == "accuracy":
            ref.append(0.0)
        elif limits.get(name) and direction == "minimize":
            ref.append(float(limits[name]))
        elif not points:
            return None
        elif direction == "maximize":
            ref.append(min(p.values[name] for p in points) - 1.0)
        else:
            ref.append(2.0 * max(p.values[name] for p in points))
    return ref


def _source(name: str, direction: str, constraints: dict[str, Any]) -> str:
    """Where `reference_point` took an objective's value from, when `bounds` did not give it."""
    for constraint, metric in CONSTRAINT_METRICS.items():
        if metric == name and constraints.get(constraint) and direction == "minimize":
            return f"constraints.{constraint}"
    if direction == "maximize":
        return "worst accuracy" if name == "accuracy" else "the first points' smallest value - 1"
    return "2 x the first trial's value"


#: how many candidates (backbones times unorderable choices times knob settings) the costliest
#: candidate's search builds or counts at most
COSTLIEST_CANDIDATES = 32


def reference_bounds(space: Any) -> tuple[dict[str, float], dict[str, str]]:
    """(objective -> reference value, objective -> where it came from) known before any trial.

    FLOPs: the space's `constraints.max_flops` when set (no feasible trial passes it), else the
    per-sample FLOPs of the costliest candidate (`costliest_flops`); when that cannot be built,
    nothing, and the keeper falls back to twice the first trial's FLOPs. Accuracy: 0.
    """
    names = [n for n, _ in space.objectives]
    bounds: dict[str, float] = {}
    sources: dict[str, str] = {}
    if "accuracy" in names:
        bounds["accuracy"], sources["accuracy"] = 0.0, "worst accuracy"
    if "flops" in names:
        if space.constraints.get("max_flops"):
            bounds["flops"] = float(space.constraints["max_flops"])
            sources["flops"] = "constraints.max_flops"
        else:
            flops = costliest_flops(space)
            if flops is not None:
                bounds["flops"], sources["flops"] = flops, "costliest candidate"
    return bounds, sources


def costliest_flops(space: Any) -> float | None:
    """Per-sample FLOPs of the space's costliest candidate on one real validation sample, or
    None when it cannot be built (the caller then falls back to 2 x the first trial's FLOPs).

    The candidate has every searched number at its highest value and every boolean (every
    component's `enabled`) true; a choice that cannot be ordered (`model.backbone`, text or
    structured values) is tried item by item and the maximum taken (at most
    `COSTLIEST_CANDIDATES` builds). Knobs are counted at the default and at every sweep setting.
    For the built-in backbones and components more of each is never cheaper, so this bounds
    every trial; for a user's backbone it is an estimate.
    """
    try:
        return _costliest_flops(space)
    except Exception:  # a user's backbone or task that does not build here: fall back
        return None


def _order(item: Any) -> float | None:
    """A cost-like rank of a choice item: larger numbers, True, longer/larger lists cost more;
    None for items that cannot be ordered."""
    if isinstance(item, bool):
        return float(item)
    if isinstance(item, (int, float)):
        return float(item)
    if isinstance(item, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in item):
        return float(sum(item))
    if item is None:
        return float("-inf")
    return None


class _Highest:
    """A trial-like object answering each `suggest_*` with its most expensive value; choices
    that cannot be ordered take the index `picks` gives (0 when not given)."""

    def __init__(self, choices: dict[str, Any], picks: dict[str, int]) -> None:
        self.choices = choices
        self.picks = picks

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return low + (high - low) // step * step

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float:
        return high

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        if name in self.picks:
            return choices[self.picks[name]]
        items = self.choices[name].items if name in self.choices else choices
        ranks = [_order(item) for item in items]
        if any(r is None for r in ranks):
            return choices[0]
        return choices[max(range(len(ranks)), key=lambda i: ranks[i])]


def _costliest_flops(space: Any) -> float:
    import itertools

    import torch

    from condsearch.blocks import inference_knobs, set_inference_knobs
    from condsearch.cost import per_sample_flops
    from condsearch.data import load_task
    from condsearch.models import build_model
    from condsearch.space._distributions import Choice

    choices = {n: d for n, d in space.distributions().items() if isinstance(d, Choice)}
    unordered = {n: len(d.items) for n, d in choices.items()
                 if any(_order(item) is None for item in d.items)}
    combos = itertools.islice(itertools.product(*(range(k) for k in unordered.values())),
                              COSTLIEST_CANDIDATES)
    task = load_task(space.task, near=space.folder)
    x = task.val[0][:1]
    best = None
    budget = COSTLIEST_CANDIDATES
    with torch.random.fork_rng(devices=[]):
        # random weights decide an adaptive model's routes: seeded, every process of a search
        # (and every resume) gets the same reference point
        torch.manual_seed(0)
        for combo in combos:
            arch = space.sample(_Highest(choices, dict(zip(unordered, combo))))
            model = build_model(arch, task).eval()
            knobs = inference_knobs(model)
            sweep = {k: v for k, v in space.sweep.items() if k in knobs}
            settings = [{}] + [dict(zip(sweep, values))
                               for values in itertools.product(*sweep.values())]
            for setting in settings[:max(1, budget)]:
                set_inference_knobs(model, {**knobs, **setting})
                _, flops = per_sample_flops(model, x)
                value = float(flops.max())
                best = value if best is None else max(best, value)
            budget -= len(settings)
            if budget <= 0:
                break
    if best is None or not best > 0:
        raise ValueError("the costliest candidate counted no FLOPs")
    return best


#: the hypervolume curve reaches MLflow at least this often (and when the search ends)
CURVE_FLUSH_S = 10.0


class FrontKeeper:
    """Holds every completed point; after each trial updates the front, tags and hypervolume.

    A trial costs O(front size), not O(points): a new point enters the front unless a front
    point dominates it and pushes out the front points it dominates; only runs whose flag
    changes get a tag write, and the hypervolume is recomputed only when the front changed.
    """

    def __init__(self, objectives: list[tuple[str, str]], constraints: dict[str, Any],
                 reference: list[float] | None, tagger: Any = None, target: Any = None,
                 bounds: dict[str, float] | None = None,
                 sources: dict[str, str] | None = None) -> None:
        self.objectives = objectives
        self.constraints = constraints
        #: the hypervolume reference; given (a resumed search's recorded one), else computed
        #: from `bounds` (`reference_bounds`) and, for what they leave open, the first points
        self.reference = reference
        self.bounds = dict(bounds or {})
        #: objective -> where its reference value came from (tagged on the parent run)
        self.sources = dict(sources or {}) if reference is None else {
            n: "recorded by an earlier invocation" for n, _ in objectives}
        self._reference_logged = False
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
        if self.reference is None:
            self.reference = reference_point(self.points, self.objectives, self.constraints,
                                             self.bounds)
            if self.reference is not None:
                for name, direction in self.objectives:
                    self.sources.setdefault(name, _source(name, direction, self.constraints))
        self.hypervolume = hypervolume(
            [self._vector(p) for p in self.front], self._directions, self.reference
        ) if self.front and self.reference is not None else 0.0

    def _reference_tags(self) -> list[Any]:
        """The reference (`hypervolume.reference.<objective>`) and where each value came from
        (`....source`) as tags of the parent run, written once with the curve it bounds."""
        from mlflow.entities import RunTag

        if self._reference_logged or self.reference is None:
            return []
        tags = []
        for (name, _), value in zip(self.objectives, self.reference):
            tags += [RunTag(f"hypervolume.reference.{name}", repr(float(value))),
                     RunTag(f"hypervolume.reference.{name}.source", self.sources.get(name, ""))]
        return tags

    def flush(self) -> None:
        """Log the hypervolume and front size of every trial since the last flush to the parent
        run (one `log_batch`, the first with the reference's tags); kept for the next flush if
        MLflow fails."""
        self._curve_flushed = time.monotonic()
        if self._curve or (not self._reference_logged and self.reference is not None):
            best_effort(self._log_hypervolume)

    def _log_hypervolume(self) -> None:
        if self.target is None:
            self._curve.clear()
            self._reference_logged = True
            return
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        metrics = []
        for volume, size, stamp, step in self._curve:
            metrics += [Metric("hypervolume", volume, stamp, step),
                        Metric("front_size", size, stamp, step)]
        MlflowClient(self.target.uri).log_batch(self.target.parent_run_id, metrics=metrics,
                                                tags=self._reference_tags())
        self._reference_logged = True
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


@contextmanager
def tracking_quiet(quiet: bool = True) -> Iterator[None]:
    """While in it (when `quiet`), MLflow failures `best_effort` absorbs warn nothing: a search
    stopping on a full disk says so in one line, and MLflow on the same disk failing too is no
    news."""
    if not quiet:
        yield
        return
    import warnings

    from condsearch.track._trial_runs import TrackingUnavailable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackingUnavailable)
        yield
