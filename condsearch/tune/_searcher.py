"""`Searcher(space)`: a Ray Tune searcher that asks condsearch's multi-objective Optuna study,
samples with `space.sample` and tells the study every trial's outcome, the way the search does.

A trial the trainable finished is recorded as the search records it (values, constraints,
derived knob points as trials of their own); one a scheduler stopped early is told PRUNED with
its last report kept; one that errored is told FAIL with the reason. `close_unfinished()` tells
whatever is left (after `Tuner.fit()` ended early), so no trial stays RUNNING.
"""

from __future__ import annotations

import pickle
import time
import uuid
import weakref
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher as RaySearcher

from condsearch._names import ATTR_ARCH, ATTR_ERROR, ATTR_RAY_TRIAL, ATTR_RUN
from condsearch.orchestrate._optuna_private import trial_id as storage_trial_id
from condsearch.orchestrate._record import record_result, write_trial_attrs
from condsearch.orchestrate._trial import TrialResult
from condsearch.tune._keys import (
    ATTR_LAST_REPORT,
    ATTR_STOPPED_AT,
    EPOCH,
    RESULT,
    RUN_ID,
    TAG_STOPPED_EARLY,
)
from condsearch.tune._reports import metric_keys, report_values, result_of
from condsearch.tune._runs import end_trial_run

#: the studies of this process's searchers, by token: a searcher Ray pickled and unpickled in
#: the same process (its experiment state, `Tuner.restore`) finds its live study here again
_LIVE_STUDIES: weakref.WeakValueDictionary[str, optuna.Study] = weakref.WeakValueDictionary()


def open_searcher_study(space: Any, storage: Any, seed: int) -> optuna.Study:
    """The space's study: in memory when `storage` is None; else created or loaded (same
    directions required, a fresh sampler seed on resume) at a URL or an Optuna storage object."""
    from condsearch.orchestrate._samplers import make_sampler
    from condsearch.orchestrate._session import open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if isinstance(storage, str):
        return open_study(space, storage, seed)
    directions = [d for _, d in space.objectives]
    return optuna.create_study(storage=storage, study_name=space.name, directions=directions,
                               sampler=make_sampler(space.sampler, seed, space),
                               load_if_exists=storage is not None)


