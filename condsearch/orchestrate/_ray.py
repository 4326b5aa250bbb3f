"""The Ray backend (`--backend ray`), built on the public `condsearch.tune` pieces: Ray Tune runs
`condsearch.tune.trainable` on cluster workers, while `SpaceSearcher`, the public Searcher on the
search's own study, records results through the same session as the local backend. With
`search.scheduler.mo_asha` the session's MO-ASHA judges the trials as
`condsearch.tune.MOASHAScheduler`: each rung result is kept on the study and in MLflow as the
local backend keeps it, and a trial it stops is PRUNED with its rung results."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from condsearch._names import TAG_STOP_REASON
from condsearch.orchestrate._session import Session
from condsearch.orchestrate._trial import TrialResult
from condsearch.orchestrate._workdir import SearchError
from condsearch.tune._keys import ACCURACY, EPOCH, RUN_ID, TAG_STOPPED_EARLY
from condsearch.tune._reports import metric_keys
from condsearch.tune._runs import end_trial_run
from condsearch.tune._scheduler import MOASHAScheduler
from condsearch.tune._searcher import Searcher
from condsearch.tune._trainable import trainable

#: SpaceSearcher's own attribute holding a live driver object (the session)
_OWN_DRIVER_STATE = ("_session",)
#: TuneConfig fields the search sets itself: a user's tune_config may not
_SEARCH_OWNS = ("search_alg", "num_samples")
#: the reason kept for a trial Ray stopped while MO-ASHA had not (a RunConfig `stop`, ...)
STOPPED_BY_TUNE = "stopped by the Ray Tune scheduler"
#: what a stopped trial keeps of its last report as its metrics (with the objective metrics)
_STOPPED_METRICS = (ACCURACY, "params")


class SpaceSearcher(Searcher):
    """The public Searcher driving the search's study and recording through its session: the
    front, its MLflow tags and the progress bar follow every trial, as on the local backend.
    With the session's MO-ASHA, `on_rung` is the MOASHAScheduler's hook keeping each rung
    result, and a trial it stopped is recorded as the local backend records one."""

    def __init__(self, session: Session) -> None:
        super().__init__(session.space, study=session.study, tracking=session.target,
                         seed=session.seed)
        # The study's own storage URL, so a restored searcher could reopen it.
        self._storage_url = session.state.storage
        self._session = session
        #: the report a trial ended on (Ray's last result), by trial number, while it is told
        self._ending: dict[int, dict[str, Any]] = {}

    def on_rung(self, trial: Any, decision: Any, result: dict[str, Any]) -> None:
        """After MO-ASHA judged a Ray trial at a rung: keep the rung on the study and in MLflow
        (`Session.on_rung`). The last rung is the trial's full evaluation, recorded with its
        result (`Session.record`), as on the local backend."""
        scheduler = self._session.scheduler
        trial_id = trial.trial_id
        if (decision.epoch >= scheduler.max_epochs or trial_id not in self._asked
                or trial_id in self._told):
            return
        self._session.on_rung(self._trial(trial_id), decision.epoch, decision,
                              result.get(RUN_ID) or None, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        number = self.trial_number(trial_id)
        if number is not None and result:
            self._ending[number] = result
        try:
            super().on_trial_complete(trial_id, result, error)
        finally:
            self._ending.pop(number, None)

    def _record(self, trial: Any, arch: dict[str, Any], result: Any, seconds: float) -> None:
        self._session.record(trial, arch, result, seconds)

    def _prune(self, trial: Any, arch: dict[str, Any], last: dict[str, Any],
               seconds: float) -> None:
        session = self._session
        if session.scheduler is None:  # a user's own Tune scheduler stopped it
            super()._prune(trial, arch, last, seconds)
            session.pruned += 1
            session.bar.trial_done(trial.number, False, seconds,
                                   f"stopped early after epoch {last.get(EPOCH, 0)}",
                                   session.keeper.front, session.keeper.hypervolume,
                                   stopped=True)
            return
        # As the local backend: PRUNED with the rung results and what the last rung measured
        # (`Session.record` prints the trial's line), the run ended KILLED with why.
        decision = session.scheduler.stopped(trial.number)
        epoch = decision.epoch if decision is not None else int(last.get(EPOCH, 0))
        reason = decision.reason if decision is not None else STOPPED_BY_TUNE
        run_id = last.get(RUN_ID) or None
        report = self._ending.get(trial.number) or last
        session.record(trial, arch, TrialResult(
            number=trial.number, ok=False, run_id=run_id, stopped_at=epoch, stop_reason=reason,
            metrics=stopped_metrics(report, self.space.objectives)), seconds)
        end_trial_run(self.tracking, run_id, "KILLED",
                      {TAG_STOPPED_EARLY: str(epoch), TAG_STOP_REASON: reason[:5000]})

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the searcher with the experiment; the live session stays behind.
        return {k: v for k, v in super().__getstate__().items() if k not in _OWN_DRIVER_STATE}


def stopped_metrics(report: dict[str, Any], objectives: list[tuple[str, str]]) -> dict[str, float]:
    """What a trial stopped at a rung measured there, from its report: the accuracy, the
    objective metrics and the parameter count (finite values only), as `rung_result` measures a
    local trial."""
    kept = {}
    for key in [*_STOPPED_METRICS, *metric_keys(objectives)]:
        value = report.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            kept[key] = float(value)
    return kept


def is_auth_failure(exc: BaseException) -> bool:
    """Whether a failed `ray.init` looks like token authentication refusing this driver (Ray
    wraps the AuthenticationError's text in a RuntimeError under a ConnectionError)."""
    markers = ("authenticationerror", "invalidauthtoken", "authentication token",
               "unauthenticated", "ray_auth_mode")
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__.lower()
        if "authentication" in name or any(m in str(current).lower() for m in markers):
            return True
        current = current.__cause__ or current.__context__
    return False


def connection_message(address: str | None, exc: BaseException) -> str:
    """One line saying why joining Ray failed and what to do, naming the address given."""
    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
    if is_auth_failure(exc):
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            return (f"{where} refused this machine's Ray token: put the cluster's token in "
                    "~/.ray/auth_token or RAY_AUTH_TOKEN")
        return (f"{where} uses token authentication: set RAY_AUTH_MODE=token (and the "
                "cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN) and retry")
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    detail = f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__
    verb = "connect to" if address else "start"
    return f"could not {verb} {where} ({detail})"


def _check_reachable(address: str) -> None:
    """Fail fast when nothing listens at a host:port address (Ray itself retries for minutes)."""
    import socket

    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SearchError(f"the Ray address {address!r} is not host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SearchError(f"could not connect to the Ray cluster at {address} ({reason}): is "
                          "`ray start --head` running there, and is the address right?") from None


def _connect(address: str | None) -> str | None:
    """Join the cluster at `address` (or RAY_ADDRESS); without one, start a private local Ray
    instance for this search, never attaching to another that happens to run on the machine
    (`ray.init()` alone would join the most recent one). Any failure is a one-line SearchError."""
    import ray

    from condsearch.space._bounds import usable_cpus

    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
    private = {} if address else {"address": "local", "num_cpus": usable_cpus()}
    try:
        ray.init(**{"address": address, **private}, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR", configure_logging=True)
    except Exception as exc:  # ConnectionError, RuntimeError, AuthenticationError, ValueError
        raise SearchError(connection_message(address, exc)) from None
    if address:
        return None
    return (f"started a private local Ray instance at {ray.get_runtime_context().gcs_address} "
            f"({private['num_cpus']} CPUs) for this search")


def cpus_per_trial(execution: dict[str, Any], workers: int = 1) -> float:
    """The CPUs each trial reserves (each of its `workers` data-parallel workers, when more
    than one): `search.cpus_per_trial`, else the cluster's CPUs divided by the concurrency (and
    the workers), at most one node's (a process runs on one node)."""
    import ray

    if execution.get("cpus_per_trial"):
        return float(execution["cpus_per_trial"])
    nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return 1.0
    share = math.floor(sum(nodes) / (max(1, int(execution["concurrency"])) * max(1, workers)))
    return float(max(1, min(max(nodes), share)))


def alive_nodes() -> list[dict[str, float]]:
    """The resources (`CPU`, `GPU`, `memory`, ...) of each live node of the Ray cluster."""
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def worker_slots(nodes: list[dict[str, float]], cpus: float, gpus: float) -> int:
    """How many workers of `cpus` CPUs and `gpus` GPUs the nodes hold at once (each worker
    on one node)."""
    total = 0
    for node in nodes:
        fits = math.floor(node.get("CPU", 0.0) / cpus + 1e-9) if cpus > 0 else 10**9
        if gpus > 0:
            fits = min(fits, math.floor(node.get("GPU", 0.0) / gpus + 1e-9))
        total += max(0, fits)
    return total


def check_cluster(space: Any, nodes: list[dict[str, float]], address: str | None) -> int:
    """How many of `space`'s data-parallel trials (`search.workers_per_trial` workers of
    `search.cpus_per_trial` CPUs, 1 by default, and `gpus_per_trial` GPUs each) the cluster of
    `nodes` can run at once; a one-line SpaceError at the key's `file:line` when not one."""
    from condsearch.space import SpaceError

    workers = space.workers_per_trial
    cpus = float(space.execution.get("cpus_per_trial") or 1.0)
    gpus = float(space.execution.get("gpus_per_trial") or 0.0)
    slots = worker_slots(nodes, cpus, gpus)
    if slots < workers:
        where = f"the Ray cluster at {address}" if address else "the local Ray instance"
        total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
        held = f"{total_cpus:g} CPU{'s' if total_cpus != 1 else ''}"
        if gpus:
            total_gpus = sum(n.get("GPU", 0.0) for n in nodes)
            held += f" and {total_gpus:g} GPU{'s' if total_gpus != 1 else ''}"
        need = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "")
        raise SpaceError([space.problem(
            ("search", "workers_per_trial"),
            f"{workers} workers of {need} each cannot be placed at once: {where} holds "
            f"{held} in {len(nodes)} node{'s' if len(nodes) != 1 else ''}, room for {slots} "
            "worker(s); lower workers_per_trial (or cpus_per_trial)")])
    return slots // workers


def join_ray(space: Any, address: str | None) -> str | None:
    """Join (or start) Ray before anything of the search is written, and for data-parallel
    trials check that Ray Train can run them and the cluster can place a trial's workers
    (SpaceError / SearchError otherwise, the private instance this started shut down again).
    The note `_connect` returns."""
    from condsearch.tune._data_parallel import missing_ray_train

    missing = missing_ray_train()
    if missing is not None:
        raise SearchError(f"search.workers_per_trial {space.workers_per_trial}: {missing}")
    note = _connect(address)
    try:
        check_cluster(space, alive_nodes(), address or os.environ.get("RAY_ADDRESS"))
    except BaseException:
        if note:
            import ray

            ray.shutdown()
        raise
    return note


def _changed(config: Any) -> dict[str, Any]:
    """The fields of a TuneConfig / RunConfig its maker set away from their defaults."""
    if config is None:
        return {}
    blank = type(config)()
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) is not getattr(blank, f.name)
            and getattr(config, f.name) != getattr(blank, f.name)}


