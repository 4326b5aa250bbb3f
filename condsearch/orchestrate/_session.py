"""One invocation of a search on either backend: the study, the parent run, the front, the bar.

The backends differ only in where `run_trial` executes; asking the study, recording a result and
keeping the front happen here, in the driver, the same way for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from condsearch._names import ATTR_HYPERVOLUME_REFERENCE, ATTR_WORKDIR_STATE
from condsearch.orchestrate._keeper import FrontKeeper, best_effort, reference_bounds
from condsearch.orchestrate._optuna_private import frozen_trial, rdb_url
from condsearch.orchestrate._points import point_from_trial
from condsearch.orchestrate._progress import SearchProgress, describe_values
from condsearch.orchestrate._record import fail_stale_trials, record_result
from condsearch.orchestrate._trial import TrialResult, TrialSpec
from condsearch.orchestrate._workdir import (
    SearchError,
    WorkdirState,
    read_workdir,
    write_state,
)
from condsearch.space._bounds import TrialLimits
from condsearch.track import (
    ENV_EXPERIMENT_ID,
    ENV_EXPERIMENT_NAME,
    ENV_TRACKING_URI,
    ActiveRun,
    TrackingRequest,
    absolute_uri,
)


@dataclass
class Session:
    """What the driver holds while trials run: it hands out trial specs and records results."""

    space: Any
    study: Any
    keeper: FrontKeeper
    target: Any
    bar: SearchProgress
    seed: int
    state: WorkdirState
    completed: int = 0
    failed: int = 0
    #: whether the study holds the hypervolume reference (asking it costs a query a trial)
    reference_saved: bool = False
    #: the user's `callback(study, frozen_trial)`s, called after each trained trial is recorded
    callbacks: tuple = ()

    def spec(self, trial: Any, arch: dict[str, Any]) -> TrialSpec:
        """The plain-data description of a sampled trial that `run_trial` executes."""
        return TrialSpec(number=trial.number, arch=arch, task=self.space.task,
                         sweep=self.space.sweep, seed=self.seed + trial.number,
                         tracking=self.target, objectives=self.space.objectives,
                         code_paths=self.space.code_paths,
                         limits=TrialLimits.of(self.space))

    def record(self, trial: Any, arch: dict[str, Any], result: TrialResult, seconds: float) -> None:
        """Tell the study the outcome (FAIL without finite objectives), add derived points,
        update the front and its tags, and report the trial on the progress bar."""
        points = record_result(self.study, trial, arch, self.space.task, result,
                               self.space.objectives, self.space.constraints)
        self.keeper.add(points)
        if self.keeper.reference is not None and not self.reference_saved:
            self.study.set_user_attr(ATTR_HYPERVOLUME_REFERENCE, self.keeper.reference)
            self.reference_saved = True
        if points:
            self.completed += 1
            text = describe_values(points[0].values)
            if len(points) > 1:
                text += f" (+{len(points) - 1} derived)"
        else:
            self.failed += 1
            text = f"failed: {result.error}"
        self.bar.trial_done(trial.number, bool(points), seconds, text, self.keeper.front,
                            self.keeper.hypervolume)
        if self.callbacks:
            frozen = frozen_trial(self.study, trial)
            for callback in self.callbacks:
                callback(self.study, frozen)


def open_study(space: Any, storage: str, seed: int, sampler: Any = None):
    """Create or load the search's multi-objective study; a resumed one gets a fresh seed.
    `sampler` (an Optuna sampler object) replaces the one the space names."""
    import optuna

    from condsearch.orchestrate._samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [d for _, d in space.objectives]
    try:
        existing = optuna.load_study(study_name=space.name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None and list(d.name.lower() for d in existing.directions) != directions:
        raise SearchError(
            f"the study {space.name!r} in this workdir optimises "
            f"{[d.name.lower() for d in existing.directions]}, not {directions} as the space "
            "now asks; use another --workdir"
        )
    n_before = len(existing.trials) if existing is not None else 0
    # A resumed search continues with a fresh seed so it does not repeat earlier suggestions.
    if sampler is None:
        sampler = make_sampler(space.sampler, seed + n_before, space)
    return optuna.create_study(study_name=space.name, storage=storage, directions=directions,
                               sampler=sampler, load_if_exists=True)


@dataclass(frozen=True)
class TrackingPlan:
    """Where this invocation logs: store, experiment, the run it nests under, the user's tags,
    and notes telling the user when a recorded choice overrode their environment."""

    uri: str
    experiment_id: str
    experiment_name: str
    nest_under: str | None
    tags: dict[str, str]
    notes: list[str]


def _conflict(workdir: Path, recorded: str, asked: str, option: str) -> SearchError:
    return SearchError(f"{workdir} logs to {recorded} (recorded in condsearch.json), not {asked} "
                       f"as {option} asks; resume without {option}, or use another --workdir")


def _choose_uri(workdir: Path, asked: TrackingRequest, previous: WorkdirState | None,
                env: TrackingRequest, active: ActiveRun | None) -> tuple[str, list[str]]:
    """(URI, notes): a flag, else the workdir's record, else an active run's store, else
    MLFLOW_TRACKING_URI, else DIR/mlflow.db; a flag contradicting the record is refused."""
    from condsearch.orchestrate._workdir import default_tracking_uri

    if asked.uri:
        uri = absolute_uri(asked.uri)
        if previous is not None and absolute_uri(previous.tracking_uri) != uri:
            raise _conflict(workdir, f"MLflow at {previous.tracking_uri}", uri,
                            "--tracking-uri")
        return uri, []
    if previous is not None:
        return previous.tracking_uri, _uri_note(previous.tracking_uri, env, active)
    if active is not None:
        return active.uri, []
    return env.uri or default_tracking_uri(workdir), []


def _uri_note(recorded: str, env: TrackingRequest, active: ActiveRun | None) -> list[str]:
    """A note when the environment asks another store than the one a workdir recorded."""
    other, source = (active.uri, "the active MLflow run") if active else (env.uri,
                                                                          ENV_TRACKING_URI)
    if not other or other == absolute_uri(recorded):
        return []
    return [f"note: {source} uses {other}; this workdir keeps logging to {recorded} "
            "(recorded in condsearch.json)"]


def _check_recorded_experiment(workdir: Path, asked: TrackingRequest, recorded_id: str,
                               recorded_name: str) -> None:
    """Refuse --experiment / --experiment-id naming another experiment than the recorded one."""
    recorded = f"the MLflow experiment {recorded_name!r} (id {recorded_id})"
    if asked.experiment_id is not None and str(asked.experiment_id) != recorded_id:
        raise _conflict(workdir, recorded, f"id {asked.experiment_id}",
                        "--experiment-id")
    if asked.experiment_name is not None and asked.experiment_name != recorded_name:
        raise _conflict(workdir, recorded, repr(asked.experiment_name),
                        "--experiment")


def _named_experiment(uri: str, request: TrackingRequest,
                      artifacts: Path | None) -> tuple[str, str]:
    """(id, name) of the experiment `request` names, as MLflow reads its variables: the name
    (created if absent) wins, and an id that contradicts it is refused."""
    from condsearch.track import TrackingChoiceError, experiment_by_id, experiment_by_name

    if request.experiment_name is None:
        return experiment_by_id(uri, str(request.experiment_id))
    found = experiment_by_name(uri, request.experiment_name, artifacts)
    if request.experiment_id is not None and str(request.experiment_id) != found[0]:
        raise TrackingChoiceError(
            f"{ENV_EXPERIMENT_ID} {request.experiment_id} is not the id of {ENV_EXPERIMENT_NAME} "
            f"{request.experiment_name!r} ({found[0]}); unset one of them")
    return found


def _recorded_experiment(workdir: Path, uri: str, asked: TrackingRequest, previous: WorkdirState,
                         env: TrackingRequest) -> tuple[str, str, list[str]]:
    """(id, name, notes) of a resumed search: the recorded experiment, which a flag may only
    repeat; a note when MLflow's variables name another."""
    from condsearch.track import experiment_name

    recorded_id = previous.experiment_id
    name = previous.experiment_name or experiment_name(uri, recorded_id)
    _check_recorded_experiment(workdir, asked, recorded_id, name)
    if asked.names_experiment() or (env.experiment_id in (None, recorded_id)
                                    and env.experiment_name in (None, name)):
        return recorded_id, name, []
    return recorded_id, name, [f"note: {ENV_EXPERIMENT_NAME}/{ENV_EXPERIMENT_ID} name another "
                               f"experiment; this workdir keeps logging to {name!r} (recorded in "
                               "condsearch.json)"]


