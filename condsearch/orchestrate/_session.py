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
from condsearch.orchestrate._keeper import FrontKeeper, best_effort
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

    def spec(self, trial: Any, arch: dict[str, Any]) -> TrialSpec:
        """The plain-data description of a sampled trial that `run_trial` executes."""
        return TrialSpec(number=trial.number, arch=arch, task=self.space.task,
                         sweep=self.space.sweep, seed=self.seed + trial.number,
                         tracking=self.target, objectives=self.space.objectives,
                         code_paths=self.space.code_paths)

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


def open_study(space: Any, storage: str, seed: int):
    """Create or load the search's multi-objective study; a resumed one gets a fresh seed."""
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
    sampler = make_sampler(space.sampler, seed + n_before, space)
    return optuna.create_study(study_name=space.name, storage=storage, directions=directions,
                               sampler=sampler, load_if_exists=True)


def prepare_workdir(space: Any, workdir: Path, tracking_uri: str | None,
                    storage: str | None) -> WorkdirState:
    """Write (or check) the workdir's state file: study storage, tracking URI, experiment."""
    from condsearch.orchestrate._workdir import default_storage, default_tracking_uri
    from condsearch.track import open_experiment

    workdir.mkdir(parents=True, exist_ok=True)
    try:
        previous: WorkdirState | None = read_workdir(workdir)
    except SearchError:
        previous = None
    if previous is not None and previous.study_name != space.name:
        raise SearchError(
            f"{workdir} holds the search {previous.study_name!r}, not {space.name!r}; "
            "use another --workdir"
        )
    uri = tracking_uri or (previous.tracking_uri if previous else default_tracking_uri(workdir))
    study_storage = storage or (previous.storage if previous else default_storage(workdir))
    artifacts = workdir / "mlartifacts" if uri.startswith("sqlite:") else None
    state = WorkdirState(
        study_name=space.name, storage=study_storage, tracking_uri=uri,
        experiment_id=open_experiment(uri, space.name, artifacts), space_name=space.name,
        objectives=[[n, d] for n, d in space.objectives],
    )
    write_state(workdir, state)
    return state


@contextmanager
def open_session(space: Any, workdir: Path, n_trials: int, seed: int, tracking_uri: str | None,
                 storage: str | None, show: bool, backend: str) -> Iterator[Session]:
    """Open the study and the parent run; on the way out, log the front and close the run
    as FINISHED, KILLED (Ctrl-C) or FAILED."""
    import optuna

    from condsearch.track import ParetoTagger, end_run, start_parent_run

    state = prepare_workdir(space, workdir, tracking_uri, storage)
    study = open_study(space, state.storage, seed)
    study.set_user_attr(ATTR_WORKDIR_STATE, asdict(state))
    stale = fail_stale_trials(study)
    target = start_parent_run(state.tracking_uri, state.experiment_id, {
        "space": space.name, "trials": n_trials, "seed": seed, "sampler": space.sampler["name"],
        "objectives": ",".join(n for n, _ in space.objectives), "workdir": str(workdir.resolve()),
        "backend": backend,
    }, space.source)
    reference = study.user_attrs.get(ATTR_HYPERVOLUME_REFERENCE)
    keeper = FrontKeeper(space.objectives, space.constraints, reference,
                         ParetoTagger(state.tracking_uri, state.experiment_id), target)
    names = [n for n, _ in space.objectives]
    keeper.load([point_from_trial(t, names) for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))])
    status = "FINISHED"
    with SearchProgress(n_trials, enabled=show) as bar:
        if stale:
            bar.message(f"recorded trials {stale} as failed: their search process stopped")
        try:
            yield Session(space, study, keeper, target, bar, seed, state,
                          reference_saved=reference is not None)
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
