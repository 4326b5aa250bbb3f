"""One invocation of a search on either backend: the study, the parent run, the front, the bar.

The backends differ only in where `run_trial` executes; asking the study, recording a result and
keeping the front happen here, in the driver, the same way for both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from condsearch._names import ATTR_HYPERVOLUME_REFERENCE, ATTR_WORKDIR_STATE
from condsearch.orchestrate._keeper import (
    FrontKeeper,
    best_effort,
    reference_bounds,
    tracking_quiet,
)
from condsearch.orchestrate._optuna_private import frozen_trial, rdb_url
from condsearch.orchestrate._points import knee_point, point_from_trial
from condsearch.orchestrate._progress import SearchProgress, describe_values
from condsearch.orchestrate._record import (
    abandon_trial,
    fail_stale_trials,
    record_result,
    storage_full,
)
from condsearch.orchestrate._rungs import final_rung, keep_rung, make_scheduler, replay, rung_values
from condsearch.orchestrate._trial import TrialResult, TrialSpec
from condsearch.orchestrate._workdir import (
    SearchError,
    WorkdirState,
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
    #: the user's `callback(study, frozen_trial)`s, called after each trial is recorded (trained,
    #: failed or stopped early)
    callbacks: tuple = ()
    #: the space's multi-fidelity scheduler (MO-ASHA), its past results replayed; None: off
    scheduler: Any = None
    #: trials the scheduler stopped early in this invocation
    pruned: int = 0

    def spec(self, trial: Any, arch: dict[str, Any]) -> TrialSpec:
        """The plain-data description of a sampled trial that `run_trial` executes."""
        return TrialSpec(number=trial.number, arch=arch, task=self.space.task,
                         sweep=self.space.sweep, seed=self.seed + trial.number,
                         tracking=self.target, objectives=self.space.objectives,
                         code_paths=self.space.code_paths,
                         limits=TrialLimits.of(self.space))

    def record(self, trial: Any, arch: dict[str, Any], result: TrialResult, seconds: float) -> None:
        """Tell the study the outcome (FAIL without finite objectives), add derived points,
        update the front and its tags, and report the trial on the progress bar.

        The trial and its derived points are recorded together or not at all. When the disk
        holding the study is full, the trial is recorded as failed if that still fits, its
        MLflow runs are closed as FAILED (none is tagged on the front), and the search stops
        with `StorageFull`, a SearchError whose one line says what to do."""
        rungs = final_rung(self.scheduler, trial.number, result, self.space)
        if self.scheduler is not None:
            self.bar.rungs(self.scheduler.rung_counts())
        try:
            points = record_result(self.study, trial, arch, self.space.task, result,
                                   self.space.objectives, self.space.constraints, rungs=rungs)
        except Exception as exc:
            full = storage_full(exc, self.study, self.state.storage)
            if full is None:
                raise
            abandon_trial(self.study, trial, result, f"not recorded: {full}", self.target)
            raise full from exc
        self.keeper.add(points)
        if self.keeper.reference is not None and not self.reference_saved:
            self.study.set_user_attr(ATTR_HYPERVOLUME_REFERENCE, self.keeper.reference)
            self.reference_saved = True
        if points:
            self.completed += 1
            text = describe_values(points[0].values)
            if len(points) > 1:
                text += f" (+{len(points) - 1} derived)"
        elif result.stopped_at is not None:
            self.pruned += 1
            text = (f"stopped after epoch {result.stopped_at}: "
                    f"{describe_values(rung_values(result.metrics, self.space.objectives))}"
                    f" ({result.stop_reason})")
        else:
            self.failed += 1
            text = f"failed: {result.error}"
        self.bar.trial_done(trial.number, bool(points), seconds, text, self.keeper.front,
                            self.keeper.hypervolume, stopped=result.stopped_at is not None)
        if self.callbacks:
            frozen = frozen_trial(self.study, trial)
            for callback in self.callbacks:
                callback(self.study, frozen)


    def on_rung(self, trial: Any, epoch: int, decision: Any, run_id: str | None,
                metrics: dict[str, float]) -> None:
        """After the scheduler judged a running trial at a rung: keep the result (`keep_rung`)
        and show the rungs' counts."""
        keep_rung(self.study, trial, self.scheduler, self.space.objectives,
                  self.target.uri if self.target is not None else None, run_id, epoch, metrics)
        self.bar.rungs(self.scheduler.rung_counts())