def check_tune_config(user: Any, mo_asha: bool, workers: int = 1) -> None:
    """Refuse (one-line SearchError) a user's TuneConfig that sets what the search supplies:
    its searcher, its trial count, its scheduler while `search.scheduler.mo_asha` is on, and
    actor reuse with data-parallel trials (`workers` > 1)."""
    mine = _changed(user)
    owned = sorted(k for k in _SEARCH_OWNS if k in mine)
    if owned:
        raise SearchError(f"tune_config may not set {', '.join(owned)}: the search supplies its "
                          "searcher and takes the number of trials from --trials")
    if mo_asha and "scheduler" in mine:
        raise SearchError("tune_config may not set scheduler while search.scheduler.mo_asha is "
                          "on: the search stops trials early with MO-ASHA; drop one of them")
    if workers > 1 and mine.get("reuse_actors"):
        raise SearchError(f"tune_config may not set reuse_actors with search.workers_per_trial "
                          f"{workers}: a stopped data-parallel trial's workers would train on "
                          "behind a reused driver; drop reuse_actors")


def _tune_config(searcher: Searcher, n_trials: int, execution: dict[str, Any],
                 user: Any, scheduler: Any = None, concurrency: int | None = None) -> Any:
    """The search's TuneConfig (with `scheduler`, the space's MO-ASHA, when given) with a
    user's pieces (scheduler, time budget, ...) laid over. `concurrency` replaces the space's
    (data-parallel trials: what the cluster can place)."""
    from ray import tune

    workers = int(execution.get("workers_per_trial", 1))
    check_tune_config(user, scheduler is not None, workers)
    # Reusing a worker between trials saves starting a process and importing torch each time
    # (seconds per trial); a trial frees its model and data when it ends. Not for a
    # data-parallel trial: its workers are new each time anyway, and a stopped trial's driver
    # must end with it (a reused one would wait on the stopped trial's Ray Train run).
    base = dict(max_concurrent_trials=int(concurrency or execution["concurrency"]),
                reuse_actors=workers == 1)
    if scheduler is not None:
        base["scheduler"] = scheduler
    return tune.TuneConfig(**{**base, **_changed(user), "search_alg": searcher,
                              "num_samples": n_trials})


