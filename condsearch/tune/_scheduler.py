"""`MOASHAScheduler(space)`: condsearch's multi-objective successive halving (MO-ASHA,
`condsearch.schedule.MOASHA`) as a Ray Tune trial scheduler, the same rule the local backend
applies in its trial loop.

At each rung epoch of a trial's bracket the scheduler reads the trial's report (`accuracy`: the
epoch's full-validation accuracy; `flops`, `params`, ...: measured on the fixed validation subset,
as `condsearch.tune.trainable` reports them), asks MO-ASHA, and answers STOP when MO-ASHA stops
the trial early, CONTINUE otherwise. The final rung (`train.epochs`) is the trial's final report:
its full evaluation is recorded there, and the trial ends by itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from condsearch.orchestrate._rungs import make_scheduler, rung_feasible, rung_values
from condsearch.schedule import MOASHA, Decision, TrialId
from condsearch.tune._keys import EPOCH, RESULT
from condsearch.tune._reports import metric_keys, result_of

#: Ray Tune's modes for the study's directions
_MODES = {"maximize": "max", "minimize": "min"}


def trial_key(trial: Any) -> TrialId:
    """The id MO-ASHA knows a Ray trial by: the Optuna trial number the condsearch Searcher
    suggested (`config["number"]`), so the local and the Ray backend draw the same brackets;
    else Ray's own trial id."""
    number = (getattr(trial, "config", None) or {}).get("number")
    if isinstance(number, int) and not isinstance(number, bool):
        return number
    return str(trial.trial_id)


def _epoch(result: dict[str, Any]) -> int | None:
    """The report's epoch (epochs count from 1), or None when it names none."""
    value = result.get(EPOCH)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if int(value) != value or value < 1:
        return None
    return int(value)


