"""`Objective`: a search space as an Optuna objective for the user's own study, and
`arch_from_params`: an arch from a flat parameter dict of any origin.

The objective runs the same trial function and the same recording as `condsearch search`: the
trial's constraints and attributes, and its knob sweep's derived points as trials of the same
study; `study.optimize` then tells the trial the values the objective returns.
"""

from __future__ import annotations

import json
import math
from typing import Any

from condsearch.orchestrate._record import record_result
from condsearch.orchestrate._rungs import final_rung
from condsearch.orchestrate._trial import TrialSpec, run_trial
from condsearch.space._bounds import TrialLimits


def _space(space: Any) -> Any:
    from condsearch.space import SearchSpace, load_space

    if isinstance(space, SearchSpace):
        return space.trusted()
    return load_space(space, trust_code=True)


class Objective:
    """A picklable callable for `study.optimize` on any study whose directions match the space's
    objectives (`[d for _, d in space.objectives]`).

    Each call samples the space, trains and measures the candidate (`run_trial`), records its
    constraints (visible to `study.best_trials`) and its derived sweep points as trials of the
    same study, and returns its objective values. A failed trial returns NaN values, which
    Optuna records as FAIL; the optimization goes on. With `search.scheduler.mo_asha` in the
    space, MO-ASHA judges each trial at its rungs as a search does (its results replayed from
    the study on the first call) and a trial it stops raises `optuna.TrialPruned`, which
    `optimize` records as PRUNED with the rung results kept. `task` replaces the space's task (a task
    spec dict or an in-memory `condsearch.Task`); `tracking` (a `TrackingTarget`) logs each
    trial as an MLflow child run of its parent run; `sweep=False` skips the knob sweep;
    `keep_model=True` keeps the trained model of the last successful trial in `last_model`.
    """

    def __init__(self, space: Any, task: Any = None, tracking: Any = None, sweep: bool = True,
                 seed: int | None = None, keep_model: bool = False) -> None:
        from condsearch.orchestrate._local import in_process_only

        self.space = _space(space)
        in_process_only(self.space, "run condsearch.search(..., backend='ray')")
        self.task = task if task is not None else self.space.task
        self.tracking = tracking
        self.sweep = self.space.sweep if sweep else {}
        self.seed = int(self.space.seed if seed is None else seed)
        self.keep_model = keep_model
        self.last_model: Any = None
        self.last_result: Any = None
        #: the MO-ASHA of each study this objective served, by study name
        self._schedulers: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # a trained model stays with the process that trained it; a scheduler is rebuilt from
        # the study where the objective is unpickled
        return {**self.__dict__, "last_model": None, "_schedulers": {}}

    def _scheduler(self, study: Any) -> Any:
        """The space's MO-ASHA for `study`, replayed from its trials the first time; None when
        the space sets no scheduler."""
        from condsearch.orchestrate._rungs import make_scheduler, replay

        if self.space.mo_asha is None:
            return None
        scheduler = self._schedulers.get(study.study_name)
        if scheduler is None:
            scheduler = self._schedulers[study.study_name] = make_scheduler(self.space,
                                                                            self.seed)
            replay(scheduler, study.get_trials(deepcopy=False))
        return scheduler

    def directions(self) -> list[str]:
        """The directions a study must optimise in, objective by objective."""
        return [d for _, d in self.space.objectives]

    def __call__(self, trial: Any) -> tuple[float, ...]:
        directions = [d.name.lower() for d in trial.study.directions]
        if directions != self.directions():
            raise ValueError(f"the study optimises {directions}, but the space's objectives "
                             f"{self.space.objectives} need {self.directions()}")
        arch = self.space.sample(trial)
        spec = TrialSpec(number=trial.number, arch=arch, task=self.task, sweep=self.sweep,
                         seed=self.seed + trial.number, tracking=self.tracking,
                         objectives=self.space.objectives, code_paths=self.space.code_paths,
                         limits=TrialLimits.of(self.space))
        keep = (lambda model: setattr(self, "last_model", model)) if self.keep_model else None
        scheduler = self._scheduler(trial.study)
        judge = state = None
        if scheduler is not None:
            from condsearch.orchestrate._rungs import RungJudge, keep_rung
            from condsearch.orchestrate._trial import eval_batch_size
            from condsearch.train._fit import FitState

            def on_rung(trial: Any, epoch: int, decision: Any, run_id: str | None,
                        metrics: dict[str, float]) -> None:
                keep_rung(trial.study, trial, scheduler, self.space.objectives,
                          self.tracking.uri if self.tracking is not None else None, run_id,
                          epoch, metrics)

            state = FitState()
            judge = RungJudge(scheduler, self.space, trial, state, eval_batch_size(arch),
                              on_rung)
        result = run_trial(spec, on_epoch=judge, on_model=keep, fit_state=state,
                           on_run=judge.on_run if judge is not None else None)
        self.last_result = result
        task = self.task if isinstance(self.task, dict) else {"dataset": "<in-memory>"}
        points = record_result(trial.study, trial, arch, task, result, self.space.objectives,
                               self.space.constraints, tell=False,
                               rungs=final_rung(scheduler, trial.number, result, self.space))
        if result.stopped_at is not None:
            import optuna

            raise optuna.TrialPruned(result.stop_reason)
        if not points:
            return tuple(math.nan for _ in self.space.objectives)
        return tuple(points[0].values[name] for name, _ in self.space.objectives)


class _GivenParams:
    """The trial interface `SearchSpace.sample` asks, answered from a flat parameter dict, each
    value checked against what the space would have sampled."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def _value(self, name: str) -> Any:
        if name not in self.params:
            raise ValueError(f"{name}: missing (the space samples it here)")
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        value = self._value(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high or (
                value - low) % step:
            raise ValueError(f"{name}: {value!r} is not an integer in [{low}, {high}]"
                             + (f" in steps of {step}" if step != 1 else ""))
        return value

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float:
        value = self._value(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                low <= value <= high):
            raise ValueError(f"{name}: {value!r} is not a number in [{low}, {high}]")
        return float(value)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        value = self._value(name)
        if value not in choices:
            raise ValueError(f"{name}: {value!r} is not one of {choices}")
        return value


def arch_from_params(space: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The arch that a flat parameter dict (`{"model.dim": 32, "train.lr": 0.01, ...}`, from an
    NNI tuner, an Optuna `FixedTrial`'s params, a spreadsheet) describes in `space`.

    Only the keys the arch reads are needed (a component switched off needs none of its keys);
    a missing or out-of-range value raises ValueError naming the key. List and mapping choices
    may be given as values or as their JSON text.
    """
    from condsearch.space import Choice

    space = _space(space)
    given = dict(params)
    for name, dist in space.distributions().items():
        if isinstance(dist, Choice) and name in given and not isinstance(given[name], str) and (
                any(isinstance(item, (list, dict)) for item in dist.items)):
            given[name] = json.dumps(given[name])
    try:
        return space.sample(_GivenParams(given))
    except ValueError as exc:
        raise ValueError(f"cannot make an arch of {space.name!r} from these parameters: {exc}"
                         ) from None