def _run_config(name: str, workdir: Path, execution: dict[str, Any], user: Any) -> Any:
    """The search's RunConfig (storage in DIR/ray, retries, the last checkpoint kept) with a
    user's pieces (callbacks, stop, storage, ...) laid over."""
    from ray import tune

    base = dict(
        name=name, storage_path=str((workdir / "ray").resolve()),
        failure_config=tune.FailureConfig(max_failures=int(execution["max_retries"])),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=0)
    return tune.RunConfig(**{**base, **_changed(user)})


def run_on_ray(session: Session, n_trials: int, workdir: Path, address: str | None, *,
               tune_config: Any = None, run_config: Any = None,
               joined: str | None = None) -> None:
    """Run `n_trials` trials as one Ray Tune experiment in `workdir/ray`; a trial whose worker
    dies is retried (`search.max_retries`) from its last epoch's checkpoint.

    `tune_config` (a `ray.tune.TuneConfig`: scheduler, time_budget_s, max_concurrent_trials,
    reuse_actors, ...) and `run_config` (a `ray.tune.RunConfig`: callbacks, stop, name,
    storage_path, failure_config, checkpoint_config, ...) override the search's own settings
    field by field (a field left at, or set to, Ray's default keeps the search's value: the
    space's concurrency and max_retries, reuse_actors=True, DIR/ray, the last checkpoint kept);
    the search always supplies search_alg and num_samples, and with `search.scheduler.mo_asha`
    its scheduler (MO-ASHA: a tune_config bringing another is refused). Trials a scheduler
    stops early are PRUNED; whatever Ray leaves unfinished (Ctrl-C) is told FAIL.

    With `search.workers_per_trial` W > 1 each trial is a driver holding no CPU that trains on
    W Ray Train workers (`condsearch.tune._data_parallel`); the concurrency is cut to the
    trials whose workers the cluster can place at once, `reuse_actors` is off, and
    `search.cpus_per_trial` (default: the cluster's CPUs / (concurrency x W)) is each worker's.
    `joined` is `join_ray`'s note when the search joined Ray before opening its session."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from ray import tune

    space = session.space
    execution = space.execution
    workers = space.workers_per_trial
    check_tune_config(tune_config, session.scheduler is not None, workers)  # before joining Ray
    note = joined or _connect(address)
    if note:
        session.bar.message(note)
    searcher = SpaceSearcher(session)
    scheduler = None
    if session.scheduler is not None:
        scheduler = MOASHAScheduler(space, rule=session.scheduler, on_rung=searcher.on_rung)
    concurrency = int(execution["concurrency"])
    if workers > 1:
        fits = check_cluster(space, alive_nodes(), address or os.environ.get("RAY_ADDRESS"))
        if fits < concurrency:
            session.bar.message(f"search.concurrency {concurrency} lowered to {fits}: the Ray "
                                f"cluster places {fits} trial(s) of {workers} workers at once")
            concurrency = fits
        per_worker = cpus_per_trial({**execution, "concurrency": concurrency}, workers)
        # the driver, already wrapped with its resources (no CPU, a little memory)
        function = trainable(space, session.target, seed=session.seed,
                             cpus_per_worker=per_worker)
    else:
        resources = {"cpu": cpus_per_trial(execution),
                     "gpu": float(execution["gpus_per_trial"])}
        function = tune.with_resources(trainable(space, session.target, seed=session.seed),
                                       resources)
    tuner = tune.Tuner(
        function,
        tune_config=_tune_config(searcher, n_trials, execution, tune_config, scheduler,
                                 concurrency),
        run_config=_run_config(space.name, workdir, execution, run_config),
    )
    try:
        tuner.fit()
    finally:
        # Trials Ray never finished (Ctrl-C, a scheduler's leftovers) must not stay RUNNING.
        searcher.close_unfinished(
            reason="the search stopped before the trial finished (interrupted)")
        if note:  # the private instance this search started ends with it
            import ray

            ray.shutdown()