def _choose_experiment(space: Any, workdir: Path, uri: str, asked: TrackingRequest,
                       previous: WorkdirState | None, env: TrackingRequest,
                       active: ActiveRun | None) -> tuple[str, str, list[str]]:
    """(id, name, notes): a flag, else the record, else the active run's experiment (same
    store), else MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID, else the space's name."""
    from condsearch.track import experiment_by_id

    if previous is not None:
        return _recorded_experiment(workdir, uri, asked, previous, env)
    artifacts = workdir / "mlartifacts" if uri.startswith("sqlite:") else None
    if asked.names_experiment():
        return (*_named_experiment(uri, asked, artifacts), [])
    if active is not None and active.uri == uri:
        return (*experiment_by_id(uri, active.experiment_id), [])
    chosen = env if env.names_experiment() else TrackingRequest(experiment_name=space.name)
    return (*_named_experiment(uri, chosen, artifacts), [])


def plan_tracking(space: Any, workdir: Path, asked: TrackingRequest,
                  previous: WorkdirState | None) -> TrackingPlan:
    """Where this invocation logs, by the precedence README.md documents: flags, then the
    workdir's record, then an active `mlflow.start_run()` (or MLFLOW_RUN_ID), then MLflow's
    variables, then DIR/mlflow.db and the space's name."""
    from condsearch.track import TrackingChoiceError, active_run, check_tags, from_environment

    env = from_environment()
    try:
        if asked.experiment_name is not None and asked.experiment_id is not None:
            raise TrackingChoiceError("give --experiment or --experiment-id, not both")
        tags = check_tags(asked.tags)
        active = active_run()
        uri, notes = _choose_uri(workdir, asked, previous, env, active)
        experiment_id, name, more = _choose_experiment(space, workdir, uri, asked, previous, env,
                                                       active)
    except TrackingChoiceError as exc:
        raise SearchError(str(exc)) from None
    nest_under = active.run_id if active is not None and active.uri == uri else None
    if active is not None and nest_under is None:
        more.append(f"note: not nested under the active MLflow run {active.run_id}: it is in "
                    f"{active.uri}, this search logs to {uri}")
    return TrackingPlan(uri, experiment_id, name, nest_under, tags, notes + more)


