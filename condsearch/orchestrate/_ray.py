"""The Ray backend: Ray Tune runs each trial's `run_trial` on a cluster worker, while the driver's
searcher asks the same Optuna study and records results through the same session as local."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from condsearch._names import ATTR_RAY_TRIAL, OBJECTIVE_METRICS
from condsearch.orchestrate._optuna_private import study_storage
from condsearch.orchestrate._ray_private import (
    asked_trial,
    is_completed,
    mark_completed,
    unfinished_trials,
    use_study,
    without_driver_state,
)
from condsearch.orchestrate._session import Session
from condsearch.orchestrate._trial import DerivedPoint, TrialResult, TrialSpec, run_trial
from condsearch.track._target import TrackingTarget

RESULT_KEY = "condsearch_result"
#: SpaceSearcher's own attributes that hold live driver objects (OptunaSearch's: DRIVER_STATE)
_OWN_DRIVER_STATE = ("_session", "_archs", "_pending_arch")


def spec_to_plain(spec: TrialSpec) -> dict[str, Any]:
    return asdict(spec)


def spec_from_plain(plain: dict[str, Any]) -> TrialSpec:
    data = dict(plain)
    if data.get("tracking") is not None:
        data["tracking"] = TrackingTarget(**data["tracking"])
    data["objectives"] = [tuple(o) for o in data["objectives"]]
    return TrialSpec(**data)


def result_from_plain(plain: dict[str, Any]) -> TrialResult:
    data = dict(plain)
    data["derived"] = [DerivedPoint(**d) for d in data.get("derived", [])]
    return TrialResult(**data)


def _close_abandoned_runs(spec: TrialSpec) -> None:
    """A retried trial's earlier attempt died with its worker: mark its MLflow runs KILLED."""
    if spec.tracking is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient(spec.tracking.uri)
    runs = client.search_runs(
        [spec.tracking.experiment_id],
        f"tags.condsearch.trial = '{spec.number}' and attributes.status = 'RUNNING' "
        f"and tags.mlflow.parentRunId = '{spec.tracking.parent_run_id}'")
    for run in runs:
        client.set_terminated(run.info.run_id, "KILLED")


def train_on_worker(config: dict[str, Any]) -> None:
    """The Ray Tune trainable: the same `run_trial` as the local backend, one report at the end."""
    from ray import tune

    spec = spec_from_plain(config["spec"])
    _close_abandoned_runs(spec)
    result = run_trial(spec)
    report = {metric: float(result.metrics.get(metric, math.nan))
              for metric in OBJECTIVE_METRICS.values()}
    report[RESULT_KEY] = json.dumps(asdict(result))
    tune.report(report)


class SpaceSearcher(OptunaSearch):
    """OptunaSearch over a condsearch space, driving the search's own multi-objective study.

    Trials are sampled by `SearchSpace.sample` (conditional keys included) and recorded by the
    session: constraints set, derived points added, and a trial told FAIL, never COMPLETE,
    when it stopped early, failed or lacks a finite objective. Each Optuna trial keeps its Ray
    trial id; the MLflow run id is kept by the recording. Its state lives in the study, so Ray's
    searcher checkpoints hold nothing.
    """

    def __init__(self, session: Session) -> None:
        objectives = session.space.objectives
        super().__init__(
            space=self._sample,
            metric=[OBJECTIVE_METRICS[name] for name, _ in objectives],
            mode=["max" if d == "maximize" else "min" for _, d in objectives],
            sampler=session.study.sampler, study_name=session.study.study_name,
            storage=study_storage(session.study),
        )
        use_study(self, session.study)
        self._session = session
        self._archs: dict[str, dict[str, Any]] = {}
        self._started: dict[str, float] = {}

    def _sample(self, trial: Any) -> dict[str, Any]:
        arch = self._session.space.sample(trial)
        self._pending_arch = arch
        return {"spec": spec_to_plain(self._session.spec(trial, arch))}

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        asked_trial(self, trial_id).set_user_attr(ATTR_RAY_TRIAL, trial_id)
        self._archs[trial_id] = self._pending_arch
        self._started[trial_id] = time.perf_counter()
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Multi-objective trials report once, at the end; nothing to tell before."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        trial = asked_trial(self, trial_id)
        if trial is None or is_completed(self, trial_id):
            return
        if result and RESULT_KEY in result:
            outcome = result_from_plain(json.loads(result[RESULT_KEY]))
        else:
            reason = ("its worker failed and the retries ran out" if error
                      else "it stopped before it reported a result")
            outcome = TrialResult(number=trial.number, ok=False, error=f"trial {reason}")
        seconds = time.perf_counter() - self._started.pop(trial_id, time.perf_counter())
        self._session.record(trial, self._archs.pop(trial_id), outcome, seconds)
        mark_completed(self, trial_id)

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the searcher with the experiment; the live study and session stay behind.
        return {k: v for k, v in without_driver_state(self.__dict__).items()
                if k not in _OWN_DRIVER_STATE}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study is the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the study is the searcher's state."""


def _connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=True)


def run_on_ray(session: Session, n_trials: int, workdir: Path, address: str | None) -> None:
    """Run `n_trials` trials as one Ray Tune experiment in `workdir/ray`; a trial whose worker
    dies is retried (`search.max_retries`), and Ray's storage keeps the experiment's files."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import optuna
    from ray import tune

    _connect(address)
    execution = session.space.execution
    resources = {"cpu": float(execution["cpus_per_trial"]),
                 "gpu": float(execution["gpus_per_trial"])}
    searcher = SpaceSearcher(session)
    tuner = tune.Tuner(
        tune.with_resources(train_on_worker, resources),
        # Reusing a worker between trials saves starting a process and importing torch each
        # time (seconds per trial); a trial frees its model and data when it ends.
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n_trials,
                                    max_concurrent_trials=int(execution["concurrency"]),
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=session.space.name, storage_path=str((workdir / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=int(execution["max_retries"])),
            verbose=0),
    )
    try:
        tuner.fit()
    finally:
        # Trials Ray never finished (Ctrl-C, a dead driver's leftovers) must not stay RUNNING.
        for trial in unfinished_trials(searcher):
            session.study.tell(trial, state=optuna.trial.TrialState.FAIL)
