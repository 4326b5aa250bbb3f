"""Every use condsearch makes of Optuna's private API, in one place.

Optuna offers no public call for these (a sampler persisting per-trial state, writing a trial's
attributes in one transaction, recording a trial and its derived points in one transaction,
adding a trial and learning its number). Each function names the private API it relies on and
the Optuna version it was checked against; tests/test_private_apis.py (and, for
`write_trial_group`, tests/test_disk_full.py) exercises each against the installed Optuna, so an
upgrade that moves one fails there loudly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

#: the Optuna release every function here was checked against
CHECKED_AGAINST = "5.0.0"
#: the prefix of the system attribute `Trial.set_constraint` writes per constraint
#: (`optuna.study._constrained_optimization._CONSTRAINTS_KEY`)
_CONSTRAINTS_KEY = "constraints"

#: (session scope, per-attribute writer, models module) of an RDB storage
RdbWriter = tuple[Callable[[], AbstractContextManager[Any]], Callable[..., None], Any]


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object behind a study (Ray's OptunaSearch reuses it). Relies on
    `Study._storage`; checked against Optuna 5.0.0."""
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's storage id, which storage calls take instead of its number. Relies on
    `Trial._trial_id` and `FrozenTrial._trial_id`; checked against Optuna 5.0.0."""
    return trial._trial_id


def set_trial_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str,
                          value: Any) -> None:
    """Store a system attribute on a running trial, as Optuna's own samplers do to persist
    per-trial state (samplers get a FrozenTrial, which has no setter). Relies on
    `Study._storage` and `FrozenTrial._trial_id`; checked against Optuna 5.0.0."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def constraint_system_attrs(constraints: dict[str, float]) -> dict[str, float]:
    """The system attributes `Trial.set_constraint` would write for `constraints` (and
    `FrozenTrial.constraints` reads back); NaN refused as it refuses it. Relies on the key
    format `f"{optuna.study._constrained_optimization._CONSTRAINTS_KEY}:{name}"`; checked
    against Optuna 5.0.0."""
    attrs = {}
    for key, value in constraints.items():
        value = float(value)
        if math.isnan(value):
            raise ValueError(f"constraint {key!r} is NaN")
        attrs[f"{_CONSTRAINTS_KEY}:{key}"] = value
    return attrs


def rdb_writer(storage: BaseStorage) -> RdbWriter | None:
    """Optuna's RDB session scope, attribute writer and models, which `set_trial_user_attr` uses
    once per key; None for another storage, or an Optuna whose internals moved. Relies on
    `_CachedStorage._backend`, `optuna.storages._rdb.models`,
    `optuna.storages._rdb.storage._create_scoped_session` and
    `RDBStorage._set_trial_attr_without_commit`; checked against Optuna 5.0.0."""
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage):
        return None
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return None
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    if write is None:
        return None
    return (lambda: _create_scoped_session(backend.scoped_session)), write, models


def write_running_trial_attrs(study: optuna.Study, trial: optuna.Trial,
                              user_attrs: dict[str, Any], system_attrs: dict[str, Any]) -> None:
    """Set a running trial's user and system attributes: in one transaction on a database
    storage (Optuna commits each `set_user_attr` on its own, about 5 ms apiece), else one storage
    call per attribute; then the trial's cached copy, as `set_user_attr` updates it. Relies on
    `Study._storage`, `Trial._trial_id`, `Trial._cached_frozen_trial` and `rdb_writer`'s
    internals; checked against Optuna 5.0.0."""
    storage, tid = study._storage, trial._trial_id
    writer = rdb_writer(storage)
    if writer is not None:
        session_scope, write, models = writer
        with session_scope() as session:
            for key, value in user_attrs.items():
                write(session, models.TrialUserAttributeModel, tid, key, value)
            for key, value in system_attrs.items():
                write(session, models.TrialSystemAttributeModel, tid, key, value)
    else:  # in-memory, journal or another storage
        for key, value in user_attrs.items():
            storage.set_trial_user_attr(tid, key, value)
        for key, value in system_attrs.items():
            storage.set_trial_system_attr(tid, key, value)
    trial._cached_frozen_trial.user_attrs.update(user_attrs)
    trial._cached_frozen_trial.system_attrs.update(system_attrs)


def add_trial_numbered(study: optuna.Study, frozen: FrozenTrial) -> int:
    """Add a finished trial to the study and return its number (`Study.add_trial` returns
    nothing). Relies on `Study._storage` and `Study._study_id`; checked against Optuna 5.0.0."""
    storage = study._storage
    new_id = storage.create_new_trial(study._study_id, template_trial=frozen)
    return storage.get_trial_number_from_id(new_id)