class Searcher(RaySearcher):
    """Ray Tune searcher over a condsearch space, driving a multi-objective Optuna study.

    `study`: an Optuna study to drive (its directions must be the space's objectives); else one
    opened at `storage` (a database URL or Optuna storage, created or resumed under the space's
    name); else a new in-memory study. `tracking`: the MLflow parent run the trainable logs to,
    so a stopped trial's run can be ended KILLED. `sweep=False` records no derived knob points.

    Its suggestions are `{"number": the Optuna trial number, "arch": the sampled arch}`, what
    `condsearch.tune.trainable(space)` runs. Its metrics are the space's objective metrics
    (`accuracy`, `flops`, ...), which every report of that trainable carries.

    Checkpoints (`save` / `restore`, which Ray calls for its experiment state) hold the space,
    the tracking target, the study's name and storage URL, and for each Ray trial its Optuna
    trial number, sampled arch, last report and whether it was told; never the study itself,
    which lives in its storage. Restored in the process that made it, the searcher finds its
    study again; elsewhere it reopens the study from `storage=` (an in-memory study cannot be).
    """

    def __init__(self, space: Any, study: optuna.Study | None = None, storage: Any = None,
                 tracking: Any = None, sweep: bool = True, *, seed: int | None = None) -> None:
        objectives = list(space.objectives)
        super().__init__(metric=metric_keys(objectives),
                         mode=["max" if d == "maximize" else "min" for _, d in objectives])
        if study is not None and storage is not None:
            raise ValueError("give the Searcher a study or a storage, not both")
        self.space, self.tracking, self.sweep = space, tracking, bool(sweep)
        self._seed = int(space.seed if seed is None else seed)
        if study is None:
            study = open_searcher_study(space, storage, self._seed)
        self._check_directions(study)
        self._storage_url = storage if isinstance(storage, str) else None
        self._study_name = study.study_name
        self._token = uuid.uuid4().hex
        _LIVE_STUDIES[self._token] = study
        self._study: optuna.Study | None = study
        #: Ray trial id -> (Optuna trial number, storage id); the arch it was given; when
        self._asked: dict[str, tuple[int, int]] = {}
        self._archs: dict[str, dict[str, Any]] = {}
        self._started: dict[str, float] = {}
        #: each running trial's last report (what the study keeps of it), and its final report
        #: once seen (a scheduler may pause a trial on it and stop it later with no result)
        self._last: dict[str, dict[str, Any]] = {}
        self._finals: dict[str, dict[str, Any]] = {}
        self._told: set[str] = set()
        self._trials: dict[str, optuna.Trial] = {}

    # ---- the study -------------------------------------------------------------------------------

    @property
    def study(self) -> optuna.Study:
        """The live study; after unpickling, found again in this process or reopened."""
        if self._study is None:
            self._study = _LIVE_STUDIES.get(self._token) or self._reopen()
            _LIVE_STUDIES[self._token] = self._study
        return self._study

    def _reopen(self) -> optuna.Study:
        if self._storage_url is None:
            raise RuntimeError(
                f"this Searcher's study {self._study_name!r} was in memory in another process; "
                "a tuning run that must resume needs Searcher(space, storage=URL)")
        return open_searcher_study(self.space, self._storage_url, self._seed)

    def _check_directions(self, study: optuna.Study) -> None:
        directions = [d.name.lower() for d in study.directions]
        wanted = [d for _, d in self.space.objectives]
        if directions != wanted:
            raise ValueError(f"the study {study.study_name!r} optimises {directions}, not "
                             f"{wanted} as the space's objectives ask")

    def _trial(self, trial_id: str) -> optuna.Trial:
        """The Optuna trial asked for Ray trial `trial_id` (rebuilt after a restore)."""
        trial = self._trials.get(trial_id)
        if trial is None:
            trial = optuna.trial.Trial(self.study, self._asked[trial_id][1])
            self._trials[trial_id] = trial
        return trial

    def trial_number(self, trial_id: str) -> int | None:
        """The Optuna trial number the searcher gave Ray trial `trial_id`, if any."""
        asked = self._asked.get(trial_id)
        return None if asked is None else asked[0]

    # ---- Ray Tune's searcher interface -----------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Ask the study for a trial and sample the space for it."""
        study = self.study
        trial = study.ask()
        try:
            arch = self.space.sample(trial)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr(ATTR_RAY_TRIAL, trial_id)
        self._asked[trial_id] = (trial.number, storage_trial_id(trial))
        self._trials[trial_id] = trial
        self._archs[trial_id] = arch
        self._started[trial_id] = time.perf_counter()
        return {"number": trial.number, "arch": arch}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Keep the trial's last report (a stopped trial's values are kept from it)."""
        if trial_id in self._asked and trial_id not in self._told:
            self._last[trial_id] = report_values(result, self.space.objectives)
            if RESULT in result:
                self._finals[trial_id] = {RESULT: result[RESULT]}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """Tell the study: the result (finished), PRUNED (stopped early) or FAIL (errored)."""
        if trial_id not in self._asked or trial_id in self._told:
            return
        outcome = result_of(result) or result_of(self._finals.get(trial_id))
        last = report_values(result, self.space.objectives) or self._last.get(trial_id, {})
        if outcome is not None:
            if not self.sweep:
                outcome.derived = []
            self._tell(trial_id, lambda t, a, s: self._record(t, a, outcome, s))
        elif error:
            self._tell(trial_id, lambda t, a, s: self._fail(
                t, a, "trial failed: its worker failed and the retries ran out", last, s))
        elif last:
            self._tell(trial_id, lambda t, a, s: self._prune(t, a, last, s))
        else:
            self._tell(trial_id, lambda t, a, s: self._fail(
                t, a, "trial stopped before its first report", last, s))

    def close_unfinished(self, pruned: bool = False,
                         reason: str = "the tuning run ended before the trial finished"
                         ) -> list[int]:
        """Tell every trial asked but not told: FAIL with `reason` (or PRUNED when `pruned` and
        it reported); call it after `Tuner.fit()` returns or raises. The numbers told."""
        told = []
        for trial_id in [t for t in self._asked if t not in self._told]:
            last = self._last.get(trial_id, {})
            if pruned and last:
                self._tell(trial_id, lambda t, a, s, last=last: self._prune(t, a, last, s))
            else:
                self._tell(trial_id, lambda t, a, s, last=last: self._fail(
                    t, a, reason, last, s, run_status="KILLED"))
            told.append(self._asked[trial_id][0])
        return told

    def _tell(self, trial_id: str, how: Any) -> None:
        trial, arch = self._trial(trial_id), self._archs.get(trial_id, {})
        seconds = time.perf_counter() - self._started.pop(trial_id, time.perf_counter())
        self._told.add(trial_id)
        try:
            how(trial, arch, seconds)
        finally:
            self._archs.pop(trial_id, None)
            self._last.pop(trial_id, None)
            self._finals.pop(trial_id, None)
            self._trials.pop(trial_id, None)

    # ---- recording (a subclass may record through more, as the search's session does) -----------

    def _record(self, trial: optuna.Trial, arch: dict[str, Any], result: TrialResult,
                seconds: float) -> None:
        """Record a trial's result as the search does: values or FAIL, constraints, derived."""
        record_result(self.study, trial, arch, self.space.task, result, self.space.objectives,
                      self.space.constraints)

    def _prune(self, trial: optuna.Trial, arch: dict[str, Any], last: dict[str, Any],
               seconds: float) -> None:
        """Tell PRUNED, keeping the last report; end its MLflow run KILLED, tagged."""
        epoch = int(last.get(EPOCH, 0))
        run_id = last.get(RUN_ID) or None
        attrs = {ATTR_LAST_REPORT: last, ATTR_STOPPED_AT: epoch, ATTR_ARCH: arch}
        if run_id:
            attrs[ATTR_RUN] = run_id
        write_trial_attrs(self.study, trial, attrs)
        self.study.tell(trial, state=TrialState.PRUNED)
        end_trial_run(self.tracking, run_id, "KILLED", {TAG_STOPPED_EARLY: str(epoch)})

    def _fail(self, trial: optuna.Trial, arch: dict[str, Any], reason: str,
              last: dict[str, Any], seconds: float, run_status: str = "FAILED") -> None:
        """Tell FAIL with the reason (and the last report, if any); end its MLflow run with
        `run_status` (FAILED; KILLED for a trial the tuning run left unfinished)."""
        run_id = last.get(RUN_ID) or None
        if last:
            write_trial_attrs(self.study, trial, {ATTR_LAST_REPORT: last})
        self._record(trial, arch, TrialResult(number=trial.number, ok=False, error=reason,
                                              run_id=run_id), seconds)
        end_trial_run(self.tracking, run_id, run_status, {ATTR_ERROR: reason})

    # ---- checkpoints -----------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # The live study and its trial objects stay behind; the rest is plain data.
        return {**self.__dict__, "_study": None, "_trials": {}}

    def save(self, checkpoint_path: str) -> None:
        """Save the searcher's own state (see the class docstring), never the study."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Restore a saved state; a searcher that holds a live study keeps driving it."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        live = self._study
        self.__dict__.update(state)
        if live is not None:
            self._study = live
            _LIVE_STUDIES[self._token] = live