#: how often a study database's first open is tried while other processes create its schema
SCHEMA_ATTEMPTS = 8


def create_study_schema(storage: str) -> None:
    """Create Optuna's tables in the study database at `storage` unless they exist, surviving
    other processes (a second driver, a reader such as `condsearch pareto`) that create them at
    the same moment: SQLite lets two first opens both stamp the schema version, and the loser's
    insert fails though the schema is then complete, so it is tried again."""
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            RDBStorage(storage).engine.dispose()
            return
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as error:
            racing = isinstance(error, sqlalchemy.exc.IntegrityError) or any(
                word in str(error) for word in ("already exists", "locked"))
            if not racing or attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * 2 ** attempt)


def open_study(space: Any, storage: str, seed: int, sampler: Any = None, *,
               workdir: Path | None = None, tracking_uri: str | None = None):
    """Create or load the search's multi-objective study; a resumed one gets a fresh seed.
    `sampler` (an Optuna sampler object) replaces the one the space names.

    With `workdir` and `tracking_uri` (a search's session): when the study is the workdir's own
    file, trials a copied or moved workdir's study holds RUNNING are pointed at the workdir's
    MLflow store (`_adopt_running_trials`), so closing them as stale never touches the
    original's runs."""
    import optuna

    from condsearch.orchestrate._samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [d for _, d in space.objectives]
    create_study_schema(storage)
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
    # The study exists before its sampler is built: the workdir already records it, and a
    # sampler that cannot be built must not leave a record of a study that was never created.
    study = optuna.create_study(study_name=space.name, storage=storage, directions=directions,
                                load_if_exists=True)
    # A resumed search continues with a fresh seed so it does not repeat earlier suggestions.
    study.sampler = sampler if sampler is not None else make_sampler(space.sampler,
                                                                     seed + n_before, space)
    if existing is not None and workdir is not None and tracking_uri is not None:
        _adopt_running_trials(study, storage, workdir, tracking_uri)
    return study