def prepare_workdir(space: Any, workdir: Path, tracking: TrackingRequest | None,
                    storage: str | None, study_name: str | None = None
                    ) -> tuple[WorkdirState, TrackingPlan]:
    """Write (or check) the workdir's state file: study storage, tracking URI, experiment."""
    from condsearch.orchestrate._workdir import default_storage

    workdir.mkdir(parents=True, exist_ok=True)
    try:
        previous: WorkdirState | None = read_workdir(workdir)
    except SearchError:
        previous = None
    study_name = study_name or space.name
    if previous is not None and previous.study_name != study_name:
        raise SearchError(
            f"{workdir} holds the search {previous.study_name!r}, not {study_name!r}; "
            "use another --workdir"
        )
    plan = plan_tracking(space, workdir, tracking or TrackingRequest(), previous)
    study_storage = storage or (previous.storage if previous else default_storage(workdir))
    state = WorkdirState(
        study_name=study_name, storage=study_storage, tracking_uri=plan.uri,
        experiment_id=plan.experiment_id, space_name=space.name,
        objectives=[[n, d] for n, d in space.objectives], experiment_name=plan.experiment_name,
    )
    write_state(workdir, state)
    return state, plan


@contextmanager
def open_session(space: Any, workdir: Path, n_trials: int, seed: int,
                 tracking: TrackingRequest | None, storage: str | None, show: bool,
                 backend: str, study: Any = None, sampler: Any = None,
                 callbacks: tuple = ()) -> Iterator[Session]:
    """Open the study (the user's `study`, else the workdir's, with the user's `sampler` when
    given) and the parent run; on the way out, log the front and close the run as FINISHED,
    KILLED (Ctrl-C) or FAILED."""
    import optuna

    from condsearch.track import ParetoTagger, end_run, start_parent_run

    if study is not None:
        storage = _users_study_storage(space, study, storage)
    state, plan = prepare_workdir(space, workdir, tracking, storage,
                                  study.study_name if study is not None else None)
    if study is None:
        study = open_study(space, state.storage, seed, sampler)
    elif sampler is not None:
        study.sampler = sampler
    study.set_user_attr(ATTR_WORKDIR_STATE, asdict(state))
    stale = fail_stale_trials(study, state.tracking_uri, state.experiment_id)
    target = start_parent_run(state.tracking_uri, state.experiment_id, {
        "space": space.name, "trials": n_trials, "seed": seed, "sampler": space.sampler["name"],
        "objectives": ",".join(n for n, _ in space.objectives), "workdir": str(workdir.resolve()),
        "backend": backend,
    }, space.source, tags=plan.tags, nest_under=plan.nest_under)
    # A resumed search keeps the reference it recorded; a new one bounds it by the space
    # (max_flops, else the costliest candidate's FLOPs), counted once here.
    reference = study.user_attrs.get(ATTR_HYPERVOLUME_REFERENCE)
    bounds, sources = reference_bounds(space) if reference is None else ({}, {})
    keeper = FrontKeeper(space.objectives, space.constraints, reference,
                         ParetoTagger(state.tracking_uri, state.experiment_id), target,
                         bounds=bounds, sources=sources)
    names = [n for n, _ in space.objectives]
    keeper.load([point_from_trial(t, names) for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))])
    status = "FINISHED"
    with SearchProgress(n_trials, enabled=show) as bar:
        for note in plan.notes:
            _tell(bar, note)
        if stale:
            bar.message(f"recorded trials {stale} as failed: their search process stopped")
        try:
            yield Session(space, study, keeper, target, bar, seed, state,
                          reference_saved=reference is not None, callbacks=tuple(callbacks))
        except KeyboardInterrupt:
            status = "KILLED"
            bar.message("interrupted: the running trial is recorded as failed; "
                        "every completed trial is kept")
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            keeper.flush()
            best_effort(_log_front, keeper, target, space)
            best_effort(end_run, target, status)


