"""Telling the study what a trial measured: its values, constraints and derived points.

Both backends record through here, so the study looks the same however trials ran.
"""

from __future__ import annotations

import errno
import math
import os
import re
import threading
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from condsearch._names import (
    ATTR_ARCH,
    ATTR_DERIVED_FROM,
    ATTR_ERROR,
    ATTR_KNOBS,
    ATTR_METRICS,
    ATTR_RUN,
    ATTR_RUNGS,
    ATTR_STOP_REASON,
    ATTR_STOPPED_AT,
    ATTR_TASK,
    ATTR_TRACKING,
    ATTR_WEIGHTS_RUN,
    CONSTRAINT_METRICS,
    OBJECTIVE_METRICS,
)
from condsearch.orchestrate._optuna_private import (
    constraint_system_attrs,
    distribution_contains,
    heartbeat_expired_trial_ids,
    heartbeat_trial_ids,
    record_heartbeat,
    study_storage,
    trial_id,
    write_running_trial_attrs,
    write_trial_group,
)
from condsearch.orchestrate._points import Point
from condsearch.orchestrate._trial import TrialResult
from condsearch.orchestrate._workdir import SearchError, masked_url
from condsearch.space import knob_param


def constraint_values(metrics: dict[str, float], constraints: dict[str, Any]) -> dict[str, float]:
    """Optuna constraint values (feasible when ≤ 0), relative to each bound."""
    values = {}
    for name, metric in CONSTRAINT_METRICS.items():
        bound = constraints.get(name)
        if bound:
            values[name] = (float(metrics[metric]) - float(bound)) / float(bound)
    return values