def _adopt_running_trials(study: Any, storage: str, workdir: Path, tracking_uri: str) -> list[int]:
    """Point the RUNNING trials of a copied or moved workdir's own study at its MLflow store.

    A running trial notes where its MLflow runs are (`condsearch.tracking`: an absolute URI);
    in a copy that is the original's store, where closing the trial as stale would mark the
    original's runs KILLED. A trial is adopted when its noted parent run is in this workdir's
    store too (the store was copied with the study); only a study file inside the workdir is
    changed, never a shared storage whose trials other workdirs run. Returns the adopted
    trials' numbers."""
    import optuna

    from condsearch._names import ATTR_TRACKING
    from condsearch.orchestrate._optuna_private import set_trial_system_attr
    from condsearch.orchestrate._workdir import path_inside, sqlite_file

    own = sqlite_file(storage)
    if own is None or path_inside(own[0], workdir.resolve()) is None:
        return []
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    noted = [(t, t.system_attrs.get(ATTR_TRACKING)) for t in running]
    foreign = [(t, w) for t, w in noted if isinstance(w, dict) and w.get("parent_run_id")
               and w.get("uri") != tracking_uri]
    if not foreign:
        return []
    from mlflow import MlflowClient

    client, adopted, known = MlflowClient(tracking_uri), [], {}
    for trial, where in foreign:
        parent = str(where["parent_run_id"])
        if parent not in known:
            try:
                known[parent] = client.get_run(parent) is not None
            except Exception:  # not in this store: the trial is another workdir's
                known[parent] = False
        if known[parent]:
            set_trial_system_attr(study, trial, ATTR_TRACKING, {**where, "uri": tracking_uri})
            adopted.append(trial.number)
    return adopted


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
    from mlflow.exceptions import MlflowException

    from condsearch.track import TrackingChoiceError, active_run, check_tags, from_environment
    from condsearch.track._conventions import check_reachable

    env = from_environment()
    uri = asked.uri or ""
    try:
        if asked.experiment_name is not None and asked.experiment_id is not None:
            raise TrackingChoiceError("give --experiment or --experiment-id, not both")
        tags = check_tags(asked.tags)
        active = active_run()
        uri, notes = _choose_uri(workdir, asked, previous, env, active)
        check_reachable(uri)
        experiment_id, name, more = _choose_experiment(space, workdir, uri, asked, previous, env,
                                                       active)
    except TrackingChoiceError as exc:
        raise SearchError(str(exc)) from None
    except MlflowException as exc:  # a store MLflow refuses (a file store, a wrong server)
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise SearchError(f"MLflow cannot use the tracking store {uri}: {first[:400]}") from None
    nest_under = active.run_id if active is not None and active.uri == uri else None
    if active is not None and nest_under is None:
        more.append(f"note: not nested under the active MLflow run {active.run_id}: it is in "
                    f"{active.uri}, this search logs to {uri}")
    return TrackingPlan(uri, experiment_id, name, nest_under, tags, notes + more)


def _absolute_storage(storage: str) -> str:
    """A study storage URL with a relative SQLite path made absolute (as SQLAlchemy reads it
    from the current directory), so the workdir's record means the same from anywhere."""
    return absolute_uri(storage) if storage.startswith("sqlite:///") else storage


def _check_study_store(workdir: Path, storage: str, study_name: str,
                       previous: WorkdirState | None, new_study: bool, users_study: bool) -> bool:
    """Whether `storage` holds `study_name`, checked before Optuna opens it (which would create
    tables in an empty file): a corrupt, truncated or foreign database is refused; so is a
    recorded study the storage no longer holds, unless `new_study`; and `new_study` while the
    study is still there."""
    import optuna

    from condsearch.orchestrate._workdir import inspect_study_storage, study_gone

    db = inspect_study_storage(storage)
    if db is not None:
        if db.tables is None:  # busy just now: Optuna opens it as it always did
            return True
        names: list[str] = list(db.studies)
    elif previous is not None or new_study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        names = optuna.get_all_study_names(storage)
    else:
        return False
    present = study_name in names
    if new_study and present and not users_study:
        raise SearchError(f"--new-study: {db.path if db else storage} still holds the study "
                          f"{study_name!r}; resume it without --new-study, or use another "
                          "--workdir")
    if previous is not None and not present and not new_study:
        if db is not None:
            raise study_gone(db, study_name, workdir)
        raise SearchError(f"{storage} holds no study {study_name!r}, but "
                          f"{workdir / 'condsearch.json'} records it there; restore it, or "
                          "start a new study in this workdir with search --new-study")
    return present


def _check_tracking_store(workdir: Path, asked: TrackingRequest, previous: WorkdirState | None,
                          new_study: bool) -> bool:
    """Check the MLflow databases a search would open (read-only): a corrupt or foreign one is
    refused; so is the workdir's recorded `mlflow.db` when missing or empty (its runs are gone),
    unless `new_study`. Returns whether tracking starts afresh (new study, store gone)."""
    from condsearch.orchestrate._workdir import (
        default_tracking_uri,
        inspect_tracking_store,
        path_inside,
        tracking_gone,
    )

    if previous is None:
        for uri in {absolute_uri(asked.uri) if asked.uri else None, default_tracking_uri(workdir)}:
            if uri is not None:
                inspect_tracking_store(uri)
        return False
    db = inspect_tracking_store(previous.tracking_uri)
    if db is None or db.tables is None or (db.exists and not db.empty):
        return False
    if not db.exists and path_inside(db.path, workdir.resolve()) is None:
        return False  # a store recorded outside the workdir may live on another machine
    if new_study:
        return True
    raise tracking_gone(db, previous, workdir)