class MOASHAScheduler(FIFOScheduler):
    """A Ray Tune scheduler stopping trials early by MO-ASHA: the space's objectives ranked by
    non-dominated sorting, then crowding distance, infeasible results (a constraint broken, a
    value not finite) last.

    `rule` is the MO-ASHA to drive; by default the space's (`search.scheduler.mo_asha`, a
    ValueError without it), seeded with `seed` (default: the space's seed), which only draws the
    trials' brackets. `on_rung(trial, decision, result)`, if given, is called after each
    decision at a rung (the Ray trial, the `condsearch.schedule.Decision`, the report), the last
    rung's included; the search uses it to keep the rung results on the study and in MLflow.

    Trials are known to the rule by `trial_key`: the Optuna trial number in the config
    `condsearch.tune.Searcher` suggests, else Ray's trial id. Use it with
    `condsearch.tune.trainable(space)`, whose every report carries the objective metrics (any
    trainable reporting `epoch` and the objective metrics will do).

    This is the *stopping* variant of ASHA: a trial is never paused waiting for others to reach
    its rung (it goes on when too few results are there to cut), so no trial is paused and
    resumed from a checkpoint on the scheduler's account; the trainable's checkpoints still
    serve Ray's retries of a trial whose worker died (a retried trial's repeated reports are not
    judged twice). A report of a trial the rule already stopped is answered STOP; the final
    report is never (the trial ends with it, and its result must be delivered).

    `save` / `restore` write and read the rule's state as JSON (`MOASHA.state()`; `restore`
    replaces `rule`); pickling (Ray saves its TuneConfig with the experiment) leaves `on_rung`
    behind.
    """

    def __init__(self, space: Any, *, seed: int | None = None, rule: MOASHA | None = None,
                 on_rung: Callable[[Any, Decision, dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        objectives = [tuple(o) for o in space.objectives]
        if rule is None:
            if space.mo_asha is None:
                raise ValueError(
                    f"the space {space.name!r} sets no search.scheduler.mo_asha: set it (e.g. "
                    "search: {scheduler: {mo_asha: {min_epochs: 1, reduction_factor: 3}}}) or "
                    "pass rule=condsearch.schedule.MOASHA(...)")
            rule = make_scheduler(space, int(space.seed if seed is None else seed))
        elif seed is not None:
            raise ValueError("seed seeds the rule built from the space; a given rule keeps its "
                             "own seed")
        elif list(rule.objectives) != objectives:
            raise ValueError(f"the rule ranks {list(rule.objectives)}, not the space's "
                             f"objectives {objectives}")
        self.space, self.rule, self.on_rung = space, rule, on_rung
        self._objectives = list(space.objectives)
        self._keys = metric_keys(self._objectives)
        # Ray's strict metric check then wants the first objective in every report.
        self._metric = self._keys[0]
        # Every report is judged as it comes: a buffered one could arrive after its rung passed.
        self._supports_buffered_results = False

    # ---- Ray Tune's scheduler interface ----------------------------------------------------------

    def set_search_properties(self, metric: str | list[str] | None, mode: str | list[str] | None,
                              **spec: Any) -> bool:
        """Accept the metrics and modes Ray or the searcher pass when they are the space's
        objectives (a name or a list of names, 'max' / 'min' to match); the scheduler ranks the
        space's objectives whatever is passed, so anything else is refused (False)."""
        if metric is None:
            return True
        metrics = [metric] if isinstance(metric, str) else list(metric)
        modes = [None] * len(metrics) if mode is None else (
            [mode] * len(metrics) if isinstance(mode, str) else list(mode))
        directions = dict(zip(self._keys, (d for _, d in self._objectives)))
        if len(modes) != len(metrics):
            return False
        return all(m in directions and (o is None or _MODES[directions[m]] == o)
                   for m, o in zip(metrics, modes))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Judge the report when it is at a rung of the trial's bracket: STOP when MO-ASHA stops
        the trial early, CONTINUE otherwise (the final rung included)."""
        key = trial_key(trial)
        if self.rule.stopped(key) is not None:
            return TrialScheduler.STOP  # a report already in flight when it was stopped
        epoch = _epoch(result)
        if epoch is None or not self.rule.needs_values(key, epoch):
            return TrialScheduler.CONTINUE
        metrics = self._rung_metrics(result)
        if metrics is None:  # a failed trial's final report: nothing to rank, it ends anyway
            return TrialScheduler.CONTINUE
        decision = self.rule.on_result(key, epoch, rung_values(metrics, self._objectives),
                                       rung_feasible(metrics, self.space.constraints))
        if self.on_rung is not None:
            self.on_rung(trial, decision, result)
        if decision.stop and self.rule.stopped(key) is not None and RESULT not in result:
            return TrialScheduler.STOP  # stopped early (a finished trial is not `stopped`)
        return TrialScheduler.CONTINUE

    def _rung_metrics(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """What a rung ranks: an epoch's report as it is; for the final report, the trial's
        result's metrics (as the local backend records its last rung), None when it has no
        usable values."""
        if RESULT not in result:
            return result
        outcome = result_of(result)
        if outcome is None or outcome.values(self._objectives) is None:
            return None
        return outcome.metrics

    def debug_string(self) -> str:
        """The rungs' result counts and how many trials were stopped early."""
        counts = " ".join(f"e{e}:{n}" for e, n in sorted(self.rule.rung_counts().items()))
        stopped = sum(t["stopped_at"] is not None for t in self.rule.state()["trials"])
        return (f"Using MO-ASHA (reduction_factor {self.rule.reduction_factor:g}, "
                f"{self.rule.brackets} bracket(s)): rungs {counts}; {stopped} trial(s) stopped "
                "early.")

    # ---- state -----------------------------------------------------------------------------------

    def save(self, checkpoint_path: str) -> None:
        """Write the rule's state (`MOASHA.state()`) as JSON (NaN kept)."""
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(self.rule.state(), f, allow_nan=True)

    def restore(self, checkpoint_path: str) -> None:
        """Replace the rule with the one a `save` wrote."""
        with open(checkpoint_path, encoding="utf-8") as f:
            self.rule = MOASHA.from_state(json.load(f))

    def __getstate__(self) -> dict[str, Any]:
        # the hook is the driver's live code (the search's session); the rule is plain data
        return {**self.__dict__, "on_rung": None}