#: how often a group write is tried when the database reports a lock conflict (as Optuna retries
#: creating a trial); any other failure, a full disk among them, is raised at once
_GROUP_ATTEMPTS = 5


def _lock_conflict(exc: BaseException) -> bool:
    """Whether a failed transaction was refused for a lock another process held (SQLite's
    "database is locked", a server's deadlock or serialization failure): worth another try."""
    text = f"{exc} {exc.__cause__}".lower()
    return any(m in text for m in ("database is locked", "deadlock", "could not serialize",
                                   "lock wait timeout"))


def write_trial_group(study: optuna.Study, trial: optuna.Trial, user_attrs: dict[str, Any],
                      system_attrs: dict[str, Any], state: TrialState | None = None,
                      values: list[float] | None = None,
                      new_trials: list[FrozenTrial] = ()) -> list[int]:
    """Write a running trial's attributes, finish it with `state` (COMPLETE with `values`,
    PRUNED or FAIL; None leaves it RUNNING for the caller, as an objective run by `optimize` does) and add
    `new_trials` (finished trials: the derived points), and return their numbers.

    On a database storage all of it is one transaction: a failure (a full disk, a lost server)
    rolls it back whole, leaving the trial RUNNING with none of these attributes and no new
    trial, never a trial without its derived points. The sampler's `after_trial` is called
    first, as `study.tell` calls it, and the state written even when it raises. On another
    storage (in memory, journal) the same writes are made one by one, as Optuna's own calls.

    Relies on `Study._storage`, `Study._study_id`, `Study._thread_local`, `Trial._trial_id`,
    `Trial._cached_frozen_trial`, `optuna.pruners._filter_study`, `_CachedStorage._backend`,
    `optuna.storages._rdb.storage._create_scoped_session`, `optuna.storages._rdb.models`
    (`StudyModel.find_or_raise_by_id`, `TrialModel.find_or_raise_by_id`) and the RDBStorage
    methods `check_trial_is_updatable`, `_set_trial_attr_without_commit`,
    `_set_trial_value_without_commit` and `_get_prepared_new_trial` (what `create_new_trial`
    runs inside its own transaction); checked against Optuna 5.0.0."""
    from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError

    if state is not None and state not in (TrialState.COMPLETE, TrialState.FAIL,
                                           TrialState.PRUNED):
        raise ValueError(f"a recorded trial is COMPLETE, PRUNED or FAIL, not {state.name}")
    if (state == TrialState.COMPLETE) != (values is not None):
        raise ValueError("values go with state COMPLETE, and only with it")
    tid = trial._trial_id
    frozen = study._storage.get_trial(tid)
    if frozen.state.is_finished():  # another process recorded it (a heartbeat taken for stale)
        raise UpdateFinishedTrialError(f"trial {frozen.number} is already {frozen.state.name}")
    backend = _rdb_backend(study)
    if backend is None:
        write_running_trial_attrs(study, trial, user_attrs, system_attrs)
        if state is not None:
            study.tell(trial, values, state=state)
        return [add_trial_numbered(study, new) for new in new_trials]

    import random
    import time

    study._thread_local.cached_all_trials = None  # as `tell` and `add_trial` invalidate it
    values = None if values is None else [float(v) for v in values]
    if values is not None and len(values) != len(study.directions):
        raise ValueError(f"{len(values)} values for {len(study.directions)} objectives")

    def write() -> list[int]:
        for attempt in range(1, _GROUP_ATTEMPTS + 1):
            try:
                return _write_group(backend, study._study_id, tid, user_attrs, system_attrs,
                                    state, values, new_trials)
            except StorageInternalError as exc:
                if attempt == _GROUP_ATTEMPTS or not _lock_conflict(exc):
                    raise
                time.sleep(random.random() * 2.0)  # Optuna's own back-off for a lock conflict
        raise AssertionError("not reached")

    if state is None:
        numbers = write()
    else:
        try:
            study.sampler.after_trial(optuna.pruners._filter_study(study, frozen), frozen, state,
                                      values)
        finally:
            numbers = write()
    trial._cached_frozen_trial.user_attrs.update(user_attrs)
    trial._cached_frozen_trial.system_attrs.update(system_attrs)
    return numbers


