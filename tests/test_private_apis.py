"""Each wrapper of Optuna's and Ray's private API against the installed libraries, on real
in-memory and SQLite studies (Ray: OptunaSearch driven in process, no cluster), so an upgrade
that moves an internal fails here, by name, rather than somewhere in a search."""

import math
import pickle
from pathlib import Path

import optuna
import pytest
from sqlalchemy import event

from condsearch.orchestrate import _optuna_private as op

KINDS = ["in-memory", "sqlite"]


def make_study(kind: str, tmp_path: Path, directions=("maximize", "minimize")) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path}/study.db" if kind == "sqlite" else None
    return optuna.create_study(storage=storage, directions=list(directions))


# ---- Optuna ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_study_storage_and_trial_id_reach_the_trial_in_storage(kind, tmp_path):
    study = make_study(kind, tmp_path)
    study.ask()
    trial = study.ask()
    storage = op.study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    frozen = study.trials[1]
    assert op.trial_id(trial) == op.trial_id(frozen)
    assert storage.get_trial(op.trial_id(trial)).number == trial.number == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_system_attr_set_through_a_frozen_trial_is_stored(kind, tmp_path):
    study = make_study(kind, tmp_path)
    trial = study.ask()
    frozen = study.trials[0]  # what a sampler is handed
    op.set_trial_system_attr(study, frozen, "condsearch.test", {"a": [1, 2]})
    study.tell(trial, [1.0, 2.0])
    assert study.trials[0].system_attrs["condsearch.test"] == {"a": [1, 2]}


def test_constraint_attrs_are_what_set_constraint_writes_and_constraints_reads():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    trial.set_constraint("max_flops", 0.25)
    trial.set_constraint("max_params", -1)
    written = op.constraint_system_attrs({"max_flops": 0.25, "max_params": -1})
    assert study.trials[0].system_attrs == written
    frozen = optuna.trial.create_trial(values=[1.0, 2.0], system_attrs=written)
    assert frozen.constraints == {"max_flops": 0.25, "max_params": -1.0}
    with pytest.raises(ValueError, match="NaN"):
        op.constraint_system_attrs({"max_flops": math.nan})


def test_a_database_storage_has_the_one_transaction_writer(tmp_path):
    study = make_study("sqlite", tmp_path)
    writer = op.rdb_writer(op.study_storage(study))
    assert writer is not None, "Optuna's RDB internals moved: writes fall back to one per key"
    session_scope, write, models = writer
    assert callable(write) and hasattr(session_scope(), "__enter__")
    assert models.TrialUserAttributeModel and models.TrialSystemAttributeModel
    assert op.rdb_writer(op.study_storage(make_study("in-memory", tmp_path))) is None


@pytest.mark.parametrize("kind", KINDS)
def test_attrs_written_at_once_equal_optunas_own_calls(kind, tmp_path):
    study = make_study(kind, tmp_path)
    own, ours = study.ask(), study.ask()
    user = {"condsearch.metrics": {"accuracy": 0.5}, "condsearch.run_id": "r"}
    for key, value in user.items():
        own.set_user_attr(key, value)
    own.set_constraint("max_flops", 0.5)
    seen: list[int] = []
    if kind == "sqlite":
        event.listen(op.study_storage(study)._backend.engine, "commit",
                     lambda conn: seen.append(1))
    op.write_running_trial_attrs(study, ours, user, op.constraint_system_attrs({"max_flops": 0.5}))
    assert len(seen) == (1 if kind == "sqlite" else 0)
    # the trial's cached copy was updated as set_user_attr and set_constraint update it
    assert ours.user_attrs == own.user_attrs == user
    assert ours._cached_frozen_trial.system_attrs == own._cached_frozen_trial.system_attrs
    first, second = study.trials
    assert first.user_attrs == second.user_attrs and first.system_attrs == second.system_attrs


@pytest.mark.parametrize("kind", KINDS)
def test_an_added_trial_reports_its_number(kind, tmp_path):
    study = make_study(kind, tmp_path)
    study.tell(study.ask(), [1.0, 2.0])
    study.ask()
    frozen = optuna.trial.create_trial(values=[0.5, 1.0], user_attrs={"k": 1})
    assert op.add_trial_numbered(study, frozen) == 2
    assert study.trials[2].user_attrs == {"k": 1}
    assert study.trials[2].state == optuna.trial.TrialState.COMPLETE