def _retire_front_tags(uri: str, experiment_id: str, workdir: Path) -> int:
    """Before a new study's first trial: the runs of this workdir's earlier studies tagged
    `condsearch.pareto` = true get false, and `condsearch.earlier_study_front` = true, so the
    experiment's front tags show the new study's front only. In the workdir's own store every
    run is this workdir's; in a store outside it, only runs under a search run whose `workdir`
    parameter is this workdir. Returns the runs retagged."""
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    from condsearch.orchestrate._workdir import path_inside, sqlite_file
    from condsearch.track import PARETO_TAG

    def every(query: str) -> list[Any]:
        found, token = [], None
        while True:
            page = client.search_runs([experiment_id], query, max_results=1000,
                                      page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    client = MlflowClient(uri)
    tagged = every(f"tags.`{PARETO_TAG}` = 'true'")
    if not tagged:
        return 0
    store = sqlite_file(uri)
    if store is None or path_inside(store[0], workdir.resolve()) is None:
        mine = {r.info.run_id for r in every("tags.`condsearch.role` = 'search'")
                if r.data.params.get("workdir") == str(workdir.resolve())}
        parents = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in tagged}

        def under_mine(run_id: str | None, depth: int = 0) -> bool:
            if run_id is None or depth > 3:
                return False
            if run_id in mine:
                return True
            if run_id not in parents:
                parents[run_id] = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
            return under_mine(parents[run_id], depth + 1)

        tagged = [r for r in tagged if under_mine(parents[r.info.run_id])]
    for run in tagged:
        client.log_batch(run.info.run_id, tags=[RunTag(PARETO_TAG, "false"),
                                                RunTag("condsearch.earlier_study_front", "true")])
    return len(tagged)


def prepare_workdir(space: Any, workdir: Path, tracking: TrackingRequest | None,
                    storage: str | None, study_name: str | None = None,
                    new_study: bool = False) -> tuple[WorkdirState, TrackingPlan]:
    """Write (or check) the workdir's state file: study storage, tracking URI, experiment.

    Nothing is created or changed before the workdir's record and stores are checked: a corrupt
    `condsearch.json` or database is refused in one line, and so is a recorded study its storage
    no longer holds unless `new_study`, which starts a new one (refused while the study is still
    there) and retires the earlier studies' front tags in MLflow. A moved or copied workdir uses
    its own stores, and its MLflow artifact root follows it (`follow_move`)."""
    from condsearch.orchestrate._workdir import default_storage, follow_move, read_state

    workdir.mkdir(parents=True, exist_ok=True)
    previous = read_state(workdir)
    users_study = study_name is not None
    study_name = study_name or space.name
    if previous is not None and previous.study_name != study_name:
        raise SearchError(
            f"{workdir} holds the search {previous.study_name!r}, not {study_name!r}; "
            "use another --workdir"
        )
    asked = tracking or TrackingRequest()
    study_storage = (_absolute_storage(storage) if storage else
                     previous.storage if previous else default_storage(workdir))
    _check_study_store(workdir, study_storage, study_name, previous, new_study, users_study)
    afresh = _check_tracking_store(workdir, asked, previous, new_study)
    recorded = None if afresh else previous
    plan = plan_tracking(space, workdir, asked, recorded)
    if recorded is not None:
        follow_move(workdir, plan.uri)
    state = WorkdirState(
        study_name=study_name, storage=study_storage, tracking_uri=plan.uri,
        experiment_id=plan.experiment_id, space_name=space.name,
        objectives=[[n, d] for n, d in space.objectives], experiment_name=plan.experiment_name,
    )
    write_state(workdir, state)
    if new_study:
        best_effort(_retire_front_tags, plan.uri, plan.experiment_id, workdir)
    return state, plan


