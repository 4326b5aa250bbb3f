"""Telling the study a trial's outcome: what the study holds afterwards, and in how many
storage transactions it was written."""

from pathlib import Path

import optuna
import pytest
from sqlalchemy import event

from condsearch.orchestrate._points import ATTR_ARCH, ATTR_METRICS, ATTR_RUN, point_from_trial
from condsearch.orchestrate._record import ATTR_ERROR, record_result, write_trial_attrs
from condsearch.orchestrate._trial import DerivedPoint, TrialResult

OBJECTIVES = [("accuracy", "maximize"), ("flops", "minimize")]
ATTRS = {"condsearch.metrics": {"accuracy": 0.8, "flops": 120.0}, "condsearch.knobs": {},
         "condsearch.arch": {"model": {"dim": 8}}, "condsearch.run_id": "abc"}


def sqlite_study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path}/study.db",
                               directions=["maximize", "minimize"])


def commits(study: optuna.Study) -> list[int]:
    """A list that grows by one with every commit on the study's database."""
    seen: list[int] = []
    event.listen(study._storage._backend.engine, "commit", lambda conn: seen.append(1))
    return seen


@pytest.mark.parametrize("kind", ["sqlite", "in-memory"])
def test_attributes_written_together_equal_optunas_own_calls(kind, tmp_path):
    study = sqlite_study(tmp_path) if kind == "sqlite" else optuna.create_study(
        directions=["maximize", "minimize"])
    own, ours = study.ask(), study.ask()
    for key, value in ATTRS.items():
        own.set_user_attr(key, value)
    own.set_constraint("max_flops", 0.2)
    write_trial_attrs(study, ours, ATTRS, {"max_flops": 0.2})
    assert ours.user_attrs == own.user_attrs == ATTRS
    study.tell(own, [0.8, 120.0])
    study.tell(ours, [0.8, 120.0])
    first, second = study.get_trials()
    assert first.user_attrs == second.user_attrs
    assert first.system_attrs == second.system_attrs
    assert first.constraints == second.constraints == {"max_flops": 0.2}


def test_a_database_storage_takes_all_attributes_in_one_transaction(tmp_path):
    study = sqlite_study(tmp_path)
    trial = study.ask()
    seen = commits(study)
    write_trial_attrs(study, trial, ATTRS, {"max_flops": -0.5, "max_params": 0.1})
    assert len(seen) == 1
    assert study.trials[0].user_attrs == ATTRS


def test_a_nan_constraint_is_refused():
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ValueError, match="NaN"):
        write_trial_attrs(study, study.ask(), {}, {"max_flops": float("nan")})


def test_a_recorded_trial_reads_back_as_the_points_record_returned(tmp_path):
    study = sqlite_study(tmp_path)
    trial = study.ask()
    trial.suggest_float("model.components.early_exit.threshold", 0.5, 0.95)
    arch = {"model": {"dim": 8}, "train": {"epochs": 1}}
    result = TrialResult(
        number=trial.number, ok=True, run_id="run-0",
        metrics={"accuracy": 0.8, "flops": 120.0, "params": 50.0},
        knobs={"early_exit.threshold": 0.9},
        derived=[DerivedPoint({"early_exit.threshold": 0.6},
                              {"accuracy": 0.7, "flops": 90.0, "params": 50.0}, "run-1")])
    points = record_result(study, trial, arch, {"dataset": "digits"}, result, OBJECTIVES,
                           {"max_flops": 100.0})
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2
    read = [point_from_trial(t, ["accuracy", "flops"]) for t in complete]
    for p, q in zip(points, read, strict=True):
        for field in ("number", "trial", "derived", "values", "metrics", "knobs", "arch", "task",
                      "run_id", "weights_run_id", "feasible"):
            assert getattr(p, field) == getattr(q, field), field
    assert [p.feasible for p in points] == [False, True]  # 120 FLOPs is over the bound of 100
    assert complete[0].constraints == {"max_flops": pytest.approx(0.2)}
    assert complete[0].user_attrs[ATTR_ARCH] == arch


def test_a_failed_trial_is_told_fail_with_its_reason_and_run(tmp_path):
    study = sqlite_study(tmp_path)
    trial = study.ask()
    result = TrialResult(number=trial.number, ok=False, error="ValueError: boom", run_id="run-9")
    assert record_result(study, trial, {}, {}, result, OBJECTIVES, {}) == []
    frozen = study.trials[0]
    assert frozen.state == optuna.trial.TrialState.FAIL
    assert frozen.user_attrs == {ATTR_ERROR: "ValueError: boom", ATTR_RUN: "run-9"}
    assert ATTR_METRICS not in frozen.user_attrs
