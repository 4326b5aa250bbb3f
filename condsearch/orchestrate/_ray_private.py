"""Every use condsearch makes of Ray Tune's private API, in one place: OptunaSearch's internals.

Nothing in condsearch calls these any more: the Ray backend's `SpaceSearcher` now subclasses the
public `condsearch.tune.Searcher`, which subclasses Ray's public `ray.tune.search.Searcher` and
keeps its own record of asked and told trials. They stay, with their checks in
tests/test_private_apis.py, for code written against the former OptunaSearch-based searcher, and
can go together with those checks.

OptunaSearch keeps its study, its asked trials and its finished ids in private attributes with no
public accessor. Each function names the attribute it relies on and the Ray version it was
checked against; tests/test_private_apis.py exercises each against the installed Ray (no cluster
needed), so an upgrade that renames one fails there loudly.
"""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

#: the Ray release every function here was checked against
CHECKED_AGAINST = "2.60.0"
#: OptunaSearch attributes holding live driver objects (the study, its trials, the sampler and
#: storage, the define-by-run space), which must not travel in a pickled searcher
DRIVER_STATE = ("_ot_study", "_ot_trials", "_sampler", "_storage", "_space")


def use_study(searcher: OptunaSearch, study: optuna.Study) -> None:
    """Make the searcher ask and tell `study` itself (with its sampler object), not the copy of it
    OptunaSearch opened from the storage. Relies on `OptunaSearch._ot_study`; checked against
    Ray 2.60.0."""
    searcher._ot_study = study


def asked_trial(searcher: OptunaSearch, trial_id: str) -> optuna.Trial | None:
    """The Optuna trial the searcher asked for Ray trial `trial_id`, or None if it asked none.
    Relies on `OptunaSearch._ot_trials`; checked against Ray 2.60.0."""
    return searcher._ot_trials.get(trial_id)


def is_completed(searcher: OptunaSearch, trial_id: str) -> bool:
    """Whether the searcher has told the study the outcome of Ray trial `trial_id`. Relies on
    `OptunaSearch._completed_trials`; checked against Ray 2.60.0."""
    return trial_id in searcher._completed_trials


def mark_completed(searcher: OptunaSearch, trial_id: str) -> None:
    """Record that Ray trial `trial_id`'s outcome was told (so a second report is ignored, as
    OptunaSearch does itself). Relies on `OptunaSearch._completed_trials`; checked against
    Ray 2.60.0."""
    searcher._completed_trials.add(trial_id)


def unfinished_trials(searcher: OptunaSearch) -> list[optuna.Trial]:
    """The Optuna trials the searcher asked whose outcome it never told (Ctrl-C, a dead driver).
    Relies on `OptunaSearch._ot_trials` and `OptunaSearch._completed_trials`; checked against
    Ray 2.60.0."""
    return [trial for trial_id, trial in list(searcher._ot_trials.items())
            if trial_id not in searcher._completed_trials]


def without_driver_state(state: dict[str, Any]) -> dict[str, Any]:
    """A searcher's `__dict__` without OptunaSearch's live driver objects (`DRIVER_STATE`), for
    pickling. Relies on those OptunaSearch attribute names; checked against Ray 2.60.0."""
    return {k: v for k, v in state.items() if k not in DRIVER_STATE}
