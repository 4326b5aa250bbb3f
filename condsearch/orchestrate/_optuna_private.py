"""Every use condsearch makes of Optuna's private API, in one place.

Optuna offers no public call for these (a sampler persisting per-trial state, writing a trial's
attributes in one transaction, adding a trial and learning its number). Each function names the
private API it relies on and the Optuna version it was checked against; tests/test_private_apis.py
exercises each against the installed Optuna, so an upgrade that moves one fails there loudly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

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