def test_distribution_contains():
    flt = optuna.distributions.FloatDistribution(0.5, 0.95)
    assert op.distribution_contains(flt, 0.6) and not op.distribution_contains(flt, 0.3)
    stepped = optuna.distributions.IntDistribution(2, 8, step=2)
    assert op.distribution_contains(stepped, 4) and not op.distribution_contains(stepped, 10)
    cat = optuna.distributions.CategoricalDistribution([True, False])
    assert op.distribution_contains(cat, False)
    with pytest.raises(ValueError):
        op.distribution_contains(optuna.distributions.CategoricalDistribution([1, 2]), 3)


# ---- Ray ------------------------------------------------------------------------------------------


@pytest.fixture
def searcher():
    """Ray's OptunaSearch over a define-by-run space, driving a study condsearch opened."""
    pytest.importorskip("ray.tune", reason="the ray backend needs pip install 'condsearch[ray]'")
    from ray.tune.search.optuna import OptunaSearch

    from condsearch.orchestrate import _ray_private as rp

    study = optuna.create_study(study_name="s", storage=optuna.storages.InMemoryStorage(),
                                directions=["maximize", "minimize"])
    found = OptunaSearch(space=lambda t: {"x": t.suggest_float("x", 0.0, 1.0)},
                         metric=["accuracy", "flops"], mode=["max", "min"],
                         sampler=study.sampler, study_name="s", storage=op.study_storage(study))
    rp.use_study(found, study)
    return found, study, rp


def test_the_searcher_asks_the_given_study(searcher):
    found, study, rp = searcher
    found.suggest("a")
    trial = rp.asked_trial(found, "a")
    assert isinstance(trial, optuna.Trial) and trial.study is study
    assert rp.asked_trial(found, "never") is None
    assert len(study.trials) == 1


def test_completion_is_read_and_marked_as_optuna_search_keeps_it(searcher):
    found, study, rp = searcher
    for trial_id in ("a", "b", "c"):
        found.suggest(trial_id)
    assert not rp.is_completed(found, "a")
    found.on_trial_complete("a", {"accuracy": 0.5, "flops": 10.0})  # OptunaSearch's own record
    assert rp.is_completed(found, "a")
    rp.mark_completed(found, "b")
    found.on_trial_complete("b", {"accuracy": 0.9, "flops": 1.0})  # ignored: already completed
    assert study.trials[1].state == optuna.trial.TrialState.RUNNING
    assert rp.unfinished_trials(found) == [rp.asked_trial(found, "c")]


def test_the_driver_state_names_are_optuna_search_attributes(searcher):
    found, _, rp = searcher
    found.suggest("a")
    assert set(rp.DRIVER_STATE) <= set(vars(found)), "OptunaSearch renamed its attributes"
    kept = rp.without_driver_state(vars(found))
    assert not set(rp.DRIVER_STATE) & set(kept)
    assert "_completed_trials" in kept
    pickle.dumps(kept)


def test_a_stopped_data_parallel_trial_reaches_its_train_controller_and_report_queue():
    """`_ray_private.abort_train_run` calls the controller's `abort` (Ray Train's own Ctrl-C
    path) and drains the Tune session's inter-actor queue, the one `TuneReportCallback` puts
    reports on. (That it ends a stopped trial's workers, their placement group and the
    cleaner is tests/test_search_data_parallel_ray.py's MO-ASHA test.)"""
    import inspect

    pytest.importorskip("ray.train", reason="the ray backend needs pip install 'condsearch[ray]'")
    from ray.train._internal.session import _TrainSession
    from ray.train.v2._internal.execution.controller.controller import TrainController
    from ray.tune.integration.ray_train import TuneReportCallback

    from condsearch.orchestrate import _ray_private as rp

    assert callable(rp.abort_train_run)
    assert inspect.iscoroutinefunction(TrainController.abort)
    assert "self._inter_actor_queue" in inspect.getsource(
        _TrainSession._get_or_create_inter_actor_queue)
    assert "_get_or_create_inter_actor_queue" in inspect.getsource(TuneReportCallback.__init__)