def measured_constraint_values(metrics: dict[str, float], constraints: dict[str, Any]
                               ) -> dict[str, float]:
    """`constraint_values` of the constraints whose metric `metrics` holds as a finite number
    (a rung's measurement may lack one; the trial's final evaluation checks it)."""
    measured = {k: float(v) for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return constraint_values(measured, {k: v for k, v in constraints.items()
                                        if CONSTRAINT_METRICS[k] in measured})


#: environment variables overriding the heartbeat interval and the grace period (seconds)
ENV_HEARTBEAT_S = "CONDSEARCH_HEARTBEAT_S"
ENV_GRACE_S = "CONDSEARCH_GRACE_S"
#: a running trial records a heartbeat this often (seconds) ...
DEFAULT_HEARTBEAT_S = 10.0
#: ... and is stale once its last heartbeat (or, with none, its start) is older than this
DEFAULT_GRACE_S = 60.0


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={text!r}: expected a positive number of seconds")
    return value


def heartbeat_interval() -> float:
    """Seconds between a running trial's heartbeats: $CONDSEARCH_HEARTBEAT_S, else 10."""
    return _seconds(ENV_HEARTBEAT_S, DEFAULT_HEARTBEAT_S)


def grace_period() -> float:
    """Seconds without a heartbeat after which a RUNNING trial is stale: $CONDSEARCH_GRACE_S,
    else 60."""
    return _seconds(ENV_GRACE_S, DEFAULT_GRACE_S)


class TrialHeartbeat:
    """While a trial runs in this process, record its heartbeat every `interval` seconds from a
    daemon thread, so another search process on the same storage sees it is alive (Optuna's own
    heartbeat thread runs only inside `study.optimize`; condsearch asks and tells). Entering
    also notes where the trial's MLflow runs are, for the process that may one day close them."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, tracking: Any = None,
                 interval: float | None = None) -> None:
        self.study, self.trial, self.tracking = study, trial, tracking
        self.interval = interval or heartbeat_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def _beat(self) -> bool:
        try:
            return record_heartbeat(self.study, trial_id(self.trial))
        except Exception as exc:  # a busy or unreachable database: try again next interval
            if not self._warned:
                self._warned = True
                warnings.warn(f"could not record trial {self.trial.number}'s heartbeat "
                              f"({type(exc).__name__}: {str(exc)[:200]}); retrying",
                              RuntimeWarning, stacklevel=2)
            return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def __enter__(self) -> TrialHeartbeat:
        if self.tracking is not None:
            where = {"uri": self.tracking.uri, "experiment_id": str(self.tracking.experiment_id),
                     "parent_run_id": self.tracking.parent_run_id}
            write_running_trial_attrs(self.study, self.trial, {}, {ATTR_TRACKING: where})
        if self._beat():  # the first one now; none at all where the storage keeps none
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"condsearch-heartbeat-{self.trial.number}")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _close_runs(frozen: Any, reason: str, tracking_uri: str | None,
                experiment_id: str | None) -> None:
    """Best effort: close the stale trial's MLflow runs as KILLED, tagged with the reason."""
    from condsearch.track._stale import close_stale_trial_runs

    where = frozen.system_attrs.get(ATTR_TRACKING) or (
        {"uri": tracking_uri, "experiment_id": str(experiment_id)}
        if tracking_uri and experiment_id is not None else None)
    if not where:
        return
    try:
        close_stale_trial_runs(where["uri"], where["experiment_id"], frozen.number, reason,
                               run_id=frozen.user_attrs.get(ATTR_RUN),
                               parent_run_id=where.get("parent_run_id"))
    except Exception as exc:  # noqa: BLE001 - tracking is best effort; the study is the record
        warnings.warn(f"could not close stale trial {frozen.number}'s MLflow run at "
                      f"{where['uri']} ({type(exc).__name__}: {str(exc)[:200]})",
                      RuntimeWarning, stacklevel=3)


def fail_stale_trials(study: optuna.Study, tracking_uri: str | None = None,
                      experiment_id: str | None = None,
                      grace_s: float | None = None) -> list[int]:
    """Record as failed the RUNNING trials whose search process is gone, and return their
    numbers; a trial another live process is running is left alone.

    A trial is stale when its last heartbeat is more than `grace_s` seconds old (the database's
    clock; default `grace_period()`), or, when it never recorded one (a study written before
    heartbeats, or a backend that records none), when it started more than `grace_s` seconds
    ago. Each gets a `condsearch.error` attribute saying why, and its still-running MLflow runs
    are closed as KILLED with that reason as a tag (found through the location the trial noted,
    else by the trial's number in `experiment_id` at `tracking_uri`, the session's)."""
    from optuna.exceptions import UpdateFinishedTrialError

    grace = grace_s if grace_s is not None else grace_period()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    expired = heartbeat_expired_trial_ids(study, grace) or set()
    beating = heartbeat_trial_ids(study, [trial_id(t) for t in running])
    now = datetime.now()
    failed = []
    for frozen in running:
        tid = trial_id(frozen)
        if tid in expired:
            reason = (f"stale: no heartbeat for over {grace:g} s; the search process running "
                      "this trial stopped")
        elif tid not in beating and frozen.datetime_start is not None and (
                now - frozen.datetime_start).total_seconds() > grace:
            reason = (f"stale: running for over {grace:g} s without ever recording a heartbeat "
                      "(a search process that predates heartbeats, or one that stopped)")
        else:
            continue
        storage = study_storage(study)
        try:
            storage.set_trial_user_attr(tid, ATTR_ERROR, reason)
            if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # its owner or another process finished it meanwhile
            continue
        _close_runs(frozen, reason, tracking_uri, experiment_id)
        failed.append(frozen.number)
    return failed


# ---- a full disk ---------------------------------------------------------------------------------

#: errno values meaning nothing more can be written: no space, a quota, the file size limit
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: what databases say when they cannot grow: SQLite's SQLITE_FULL, PostgreSQL's "could not extend
#: file ...: No space left on device", MySQL's "The table '...' is full"
_FULL_TEXTS = re.compile(r"database or disk is full|no space left on device|disk quota exceeded"
                         r"|\btable '[^']*' is full", re.IGNORECASE)
#: below this many free bytes a disk counts as full when SQLite reports an I/O error
_FULL_FREE_BYTES = 1 << 20


class StorageFull(SearchError):
    """The disk holding the study (or another file the search writes) is full: the search
    stopped, keeping every trial recorded before; the message says what to do."""

    def __init__(self, where: str, detail: str, completed: int | None) -> None:
        kept = ("every completed trial is kept" if completed is None else
                f"{completed} completed trial{'' if completed == 1 else 's'} "
                f"{'is' if completed == 1 else 'are'} kept")
        super().__init__(f"the disk holding {where} is full: {detail}; {kept}; free space and "
                         "run the same command to resume")
        self.where, self.detail, self.completed = where, detail, completed


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps: its cause and context, and a database driver's own error
    (SQLAlchemy's `orig`), each once."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return [e for e in seen if isinstance(e, BaseException)]


def _sqlite_path(storage: str | None) -> Path | None:
    if storage and storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///"):].partition("?")[0]
        if path and path != ":memory:":
            return Path(path)
    return None


def _no_room(path: Path) -> str | None:
    """Why the SQLite database at `path` cannot grow, or None: its file (or journal) reached
    this process's file size limit (`ulimit -f`; a write past it fails with EFBIG, which SQLite
    reports as a "disk I/O error"), or its disk has no free space left."""
    import resource
    import shutil

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        sizes = [p.stat().st_size for p in (path, Path(f"{path}-journal"), Path(f"{path}-wal"))
                 if p.exists()]
        if sizes and max(sizes) + 65536 >= limit:
            return f"the file size limit of {limit} bytes (ulimit -f) is reached"
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    return f"{free} bytes free" if free < _FULL_FREE_BYTES else None


def full_disk(exc: BaseException, storage: str | None = None) -> tuple[str, str] | None:
    """(where, detail) when `exc` means a disk is full, else None.

    A full disk shows as an OSError ENOSPC, EDQUOT or EFBIG (a file size limit), as a database
    saying it cannot grow (SQLite's "database or disk is full"), or as SQLite's "disk I/O error"
    when the study's SQLite file at `storage` has no room left (`_no_room`). `where` is the file
    that could not be written (the study database unless the error names another)."""
    path = _sqlite_path(storage)
    where = str(path) if path is not None else (masked_url(storage, "the study database") if storage else
                                                "the study database")
    for e in _causes(exc):
        if isinstance(e, StorageFull):
            return e.where, e.detail
        if getattr(e, "orig", None) is not None:
            continue  # SQLAlchemy's wrapper: the driver's own error (its `orig`) says it plainly
        text = " ".join(str(e).split())
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return (str(e.filename) if e.filename else where), e.strerror or text
        if _FULL_TEXTS.search(text):
            return where, text[:300]
        if "disk i/o error" in text.lower() and path is not None:
            room = _no_room(path)
            if room is not None:
                return where, f"{text[:200]} ({room})"
    return None


def completed_trials(study: optuna.Study) -> int | None:
    """The study's completed trained trials (derived points not counted); None when it cannot
    be read."""
    try:
        return sum(ATTR_DERIVED_FROM not in t.user_attrs for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception:  # noqa: BLE001 - the count is a courtesy in a message
        return None


def storage_full(exc: BaseException, study: optuna.Study | None,
                 storage: str | None) -> StorageFull | None:
    """The one-line error a search stops with when `exc` means a full disk, else None."""
    if isinstance(exc, StorageFull):
        return exc
    found = full_disk(exc, storage)
    if found is None:
        return None
    return StorageFull(*found, completed_trials(study) if study is not None else None)


def abandon_trial(study: optuna.Study, trial: optuna.Trial, result: TrialResult, reason: str,
                  tracking: Any = None) -> None:
    """After the study refused a trial's record (a full disk): record it as failed with `reason`
    if the study still takes that smaller write (else the next invocation finds it stale), and
    close its MLflow runs, the trained and the derived, as FAILED with `reason` as a tag, so no
    run of a trial the study lacks looks finished (none was tagged on the front). Silent and
    best effort: MLflow may be on the same full disk."""
    from condsearch.track._stale import STALE_REASON_TAG
    from condsearch.track._trial_runs import end_runs

    try:
        write_trial_group(study, trial, {ATTR_ERROR: reason[:2000]}, {}, TrialState.FAIL)
    except Exception:  # noqa: BLE001, S110 - left RUNNING: the next start finds it stale
        pass
    runs = [r for r in (result.run_id, *(d.run_id for d in result.derived)) if r]
    if tracking is not None and runs:
        try:
            end_runs(tracking.uri, runs, "FAILED", {STALE_REASON_TAG: reason})
        except Exception:  # noqa: BLE001, S110 - best effort, see above
            pass


def _values(metrics: dict[str, float], objectives: list[tuple[str, str]]) -> list[float] | None:
    values = [float(metrics.get(OBJECTIVE_METRICS[name], math.nan)) for name, _ in objectives]
    return values if all(math.isfinite(v) for v in values) else None


def _knob_params(trial_params: dict[str, Any], distributions: dict[str, Any],
                 knobs: dict[str, float]) -> dict[str, Any]:
    """The trial's params with each swept knob's value put in where the space sampled it."""
    params = dict(trial_params)
    for knob, value in knobs.items():
        # a backbone that keeps its keys directly under `model` samples its knob as model.<knob>
        flat = f"model.{knob.split('.', 1)[1]}"
        for key in (knob_param(knob), *(() if knob_param(knob).startswith(
                "model.components.") else (flat,))):
            dist = distributions.get(key)
            if dist is not None and distribution_contains(dist, value):
                params[key] = value
                break
    return params


def write_trial_attrs(study: optuna.Study, trial: optuna.Trial, user_attrs: dict[str, Any],
                      constraints: dict[str, float] | None = None) -> None:
    """Set a running trial's user attributes and constraints, in one storage transaction on a
    database storage: Optuna commits each `set_user_attr` on its own, which cost a trial about
    5 ms apiece. What the study holds afterwards is what those calls would have written."""
    write_running_trial_attrs(study, trial, user_attrs, constraint_system_attrs(constraints or {}))


def record_stopped(study: optuna.Study, trial: optuna.Trial, arch: dict[str, Any],
                   task: dict[str, Any], result: TrialResult, constraints: dict[str, Any],
                   rungs: dict[str, Any] | None = None, tell: bool = True) -> None:
    """Tell the study PRUNED for a trial a scheduler stopped early, keeping what it measured at
    its last rung (metrics, and constraints, which Optuna's samplers read) and every rung's
    result, so the sampler and the reports can use them; one transaction on a database."""
    attrs = {ATTR_METRICS: result.metrics, ATTR_ARCH: arch, ATTR_TASK: task,
             ATTR_STOPPED_AT: result.stopped_at, ATTR_STOP_REASON: result.stop_reason or ""}
    if result.run_id:
        attrs[ATTR_RUN] = result.run_id
    if rungs:
        attrs[ATTR_RUNGS] = rungs
    cons = measured_constraint_values(result.metrics, constraints)
    write_trial_group(study, trial, attrs, constraint_system_attrs(cons),
                      TrialState.PRUNED if tell else None)


def record_result(study: optuna.Study, trial: optuna.Trial, arch: dict[str, Any],
                  task: dict[str, Any], result: TrialResult, objectives: list[tuple[str, str]],
                  constraints: dict[str, Any], tell: bool = True,
                  rungs: dict[str, Any] | None = None) -> list[Point]:
    """Tell the study the trial's outcome and add its derived points; return the new points.

    `rungs` (a multi-fidelity scheduler's results of the trial, `condsearch.rungs`) is kept on
    the trial whatever its outcome; a result a scheduler stopped early is told PRUNED
    (`record_stopped`) and makes no point.

    The trial and its derived points are recorded together or not at all: on a database storage
    its attributes, constraints, values, state and every derived point are one transaction
    (`write_trial_group`), so a failure (a full disk) leaves the trial RUNNING with no derived
    point, for the caller to record as failed or the next invocation to find stale.

    With `tell=False` the trial's attributes, constraints and derived points are written but
    its state is left to the caller (an Optuna objective returns its values to `optimize`)."""
    if result.stopped_at is not None:
        record_stopped(study, trial, arch, task, result, constraints, rungs, tell)
        return []
    names = [n for n, _ in objectives]
    values = _values(result.metrics, objectives) if result.ok else None
    if values is None:
        reason = result.error or f"no finite objective values in {result.metrics}"
        failure = {ATTR_ERROR: reason[:2000]}
        if result.run_id:
            failure[ATTR_RUN] = result.run_id
        if rungs:
            failure[ATTR_RUNGS] = rungs
        write_trial_group(study, trial, failure, {}, TrialState.FAIL if tell else None)
        return []
    cons = constraint_values(result.metrics, constraints)
    attrs = {ATTR_METRICS: result.metrics, ATTR_KNOBS: result.knobs, ATTR_ARCH: arch,
             ATTR_TASK: task, ATTR_RUN: result.run_id, ATTR_WEIGHTS_RUN: result.run_id}
    if rungs:
        attrs[ATTR_RUNGS] = rungs
    feasible = all(v <= 0 for v in cons.values())
    points = [Point(trial.number, trial.number, False, dict(zip(names, values)), result.metrics,
                    result.knobs, arch, task, result.run_id, result.run_id, feasible)]
    derived_trials, kept = [], []
    for derived in result.derived:
        d_values = _values(derived.metrics, objectives)
        if d_values is None:
            continue
        d_cons = constraint_values(derived.metrics, constraints)
        knobs = {**result.knobs, **derived.knobs}
        derived_trials.append(optuna.trial.create_trial(
            params=_knob_params(trial.params, trial.distributions, derived.knobs),
            distributions=trial.distributions, values=d_values, constraints=d_cons or None,
            user_attrs={**{k: v for k, v in attrs.items() if k != ATTR_RUNGS},
                        ATTR_METRICS: derived.metrics, ATTR_KNOBS: knobs,
                        ATTR_RUN: derived.run_id, ATTR_DERIVED_FROM: trial.number},
        ))
        kept.append((derived, d_values, d_cons, knobs))
    numbers = write_trial_group(study, trial, attrs, constraint_system_attrs(cons),
                                TrialState.COMPLETE if tell else None, values if tell else None,
                                derived_trials)
    for number, (derived, d_values, d_cons, knobs) in zip(numbers, kept, strict=True):
        points.append(Point(number, trial.number, True, dict(zip(names, d_values)),
                            derived.metrics, knobs, arch, task, derived.run_id, result.run_id,
                            all(v <= 0 for v in d_cons.values())))
    return points