@contextmanager
def open_session(space: Any, workdir: Path, n_trials: int, seed: int,
                 tracking: TrackingRequest | None, storage: str | None, show: bool,
                 backend: str, study: Any = None, sampler: Any = None,
                 callbacks: tuple = (), new_study: bool = False) -> Iterator[Session]:
    """Open the study (the user's `study`, else the workdir's, with the user's `sampler` when
    given) and the parent run; on the way out, log the front and close the run as FINISHED,
    KILLED (Ctrl-C) or FAILED."""
    import optuna

    from condsearch.track import ParetoTagger, end_run, start_parent_run
    from condsearch.track._stale import (
        STALE_REASON_TAG,
        close_orphaned_searches,
        close_running_children,
    )
    from condsearch.track._trial_runs import end_runs

    if study is not None:
        storage = _users_study_storage(space, study, storage)
    elif sampler is None:
        from condsearch.orchestrate._samplers import make_sampler

        # a sampler that cannot be built (NNI not installed) stops before anything is written
        make_sampler(space.sampler, seed, space)
    state, plan = prepare_workdir(space, workdir, tracking, storage,
                                  study.study_name if study is not None else None,
                                  new_study=new_study)
    if study is None:
        study = open_study(space, state.storage, seed, sampler, workdir=workdir,
                           tracking_uri=state.tracking_uri)
    elif sampler is not None:
        study.sampler = sampler
    study.set_user_attr(ATTR_WORKDIR_STATE, asdict(state))
    stale = fail_stale_trials(study, state.tracking_uri, state.experiment_id)
    close_orphaned_searches(state.tracking_uri, state.experiment_id, workdir)
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
    scheduler = make_scheduler(space, seed)
    if scheduler is not None:
        replay(scheduler, study.get_trials(deepcopy=False))
    status = "FINISHED"
    with SearchProgress(n_trials, enabled=show) as bar:
        if scheduler is not None:
            bar.rungs(scheduler.rung_counts())
        for note in plan.notes:
            _tell(bar, note)
        if stale:
            bar.message(f"recorded trials {stale} as failed: their search process stopped")
        full = None
        try:
            yield Session(space, study, keeper, target, bar, seed, state,
                          reference_saved=reference is not None, callbacks=tuple(callbacks),
                          scheduler=scheduler)
        except KeyboardInterrupt:
            status = "KILLED"
            bar.message("interrupted: the running trial is recorded as failed; "
                        "every completed trial is kept")
            raise
        except BaseException as exc:
            status = "FAILED"
            # A full disk anywhere in the session (recording, asking, a heartbeat) stops the
            # search with one line, whatever raised it.
            full = storage_full(exc, study, state.storage) if isinstance(exc, Exception) else None
            if full is None or full is exc:
                raise
            raise full from exc
        finally:
            # On a full disk MLflow may fail too (the same disk): silently, and the front's
            # files wait for the next invocation rather than land truncated in the store.
            with tracking_quiet(full is not None):
                keeper.flush()
                if full is None:
                    best_effort(_log_front, keeper, target, space)
                    if status != "FINISHED":  # a run caught between its start and its end
                        best_effort(close_running_children, target.uri, state.experiment_id,
                                    target.parent_run_id, "its search was interrupted")
                    best_effort(end_run, target, status)
                else:
                    best_effort(end_runs, target.uri, [target.parent_run_id], status,
                                {STALE_REASON_TAG: str(full)})


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
    if storage is not None and _absolute_storage(storage) != _absolute_storage(url):
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
        write_front_files(Path(tmp), keeper.points, space.objectives, title,
                          knee=knee_point(keeper.points, space.objectives))
        MlflowClient(target.uri).log_artifacts(target.parent_run_id, tmp)
