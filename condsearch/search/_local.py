"""The local backend: an in-process multi-objective Optuna study, one trial after another."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condsearch.search._keeper import REFERENCE_ATTR, FrontKeeper
from condsearch.search._points import Point, mark_front, point_from_trial
from condsearch.search._progress import SearchProgress, describe_values
from condsearch.search._record import fail_stale_trials, record_result
from condsearch.search._workdir import (
    SearchError,
    WorkdirLock,
    WorkdirState,
    default_storage,
    default_tracking_uri,
    read_workdir,
    write_state,
)


@dataclass
class SearchSummary:
    """What one `search` invocation did and the front the study holds after it."""

    workdir: Path
    study_name: str
    completed: int
    failed: int
    front: list[Point] = field(default_factory=list)
    hypervolume: float = 0.0
    parent_run_id: str | None = None
    tracking_uri: str = ""
    seconds: float = 0.0


def _open_study(space: Any, storage: str, seed: int):
    import optuna

    from condsearch.search._samplers import make_sampler

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
    sampler = make_sampler(space.sampler, seed + n_before)
    return optuna.create_study(study_name=space.name, storage=storage, directions=directions,
                               sampler=sampler, load_if_exists=True)


def _prepare_workdir(space: Any, workdir: Path, tracking_uri: str | None) -> WorkdirState:
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
    artifacts = workdir / "mlartifacts" if tracking_uri is None else None
    state = WorkdirState(
        study_name=space.name, storage=default_storage(workdir), tracking_uri=uri,
        experiment_id=open_experiment(uri, space.name, artifacts), space_name=space.name,
        objectives=[[n, d] for n, d in space.objectives],
    )
    write_state(workdir, state)
    return state


def _resolve_space(space: Any, overrides: list[str] | None):
    from condsearch.space import SearchSpace, load_space

    if isinstance(space, SearchSpace):
        if overrides:
            if space.path is None:
                raise SearchError("overrides need a space loaded from a file; pass its path")
            return load_space(space.path, overrides)
        return space
    return load_space(space, overrides)


def search(space: Any, trials: int | None = None, workdir: str | Path | None = None,
           backend: str = "local", tracking_uri: str | None = None, seed: int | None = None,
           overrides: list[str] | None = None, progress: bool = True) -> SearchSummary:
    """Run `trials` more trials of `space` (a SearchSpace or a YAML path) in `workdir`.

    Resumes the study already in `workdir`. Ctrl-C stops after recording the running trial as
    failed and closing the MLflow runs; every completed trial stays in the study.
    """
    if backend != "local":
        raise SearchError(f"backend {backend!r} is not available; use --backend local")
    space = _resolve_space(space, overrides)
    workdir = Path(workdir or f"runs/{space.name}")
    n_trials = int(trials if trials is not None else space.trials)
    seed = int(space.seed if seed is None else seed)
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir):
        return _run(space, workdir, n_trials, seed, tracking_uri, progress)


def _run(space, workdir: Path, n_trials: int, seed: int, tracking_uri: str | None,
         show: bool) -> SearchSummary:
    import optuna

    from condsearch.search._trial import TrialSpec, run_trial
    from condsearch.track import ParetoTagger, end_run, start_parent_run

    started = time.perf_counter()
    state = _prepare_workdir(space, workdir, tracking_uri)
    study = _open_study(space, state.storage, seed)
    stale = fail_stale_trials(study)
    target = start_parent_run(state.tracking_uri, state.experiment_id, {
        "space": space.name, "trials": n_trials, "seed": seed, "sampler": space.sampler["name"],
        "objectives": ",".join(n for n, _ in space.objectives), "workdir": str(workdir.resolve()),
    }, space.source)
    keeper = FrontKeeper(space.objectives, space.constraints,
                         study.user_attrs.get(REFERENCE_ATTR),
                         ParetoTagger(state.tracking_uri, state.experiment_id), target)
    names = [n for n, _ in space.objectives]
    keeper.load([point_from_trial(t, names) for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))])
    completed = failed = 0
    reference_saved = REFERENCE_ATTR in study.user_attrs
    status = "FINISHED"
    with SearchProgress(n_trials, enabled=show) as bar:
        if stale:
            bar.message(f"recorded trials {stale} as failed: their search process stopped")
        try:
            for _ in range(n_trials):
                trial = study.ask()
                t0 = time.perf_counter()
                try:
                    arch = space.sample(trial)
                    spec = TrialSpec(number=trial.number, arch=arch, task=space.task,
                                     sweep=space.sweep, seed=seed + trial.number,
                                     tracking=target, objectives=space.objectives)
                    result = run_trial(spec, on_epoch=lambda e, n, r, k=trial.number:
                                       bar.epoch(k, e, n, r))
                except KeyboardInterrupt:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    raise
                points = record_result(study, trial, arch, space.task, result,
                                       space.objectives, space.constraints)
                keeper.add(points)
                if keeper.reference is not None and not reference_saved:
                    study.set_user_attr(REFERENCE_ATTR, keeper.reference)
                    reference_saved = True
                if points:
                    completed += 1
                    text = describe_values(points[0].values)
                    if len(points) > 1:
                        text += f" (+{len(points) - 1} derived)"
                else:
                    failed += 1
                    text = f"failed: {result.error}"
                bar.trial_done(trial.number, bool(points), time.perf_counter() - t0, text,
                               keeper.front, keeper.hypervolume)
        except KeyboardInterrupt:
            status = "KILLED"
            bar.message("interrupted: the running trial is recorded as failed; "
                        "every completed trial is kept")
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            _finish(keeper, target, space, status)
            end_run(target, status)
    return SearchSummary(workdir=workdir, study_name=space.name, completed=completed,
                         failed=failed, front=mark_front(keeper.points, space.objectives),
                         hypervolume=keeper.hypervolume, parent_run_id=target.parent_run_id,
                         tracking_uri=state.tracking_uri, seconds=time.perf_counter() - started)


def _finish(keeper: FrontKeeper, target, space, status: str) -> None:
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
