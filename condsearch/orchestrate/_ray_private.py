"""Every use condsearch makes of Ray's private API, in one place: OptunaSearch's internals, and
ending a data-parallel trial's Ray Train run when Ray Tune stops the trial.

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

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a trial's driver process imports this module: no Optuna there
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


# ---- Ray Train: ending a stopped trial's run ---------------------------------------------------


def abort_train_run(controller: Any, timeout: float) -> bool:
    """Abort a Ray Train V2 run from the Tune trial that started it, as Ray Train's own Ctrl-C
    handler does: `TrainController.abort` kills the workers, removes their placement group and
    stops Ray Train's detached PlacementGroupCleaner. (A Tune trial whose actor is just killed
    takes its controller and workers with it, but leaves the placement group, whose creator
    job lives on, and the cleaner, which without Ray's State API never notices; the next
    trial's workers then cannot be placed.)

    While the abort waits, the Tune session's inter-actor queue (where Ray Train's
    `TuneReportCallback` puts each report, holding one) is drained: a report of the stopped
    trial stuck in `put` would block the controller's event loop, and the abort with it.
    Whether it finished within `timeout` seconds. Relies on `TrainController.abort` and
    `_TrainSession._inter_actor_queue`; checked against Ray 2.60.0."""
    import ray
    from ray.train._internal.session import get_session
    from ray.util.queue import Empty

    session = get_session()
    queue = getattr(session, "_inter_actor_queue", None) if session is not None else None
    done = controller.abort.remote()
    deadline = time.monotonic() + timeout
    finished = False
    while time.monotonic() < deadline:
        ready, _ = ray.wait([done], timeout=0.5)
        if ready:
            finished = True
            break
        while queue is not None:
            try:
                queue.get_nowait()
            except Empty:
                break
            except Exception:  # noqa: BLE001 - the queue's actor is gone: nothing to drain
                queue = None
    try:
        ray.get(done, timeout=0)
    except Exception:  # noqa: BLE001 - abort ends by exiting the controller's actor
        pass
    return finished