def _write_group(backend: RDBStorage, study_id: int, tid: int, user_attrs: dict[str, Any],
                 system_attrs: dict[str, Any], state: TrialState | None,
                 values: list[float] | None, new_trials: list[FrozenTrial]) -> list[int]:
    """`write_trial_group`'s one transaction: what `set_trial_user_attr`,
    `set_trial_system_attr`, `set_trial_state_values` and `create_new_trial` each commit alone."""
    from datetime import datetime

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    numbers = []
    with _create_scoped_session(backend.scoped_session) as session:
        # The lock `create_new_trial` takes so no other process numbers a trial meanwhile.
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        row = models.TrialModel.find_or_raise_by_id(tid, session, for_update=True)
        backend.check_trial_is_updatable(tid, row.state)
        for key, value in user_attrs.items():
            backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, tid,
                                                   key, value)
        for key, value in system_attrs.items():
            backend._set_trial_attr_without_commit(session, models.TrialSystemAttributeModel,
                                                   tid, key, value)
        if state is not None:
            for objective, value in enumerate(values or ()):
                backend._set_trial_value_without_commit(session, row, objective, value)
            row.state = state
            row.datetime_complete = datetime.now()
        for new in new_trials:
            numbers.append(backend._get_prepared_new_trial(study_id, new, session).number)
    return numbers


def distribution_contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether `value` (external form) lies in the distribution (a categorical refuses a value
    not among its choices with ValueError). Relies on `BaseDistribution._contains`; checked
    against Optuna 5.0.0."""
    return distribution._contains(distribution.to_internal_repr(value))


def frozen_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as the storage holds it now (what `optimize` hands its callbacks). Relies on
    `Study._storage` and `_trial_id`; checked against Optuna 5.0.0."""
    return study._storage.get_trial(trial._trial_id)


def rdb_url(study: optuna.Study) -> str | None:
    """The database URL of a study kept in an RDB storage, else None (in memory, journal).
    Relies on `Study._storage` and `_CachedStorage._backend`; checked against Optuna 5.0.0."""
    from optuna.storages import RDBStorage

    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    return backend.url if isinstance(backend, RDBStorage) else None


def _rdb_backend(study: optuna.Study) -> RDBStorage | None:
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


def record_heartbeat(study: optuna.Study, trial_id: int) -> bool:
    """Record a heartbeat of a running trial now (the database's clock), as Optuna's own
    heartbeat thread does inside `optimize`; False where the storage keeps no heartbeats (in
    memory, journal). `RDBStorage.record_heartbeat` is public and needs no `heartbeat_interval`
    on the storage (setting one makes `study.ask` warn that heartbeats belong to `optimize`).
    Relies on `Study._storage` and `_CachedStorage._backend`; checked against Optuna 5.0.0."""
    backend = _rdb_backend(study)
    if backend is None:
        return False
    backend.record_heartbeat(trial_id)
    return True


def heartbeat_expired_trial_ids(study: optuna.Study, grace_s: float) -> set[int] | None:
    """Ids of the study's RUNNING trials whose last heartbeat is more than `grace_s` seconds old
    by the database's clock: Optuna's own test (`fail_stale_trials`), on a shallow copy of the
    storage carrying the grace period (the study's storage keeps no heartbeat settings). None
    where the storage keeps no heartbeats. Relies on `Study._storage`, `Study._study_id`,
    `_CachedStorage._backend`, `RDBStorage.heartbeat_interval` / `grace_period` and
    `RDBStorage._get_stale_trial_ids`; checked against Optuna 5.0.0."""
    import copy

    backend = _rdb_backend(study)
    if backend is None:
        return None
    checker = copy.copy(backend)  # shares the engine and sessions: no new connection
    checker.heartbeat_interval = max(1, math.ceil(grace_s))
    checker.grace_period = grace_s
    return set(checker._get_stale_trial_ids(study._study_id))


def heartbeat_trial_ids(study: optuna.Study, trial_ids: list[int]) -> set[int]:
    """Which of `trial_ids` ever recorded a heartbeat (an empty set where the storage keeps
    none). Relies on `optuna.storages._rdb.models.TrialHeartbeatModel` and
    `optuna.storages._rdb.storage._create_scoped_session`; checked against Optuna 5.0.0."""
    backend = _rdb_backend(study)
    if backend is None or not trial_ids:
        return set()
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    beat = models.TrialHeartbeatModel
    with _create_scoped_session(backend.scoped_session) as session:
        rows = session.query(beat.trial_id).filter(beat.trial_id.in_(list(trial_ids))).all()
    return {row[0] for row in rows}
