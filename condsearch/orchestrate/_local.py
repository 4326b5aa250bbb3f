"""`search()`: run trials of a space on the local backend (one after another, in process) or on
Ray; both record through the same session."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condsearch.orchestrate._points import Point, mark_front
from condsearch.orchestrate._session import Session, open_session
from condsearch.orchestrate._workdir import SearchError, WorkdirLock
from condsearch.space._schema import MAX_SEED
from condsearch.track import TrackingRequest

BACKENDS = ("local", "ray")


@dataclass
class SearchSummary:
    """What one `search` invocation did and the front the study holds after it."""

    workdir: Path
    study_name: str
    completed: int
    failed: int
    #: trials a multi-fidelity scheduler stopped early (PRUNED in the study)
    pruned: int = 0
    front: list[Point] = field(default_factory=list)
    hypervolume: float = 0.0
    #: the hypervolume's reference point, objective by objective (empty before any point)
    reference: dict[str, float] = field(default_factory=dict)
    parent_run_id: str | None = None
    tracking_uri: str = ""
    seconds: float = 0.0


def _resolve_space(space: Any, overrides: list[str] | None):
    from condsearch.space import SearchSpace, load_space

    # A search runs the space's code (a backbone named 'module:function'), so it is trusted.
    if isinstance(space, SearchSpace):
        if overrides:
            if space.path is None:
                raise SearchError("overrides need a space loaded from a file; pass its path")
            return load_space(space.path, overrides, trust_code=True)
        return space.trusted()
    return load_space(space, overrides, trust_code=True)


def in_process_only(space: Any, instead: str) -> None:
    """Refuse (SpaceError, one line at the key's file:line) a space whose trials train on
    several data-parallel workers (`search.workers_per_trial` > 1) where a trial runs in this
    process: the local backend, `condsearch.Objective`. Before anything is written."""
    from condsearch.space import SpaceError

    workers = space.workers_per_trial
    if workers > 1:
        raise SpaceError([space.problem(
            ("search", "workers_per_trial"),
            f"{workers} workers per trial need the ray backend (here a trial trains in this "
            f"process); {instead}, or set it to 1")])


def search(space: Any, trials: int | None = None, workdir: str | Path | None = None,
           backend: str = "local", tracking_uri: str | None = None, seed: int | None = None,
           overrides: list[str] | None = None, progress: bool = True,
           storage: str | None = None, address: str | None = None,
           experiment: str | None = None, experiment_id: str | None = None,
           tags: dict[str, str] | None = None, study: Any = None, sampler: Any = None,
           callbacks: list[Any] | None = None, tune_config: Any = None,
           run_config: Any = None, new_study: bool = False) -> SearchSummary:
    """Run `trials` more trials of `space` (a SearchSpace or a YAML path) in `workdir`.

    Resumes the study already in `workdir` (or at `storage`, an Optuna database URL); when the
    study the workdir recorded is gone from its storage (a deleted or emptied `study.db`), a
    new one starts only with `new_study=True` (refused while the study is still there). Ctrl-C
    stops after recording the running trials as failed and closing the MLflow runs; every
    completed trial stays in the study. `backend="ray"` runs the trials on a Ray cluster
    (`address`, or RAY_ADDRESS, or a local Ray instance).

    MLflow: `tracking_uri`, `experiment` (a name, default the space's) or `experiment_id` win,
    but may not contradict what the workdir recorded; the record beats an active
    `mlflow.start_run()` (the search's parent run nests under it), which beats
    MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID. `tags` go on the
    parent run and every trial and derived run.

    Optuna: `study` (a database-backed `optuna.Study` whose directions match the space's
    objectives) is searched instead of the workdir's; `sampler` (an Optuna sampler object)
    replaces the one the space names; each `callbacks` entry is called as
    `callback(study, frozen_trial)` after every trained trial is recorded, as
    `study.optimize` calls its callbacks.

    Ray (`backend="ray"`): `tune_config` (a `ray.tune.TuneConfig`: scheduler,
    max_concurrent_trials, time_budget_s, ...) and `run_config` (a `ray.tune.RunConfig`:
    callbacks, stop, checkpoint and failure settings, ...) pass the user's pieces to the Tuner
    built from `condsearch.tune.trainable` and `condsearch.tune.Searcher`; a field they leave at
    Ray's default keeps the search's value, and `search_alg` / `num_samples` are the search's.
    """
    if backend not in BACKENDS:
        raise SearchError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend != "ray" and (tune_config is not None or run_config is not None):
        raise SearchError("tune_config and run_config configure the ray backend; pass "
                          "backend='ray'")
    space = _resolve_space(space, overrides)
    workdir = Path(workdir or f"runs/{space.name}")
    n_trials = int(trials if trials is not None else space.trials)
    seed = int(space.seed if seed is None else seed)
    if n_trials < 1:
        raise SearchError(f"trials must be >= 1, got {n_trials}")
    if not 0 <= seed <= MAX_SEED:
        raise SearchError(f"seed must be between 0 and {MAX_SEED} (2**31-1, room for the seeds "
                          f"of later trials and resumes), got {seed}")
    if backend != "ray":
        in_process_only(space, "pass --backend ray (backend='ray')")
    if backend == "ray":
        try:
            from condsearch.orchestrate._ray import check_tune_config, run_on_ray
        except ImportError as exc:
            raise SearchError(f"the ray backend needs Ray Tune ({exc}); install it with "
                              "pip install 'condsearch[ray]'") from None
        # refused before anything is written: no study, no parent run
        check_tune_config(tune_config, space.mo_asha is not None, space.workers_per_trial)
    joined = None
    if backend == "ray" and space.workers_per_trial > 1:
        from condsearch.orchestrate._ray import join_ray

        # whether the cluster can place a trial's workers, before anything is written
        joined = join_ray(space, address)
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = TrackingRequest(uri=tracking_uri, experiment_name=experiment,
                               experiment_id=None if experiment_id is None else str(experiment_id),
                               tags=dict(tags or {}))
    try:
        with WorkdirLock(workdir), open_session(space, workdir, n_trials, seed, tracking,
                                                storage, progress, backend, study=study,
                                                sampler=sampler,
                                                callbacks=tuple(callbacks or ()),
                                                new_study=new_study) as session:
            if backend == "ray":
                run_on_ray(session, n_trials, workdir, address, tune_config=tune_config,
                           run_config=run_config, joined=joined)
                joined = None  # run_on_ray shut the private instance down
            else:
                _run_locally(session, n_trials)
    except Exception as exc:
        # a full disk before the session opened (the workdir's record, the study's tables,
        # the parent run) is the same one line as one during the search
        from condsearch.orchestrate._record import storage_full
        from condsearch.orchestrate._workdir import default_storage

        full = storage_full(exc, None, storage or default_storage(workdir))
        if full is None or full is exc:
            raise
        raise full from exc
    finally:
        if joined:  # the private Ray instance join_ray started, when run_on_ray never ran
            import ray

            ray.shutdown()
    return SearchSummary(workdir=workdir, study_name=session.study.study_name, completed=session.completed,
                         failed=session.failed, pruned=session.pruned,
                         front=mark_front(session.keeper.points, space.objectives),
                         hypervolume=session.keeper.hypervolume,
                         reference=dict(zip([n for n, _ in space.objectives],
                                            session.keeper.reference or [])),
                         parent_run_id=session.target.parent_run_id,
                         tracking_uri=session.state.tracking_uri,
                         seconds=time.perf_counter() - started)


class _Interrupts:
    """SIGINT raises KeyboardInterrupt as usual, and is remembered: one that lands where Python
    cannot raise it (a finalizer or a garbage-collection callback, printed as "Exception ignored
    in ...") still stops the search at the next `check`. `deferred()` holds it back for a block
    that must not be cut (asking a trial: the trial it creates would stay RUNNING with no handle
    to fail it). Only in the main thread; elsewhere Python delivers no signal."""

    def __init__(self) -> None:
        self.seen = False
        self._holding = False
        self._previous: Any = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            sys.unraisablehook = self._hook

    def _unraisable(self, unraisable: Any) -> None:
        # the Ctrl-C a finalizer swallowed is remembered (`seen`): no second report of it
        if not (self.seen and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            self._hook(unraisable)

    def _handle(self, signum: int, frame: Any) -> None:
        self.seen = True
        if not self._holding:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt when a SIGINT arrived (held back, or lost on the way)."""
        if self.seen:
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False


def _run_locally(session: Session, n_trials: int) -> None:
    with _Interrupts() as interrupts:
        for _ in range(n_trials):
            interrupts.check()
            with interrupts.deferred():
                trial = session.study.ask()
            _run_one(session, trial, interrupts)


def _run_one(session: Session, trial: Any, interrupts: _Interrupts) -> None:
    """Run and record one asked trial; wherever Ctrl-C lands, it does not stay RUNNING."""
    import optuna

    from condsearch.orchestrate._record import TrialHeartbeat
    from condsearch.orchestrate._rungs import RungJudge
    from condsearch.orchestrate._trial import eval_batch_size, run_trial
    from condsearch.train._fit import FitState

    judge: RungJudge | None = None

    def on_epoch(epoch: int, epochs: int, record: dict[str, Any]) -> None:
        interrupts.check()
        session.bar.epoch(trial.number, epoch, epochs, record)
        if judge is not None:
            judge(epoch, epochs, record)

    t0 = time.perf_counter()
    try:
        interrupts.check()
        # The heartbeat tells other search processes on this storage the trial is alive.
        with TrialHeartbeat(session.study, trial, session.target):
            arch = session.space.sample(trial)
            spec = session.spec(trial, arch)
            state = FitState()
            if session.scheduler is not None:
                judge = RungJudge(session.scheduler, session.space, trial, state,
                                  eval_batch_size(arch), session.on_rung)
            result = run_trial(spec, on_epoch=on_epoch, fit_state=state,
                               on_run=judge.on_run if judge is not None else None)
            try:
                session.record(trial, arch, result, time.perf_counter() - t0)
            except optuna.exceptions.UpdateFinishedTrialError:
                # Another process took its heartbeat for stale (a database busy past the
                # grace period) and recorded it as failed: keep searching.
                session.failed += 1
                session.bar.message(f"trial {trial.number}: another search process "
                                    "recorded it as failed (its heartbeat looked stale); "
                                    "result dropped")
    except KeyboardInterrupt:
        with interrupts.deferred():  # a second Ctrl-C must not cut the recording short
            try:  # a trial recorded just before the interrupt stays as recorded
                session.study.tell(trial, state=optuna.trial.TrialState.FAIL,
                                   skip_if_finished=True)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another process recorded it in between
        raise