def _users_study_storage(space: Any, study: Any, storage: str | None) -> str:
    """The database URL of a study the user passes in: its directions must be the space's, and
    it must live in a database so `pareto`, `export` and a resume find it again."""
    directions = [d.name.lower() for d in study.directions]
    if directions != [d for _, d in space.objectives]:
        raise SearchError(f"the study {study.study_name!r} optimises {directions}, but the "
                          f"space's objectives {space.objectives} need "
                          f"{[d for _, d in space.objectives]}")
    url = rdb_url(study)
    if url is None:
        raise SearchError("a study passed to search must live in a database (optuna."
                          "create_study(storage='sqlite:///...')) so pareto and export find it; "
                          "for an in-memory study use condsearch.Objective with study.optimize")
    if storage is not None and storage != url:
        raise SearchError(f"storage={storage!r} differs from the given study's {url!r}; "
                          "give one of them")
    return url


def _tell(bar: SearchProgress, note: str) -> None:
    """Print a note as written: URIs and experiment names are neither markup nor wrapped."""
    if bar.enabled:
        bar.console.print(note, markup=False, highlight=False, soft_wrap=True)


def _log_front(keeper: FrontKeeper, target: Any, space: Any) -> None:
    """Log pareto.json and the front plots to the parent run (also after Ctrl-C)."""
    import tempfile

    from mlflow import MlflowClient

    from condsearch.track import write_front_files

    if not keeper.points:
        return
    with tempfile.TemporaryDirectory() as tmp:
        title = f"{space.name}: {len(keeper.front)} front points of {len(keeper.points)}"
        write_front_files(Path(tmp), keeper.points, space.objectives, title)
        MlflowClient(target.uri).log_artifacts(target.parent_run_id, tmp)
