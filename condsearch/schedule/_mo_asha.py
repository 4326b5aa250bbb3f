"""MO-ASHA: asynchronous successive halving that ranks by Pareto fronts instead of one metric.

After Schmucker et al., "Multi-objective multi-fidelity hyperparameter optimization with
application to fairness", and Salinas et al., "A multi-objective perspective on jointly tuning
hardware and hyperparameters" (NAS workshop, ICLR 2021): ASHA's stopping rule, with the
single-metric cutoff replaced by a multi-objective ranking (`_ranking.py`).

**The rule.** A trial reports a result after each epoch. At an epoch that is a rung level of its
bracket (`_rungs.py`) the result is recorded at that rung and the trial is judged among all
results recorded there so far, itself included: with n of them and eta the reduction factor, it
continues when it ranks within the top floor(n / eta), and is stopped otherwise.

- **Too few results** (floor(n / eta) == 0, i.e. n < eta): the trial continues. This is the
  *stopping* variant of ASHA (Ray Tune's ASHAScheduler, Syne Tune's MOASHA): the cutoff is not
  defined yet, and a trial is never held back waiting for company (the *promotion* variant
  would pause it, which a trial loop that trains to the end cannot do). The first result at a
  rung therefore always continues.
- **The final rung** (max_epochs): the result is recorded and the decision is STOP with reason
  "finished": the trial has its whole budget.
- **Not a rung**: an epoch that is not one of the bracket's levels records nothing: CONTINUE.
- **Repeats**: a second report at an epoch already recorded keeps the first values (as ASHA
  does); a trial stopped or finished gets STOP again with its original reason for anything it
  reports later (Ray may deliver a result already in flight).

Decisions are asynchronous, so they depend on the order results arrive in; given that order
they are deterministic: the ranking is independent of the order within a rung (ties fall to the
trial id) and the only draw, a trial's bracket, is a hash of (seed, trial id).

Trial ids are ints (an Optuna trial number) or strs (a Ray Tune trial id); ints sort before
strs, each in their natural order. The scheduler is not thread-safe: one driver calls it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from condsearch.schedule._ranking import Placement, rank
from condsearch.schedule._rungs import (
    bracket_weights,
    check_brackets,
    draw_bracket,
    rung_levels,
)

TrialId = int | str
DIRECTIONS = ("maximize", "minimize")
#: the version of `MOASHA.state()`'s layout
STATE_VERSION = 1
#: the reason of a decision at the final rung
FINISHED = "finished"


class Action(str, Enum):
    """What the trial loop should do with a trial after its latest result."""

    CONTINUE = "continue"
    STOP = "stop"


CONTINUE = Action.CONTINUE
STOP = Action.STOP


@dataclass(frozen=True)
class Decision:
    """A decision about one result and why (`reason` is one line, for logs and the study)."""

    action: Action
    reason: str
    #: the epoch of the result decided on
    epoch: int
    #: the index of its rung in `MOASHA.levels` (None when the epoch was judged at no rung)
    rung: int | None = None
    #: its place at the rung, 1 = best (None when no ranking was needed)
    rank: int | None = None
    #: the results recorded at the rung, its own included (None when it was judged at no rung)
    results: int | None = None

    @property
    def stop(self) -> bool:
        """Whether the trial should stop now."""
        return self.action is Action.STOP


@dataclass
class _Result:
    values: tuple[float, ...]  # in objective order, as reported
    feasible: bool  # as reported, and False when a value is not finite


@dataclass
class _Trial:
    bracket: int
    results: dict[int, _Result] = field(default_factory=dict)
    stopped: Decision | None = None  # the STOP decision that ended it early
    finished: bool = False


def _sort_key(trial_id: TrialId) -> tuple[int, Any]:
    return (0, trial_id) if isinstance(trial_id, int) else (1, trial_id)


def _check_trial_id(trial_id: object) -> TrialId:
    if isinstance(trial_id, bool) or not isinstance(trial_id, (int, str)):
        raise ValueError(f"a trial id must be an int or a str, got {trial_id!r}")
    return trial_id


def _check_epoch(epoch: object) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch must be a whole number >= 1 (epochs count from 1), got {epoch!r}")
    return epoch


def _check_objectives(objectives: object) -> tuple[tuple[str, str], ...]:
    if isinstance(objectives, (str, bytes)) or not isinstance(objectives, Sequence) \
            or not objectives:
        raise ValueError("objectives must be a non-empty list of (name, direction) pairs, "
                         f"e.g. [('accuracy', 'maximize'), ('flops', 'minimize')]; "
                         f"got {objectives!r}")
    pairs = []
    for item in objectives:
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise ValueError(f"each objective must be a (name, direction) pair, got {item!r}")
        name, direction = item
        if not isinstance(name, str) or not name:
            raise ValueError(f"an objective's name must be a non-empty str, got {name!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"objective {name!r}: direction must be 'maximize' or 'minimize', "
                             f"got {direction!r}")
        pairs.append((name, direction))
    names = [n for n, _ in pairs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"objectives repeat {', '.join(map(repr, repeated))}")
    return tuple(pairs)


class MOASHA:
    """Multi-objective asynchronous successive halving (see the module docstring).

    `objectives` are (name, direction) pairs, direction "maximize" or "minimize", in the
    study's order; results carry a value for each name. The rungs are
    `rung_levels(min_epochs, reduction_factor, max_epochs)`; `brackets` > 1 runs that many
    ASHA brackets side by side (Hyperband), bracket b starting at the b-th level, and each trial
    joins one (`bracket_of`); `seed` only changes which.
    """

    def __init__(self, objectives: Sequence[tuple[str, str]], min_epochs: int,
                 reduction_factor: float, max_epochs: int, brackets: int = 1,
                 seed: int = 0) -> None:
        self.objectives = _check_objectives(objectives)
        #: every rung epoch, bracket 0's; bracket b uses levels[b:]
        self.levels: tuple[int, ...] = tuple(rung_levels(min_epochs, reduction_factor,
                                                         max_epochs))
        self.min_epochs, self.max_epochs = min_epochs, max_epochs
        self.reduction_factor = reduction_factor
        self.brackets = check_brackets(brackets, self.levels)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self._eta = float(reduction_factor)
        self._weights = bracket_weights(self.levels, self._eta, self.brackets)
        self._trials: dict[TrialId, _Trial] = {}
        #: (bracket, epoch) -> trial id -> its result there
        self._rungs: dict[tuple[int, int], dict[TrialId, _Result]] = {}

    # ---- brackets and rungs ----------------------------------------------------------------------

    def bracket_levels(self, bracket: int) -> tuple[int, ...]:
        """The rung epochs of `bracket` (0 = all levels; b = levels from the b-th on)."""
        if not 0 <= bracket < self.brackets:
            raise ValueError(f"bracket must be in 0..{self.brackets - 1}, got {bracket!r}")
        return self.levels[bracket:]

    def bracket_of(self, trial_id: TrialId) -> int:
        """The bracket `trial_id` belongs to (drawn from (seed, id) the first time it is seen)."""
        known = self._trials.get(trial_id)
        if known is not None:
            return known.bracket
        return draw_bracket(self.seed, _check_trial_id(trial_id), self._weights)

    def needs_values(self, trial_id: TrialId, epoch: int) -> bool:
        """Whether `on_result(trial_id, epoch, ...)` would read its values: the epoch is a rung
        of the trial's bracket, the trial has no result there yet, and it was neither stopped nor
        finished. A trial loop measures the costly objectives (FLOPs) only then and passes `{}`
        otherwise."""
        trial = self._trials.get(trial_id)
        if trial is not None and (trial.stopped is not None or trial.finished
                                  or epoch in trial.results):
            return False
        return epoch in self.bracket_levels(self.bracket_of(trial_id))

    def _trial(self, trial_id: TrialId) -> _Trial:
        trial = self._trials.get(trial_id)
        if trial is None:
            trial = self._trials[trial_id] = _Trial(self.bracket_of(trial_id))
        return trial

    def _rung_name(self, epoch: int, bracket: int) -> str:
        where = f"epoch {epoch}" + (f", bracket {bracket}" if self.brackets > 1 else "")
        return f"rung {self.levels.index(epoch)} ({where})"

    # ---- results ---------------------------------------------------------------------------------

    def _result(self, trial_id: TrialId, epoch: int, values: Mapping[str, float],
                feasible: bool) -> _Result:
        if not isinstance(values, Mapping):
            raise ValueError(f"values must be a dict of objective name -> number, got {values!r}")
        missing = [n for n, _ in self.objectives if n not in values]
        if missing:
            raise ValueError(
                f"the result of trial {trial_id!r} at epoch {epoch} lacks objective(s) "
                f"{', '.join(map(repr, missing))} (it has {', '.join(map(repr, values)) or 'none'})")
        row = []
        for name, _ in self.objectives:
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"objective {name!r} of trial {trial_id!r} at epoch {epoch} "
                                 f"must be a number, got {value!r}")
            row.append(float(value))
        # A value that is not finite (a NaN accuracy, an unmeasured FLOP count) cannot be
        # compared: such a result ranks with the infeasible ones, below every feasible result.
        return _Result(tuple(row), bool(feasible) and all(math.isfinite(v) for v in row))

    def _minimised(self, result: _Result) -> tuple[float, ...]:
        return tuple(
            (-v if d == "maximize" else v) if math.isfinite(v) else math.inf
            for v, (_, d) in zip(result.values, self.objectives))

    def record(self, trial_id: TrialId, epoch: int, values: Mapping[str, float],
               feasible: bool = True, *, stopped: bool = False) -> bool:
        """Replay a result without deciding (rebuilding the scheduler from a study's trials).

        The result joins its rung as `on_result` would record it; `stopped=True` marks the trial
        as stopped at this rung (a PRUNED trial's last rung). Returns whether a result was
        recorded: False for an epoch that is no rung of the trial's bracket, or a rung the trial
        already has a result at (the first one stays). Order of replay does not matter."""
        trial_id, epoch = _check_trial_id(trial_id), _check_epoch(epoch)
        bracket = self.bracket_of(trial_id)
        if epoch not in self.bracket_levels(bracket):
            return False
        known = self._trials.get(trial_id)
        added = known is None or epoch not in known.results
        result = self._result(trial_id, epoch, values, feasible) if added else None
        trial = self._trial(trial_id)  # created only once the values passed their checks
        if result is not None:
            trial.results[epoch] = result
            self._rungs.setdefault((bracket, epoch), {})[trial_id] = result
        if epoch == self.max_epochs:
            trial.finished = True
        elif stopped and trial.stopped is None:
            trial.stopped = Decision(STOP, f"stopped at {self._rung_name(epoch, trial.bracket)} "
                                     "(replayed)", epoch, self.levels.index(epoch))
        return added

    def on_result(self, trial_id: TrialId, epoch: int, values: Mapping[str, float],
                  feasible: bool = True) -> Decision:
        """Record a trial's result after `epoch` and decide whether it goes on.

        `values` maps each objective name to its value (other keys are ignored; they are read
        only at a rung epoch); `feasible=False` marks a result that breaks a constraint, which
        ranks below every feasible one. See the module docstring for the rule."""
        trial_id, epoch = _check_trial_id(trial_id), _check_epoch(epoch)
        trial = self._trials.get(trial_id)
        if trial is not None and trial.stopped is not None:
            return Decision(STOP, f"already {trial.stopped.reason}", epoch, trial.stopped.rung)
        if trial is not None and trial.finished:
            return Decision(STOP, FINISHED, epoch)
        if epoch > self.max_epochs:
            self._trial(trial_id).finished = True
            return Decision(STOP, f"{FINISHED}: epoch {epoch} is past max_epochs "
                            f"{self.max_epochs}", epoch)
        bracket = self.bracket_of(trial_id)
        if epoch not in self.bracket_levels(bracket):
            return Decision(CONTINUE, f"epoch {epoch} is not a rung level", epoch)
        rung, name = self.levels.index(epoch), self._rung_name(epoch, bracket)
        if trial is not None and epoch in trial.results:
            return Decision(CONTINUE, f"already continued at {name}", epoch, rung)
        self.record(trial_id, epoch, values, feasible)
        trial = self._trials[trial_id]
        results = self._rungs[(bracket, epoch)]
        n = len(results)
        if epoch == self.max_epochs:
            return Decision(STOP, FINISHED, epoch, rung, results=n)
        keep = math.floor(n / self._eta + 1e-9)
        if keep == 0:
            return Decision(CONTINUE, f"continued at {name}: {n} result(s) there, fewer than "
                            f"reduction_factor={self.reduction_factor:g}, so no cutoff yet",
                            epoch, rung, results=n)
        ids, placed = self._placements(bracket, epoch)
        place = next(k for k, p in enumerate(placed, 1) if ids[p.index] == trial_id)
        where = placed[place - 1]
        how = (f"ranked {place} of {n} by non-dominated sorting (front {where.front}"
               f"{'' if where.feasible else ' of the infeasible'}); the cutoff is rank {keep}")
        if place <= keep:
            return Decision(CONTINUE, f"continued at {name}: {how}", epoch, rung, place, n)
        trial.stopped = Decision(STOP, f"stopped at {name}: {how}", epoch, rung, place, n)
        return trial.stopped

    # ---- reports ---------------------------------------------------------------------------------

    def rung_counts(self, bracket: int | None = None) -> dict[int, int]:
        """Rung epoch -> results recorded there (every level, zeros included), over all
        brackets or only `bracket`'s levels."""
        levels = self.levels if bracket is None else self.bracket_levels(bracket)
        return {e: sum(len(r) for (b, level), r in self._rungs.items()
                       if level == e and bracket in (None, b)) for e in levels}

    def stopped_at(self, trial_id: TrialId) -> int | None:
        """The rung epoch at which the scheduler stopped `trial_id` early; None when it was not
        stopped (still running, finished, or unknown)."""
        trial = self._trials.get(trial_id)
        return None if trial is None or trial.stopped is None else trial.stopped.epoch

    def stopped(self, trial_id: TrialId) -> Decision | None:
        """The STOP decision that ended `trial_id` early (its epoch, rung and reason); None when
        it was not stopped."""
        trial = self._trials.get(trial_id)
        return None if trial is None else trial.stopped

    def results_of(self, trial_id: TrialId) -> dict[int, dict[str, Any]]:
        """Rung epoch -> {"values": {objective: value}, "feasible": bool} of `trial_id`'s
        recorded results, as plain data to store with the trial and `record` on a resume."""
        trial = self._trials.get(trial_id)
        names = [n for n, _ in self.objectives]
        return {} if trial is None else {
            e: {"values": dict(zip(names, r.values)), "feasible": r.feasible}
            for e, r in sorted(trial.results.items())}

    def finished(self, trial_id: TrialId) -> bool:
        """Whether `trial_id` reached the final rung (max_epochs)."""
        trial = self._trials.get(trial_id)
        return trial is not None and trial.finished

    def ranked(self, epoch: int, bracket: int = 0) -> list[TrialId]:
        """The trial ids with a result at rung `epoch` of `bracket`, best first, by the ranking
        a decision there would use now."""
        ids, placed = self._placements(bracket, epoch)
        return [ids[p.index] for p in placed]

    def _placements(self, bracket: int, epoch: int) -> tuple[list[TrialId], list[Placement]]:
        """The ids at a rung and their placements, best first (`_ranking.rank`)."""
        results = self._rungs.get((bracket, epoch), {})
        ids = list(results)
        return ids, rank([self._minimised(results[t]) for t in ids],
                         [results[t].feasible for t in ids], [_sort_key(t) for t in ids])

    # ---- state -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The whole scheduler as plain data (lists, dicts, str, int, float, bool, None): its
        settings and, per trial, its bracket, its rung results, and whether it was stopped or
        finished. Trials are listed by id, results by epoch, so equal states are equal dicts.
        Values are kept as reported (a NaN stays NaN: JSON needs `allow_nan`)."""
        names = [n for n, _ in self.objectives]
        trials = []
        for trial_id in sorted(self._trials, key=_sort_key):
            trial = self._trials[trial_id]
            trials.append({
                "id": trial_id, "bracket": trial.bracket,
                "results": [{"epoch": e, "values": dict(zip(names, r.values)),
                             "feasible": r.feasible} for e, r in sorted(trial.results.items())],
                "stopped_at": None if trial.stopped is None else trial.stopped.epoch,
                "stopped_reason": None if trial.stopped is None else trial.stopped.reason,
                "finished": trial.finished,
            })
        return {"version": STATE_VERSION,
                "config": {"objectives": [list(o) for o in self.objectives],
                           "min_epochs": self.min_epochs,
                           "reduction_factor": self.reduction_factor,
                           "max_epochs": self.max_epochs, "brackets": self.brackets,
                           "seed": self.seed},
                "trials": trials}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MOASHA:
        """A scheduler equal to the one whose `state()` this is (ValueError if it is not one)."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, Mapping) else state
            raise ValueError(f"not a MOASHA state of version {STATE_VERSION} (version: {got!r})")
        try:
            config, trials = state["config"], state["trials"]
            scheduler = cls(**{**config, "objectives": [tuple(o) for o in config["objectives"]]})
            for item in trials:
                trial_id = _check_trial_id(item["id"])
                bracket = item["bracket"]
                scheduler.bracket_levels(bracket)  # range check
                trial = scheduler._trials[trial_id] = _Trial(bracket)
                for r in item["results"]:
                    if not scheduler.record(trial_id, r["epoch"], r["values"], r["feasible"]):
                        raise ValueError(f"trial {trial_id!r}: its result at epoch {r['epoch']} "
                                         f"is not at a new rung of bracket {bracket}")
                if item["stopped_at"] is not None:
                    epoch = item["stopped_at"]
                    if epoch not in trial.results:
                        raise ValueError(f"trial {trial_id!r} stopped at epoch {epoch}, where "
                                         "it has no result")
                    trial.stopped = Decision(
                        STOP, item.get("stopped_reason") or f"stopped at "
                        f"{scheduler._rung_name(epoch, bracket)}", epoch,
                        scheduler.levels.index(epoch))
                trial.finished = bool(item["finished"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a MOASHA state: {type(exc).__name__}: {exc}") from None
        return scheduler
