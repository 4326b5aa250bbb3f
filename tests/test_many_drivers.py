"""Several search processes on one study: a trial is failed only once its heartbeat expired."""

import os
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from helpers import DERIVED_FROM, ROOT

from condsearch.orchestrate._optuna_private import (
    record_heartbeat,
    set_trial_system_attr,
    trial_id,
)
from condsearch.orchestrate._record import ATTR_TRACKING, fail_stale_trials

# Three search processes train six trials (about a minute on 2 cores); the others wait out grace
# periods of a few seconds.
pytestmark = pytest.mark.slow

State = optuna.trial.TrialState
SPACE = ROOT / "search_spaces" / "digits_early_exit.yaml"


def _study(url: str, name: str = "beats") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"],
                               load_if_exists=True)


def test_only_a_trial_whose_heartbeat_expired_is_failed_and_its_run_killed(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    study = _study(url)
    dead, legacy, alive = (study.ask() for _ in range(3))
    # `dead` beat once and stopped; `legacy` predates heartbeats; its MLflow run is found by tag
    record_heartbeat(study, trial_id(dead))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("beats", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment, tags={"condsearch.role": "search"}).info.run_id
    dead_run = client.create_run(experiment, tags={
        "condsearch.trial": str(dead.number), "condsearch.role": "trial",
        "mlflow.parentRunId": parent}).info.run_id
    legacy_run = client.create_run(experiment, tags={
        "condsearch.trial": str(legacy.number), "condsearch.role": "trial"}).info.run_id
    alive_run = client.create_run(experiment, tags={
        "condsearch.trial": str(alive.number), "condsearch.role": "trial"}).info.run_id
    # where a running trial notes its MLflow runs (TrialHeartbeat writes it when it starts)
    set_trial_system_attr(study, dead, ATTR_TRACKING,
                          {"uri": uri, "experiment_id": experiment, "parent_run_id": parent})
    time.sleep(3.2)  # past a 2 s grace period (SQLite's clock counts whole seconds)
    record_heartbeat(study, trial_id(alive))
    young = study.ask()  # no heartbeat yet, but started within the grace period

    # what the next session start does, in a fresh process's view of the study
    failed = fail_stale_trials(_study(url), uri, experiment, grace_s=2)

    assert sorted(failed) == sorted([dead.number, legacy.number])
    trials = {t.number: t for t in _study(url).trials}
    for number in (dead.number, legacy.number):
        assert trials[number].state == State.FAIL
        assert trials[number].user_attrs["condsearch.error"].startswith("stale:")
    assert trials[alive.number].state == State.RUNNING
    assert trials[young.number].state == State.RUNNING
    runs = {r: client.get_run(r) for r in (dead_run, legacy_run, alive_run)}
    for run in (dead_run, legacy_run):
        assert runs[run].info.status == "KILLED"
        assert runs[run].data.tags["condsearch.error"].startswith("stale:")
    assert runs[alive_run].info.status == "RUNNING"


def test_the_grace_period_comes_from_the_environment(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/study.db"
    study = _study(url)
    trial = study.ask()
    record_heartbeat(study, trial_id(trial))
    time.sleep(2.2)
    assert fail_stale_trials(study) == []  # the default grace period is 60 s
    monkeypatch.setenv("CONDSEARCH_GRACE_S", "1")
    assert fail_stale_trials(study) == [trial.number]
    monkeypatch.setenv("CONDSEARCH_GRACE_S", "soon")
    with pytest.raises(ValueError, match="CONDSEARCH_GRACE_S"):
        fail_stale_trials(_study(url))


def test_three_search_processes_share_one_study(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    env = {**os.environ, "CONDSEARCH_HEARTBEAT_S": "1", "CONDSEARCH_GRACE_S": "6",
           "PYTHONUNBUFFERED": "1"}
    procs = []
    for i in range(3):
        if i:
            time.sleep(2)
        cmd = [sys.executable, "-m", "condsearch", "search", str(SPACE), "--storage", url,
               "--workdir", str(tmp_path / f"w{i}"), "--trials", "2", "--seed", str(11 * (i + 1)),
               "--set", "train.epochs=1", "--set", "task.train_limit=200", "--quiet"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err

    study = optuna.load_study(study_name="digits_early_exit", storage=url)
    trials = study.trials
    trained = [t for t in trials if DERIVED_FROM not in t.user_attrs]
    assert len(trained) == 6
    assert all(t.state == State.COMPLETE for t in trained), [
        (t.number, t.state, t.user_attrs.get("condsearch.error")) for t in trained]
    assert not [t for t in trials if "condsearch.error" in t.user_attrs]
    derived = [t for t in trials if DERIVED_FROM in t.user_attrs]
    assert derived and all(t.state == State.COMPLETE for t in derived)

    # each workdir's MLflow store holds the runs of the trials its process trained
    by_run = {t.user_attrs["condsearch.run_id"]: t for t in trained}
    seen = 0
    for i in range(3):
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / f'w{i}'}/mlflow.db")
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.`condsearch.role` = 'trial'")
        assert len(runs) == 2
        for run in runs:
            assert run.info.status == "FINISHED"
            assert run.info.run_id in by_run
            assert run.data.tags["condsearch.trial"] == str(by_run[run.info.run_id].number)
            seen += 1
    assert seen == 6
