"""Data-parallel trials on `--backend ray` (`search.workers_per_trial: 2`, issue 17) on the
session's 2-CPU Ray head (conftest.ray_head): each trial trains on two Ray Train workers under a
driver that holds no CPU. Every trial completes and says so in MLflow (world size 2, its
devices); `pareto` and `export` read the study as for any search, and the exported model
re-evaluates to its recorded accuracy and FLOPs. A Ray Train worker killed mid-trial is
survived: its group restarts from the last epoch's checkpoint, and the trial completes once.
MO-ASHA stops data-parallel trials as it stops others (PRUNED with their rungs, none RUNNING,
no worker left behind). A trial's workers the cluster cannot place are refused at the key's
line before anything is written."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from helpers import (
    RAY_ENV,
    ROOT,
    load_study,
    processes_named,
    trained_trials,
    trial_states,
    wait_until,
)

from condsearch._names import ATTR_RUNGS, ATTR_STOPPED_AT

pytest.importorskip("ray.tune", reason="the ray backend needs pip install 'condsearch[ray]'")

pytestmark = pytest.mark.slow

State = optuna.trial.TrialState
SPACE = ROOT / "search_spaces" / "digits_moe.yaml"
#: the space's own candidates, shortened: small data, few epochs, MoE on (so the knob sweep's
#: derived points and the routing counters are data-parallel too), two workers a trial
SHORT = ["task.train_limit=300", "model.components.moe.enabled=true",
         "search.workers_per_trial=2", "search.max_retries=2"]


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def search_command(workdir: Path, address: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "condsearch", "search", str(SPACE), "--backend", "ray",
            "--address", address, "--workdir", str(workdir), "--quiet", *extra]


def train_workers() -> list[int]:
    """PIDs of the Ray Train worker processes running now (a data-parallel trial's ranks)."""
    return processes_named("ray::RayTrainWorker")


def test_a_search_with_two_workers_per_trial_completes_exports_and_reevaluates(
        ray_head, tmp_path):
    workdir = tmp_path / "run"
    started = time.monotonic()
    done = subprocess.run(search_command(workdir, ray_head, "--trials", "2",
                                         *sets(*SHORT, "train.epochs=1")),
                          capture_output=True, text=True, timeout=600, env=RAY_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    seconds = time.monotonic() - started

    study = load_study(workdir, "digits_moe")
    trials = trained_trials(study)
    assert len(trials) == 2 and all(t.state == State.COMPLETE for t in trials), seconds
    derived = [t for t in study.trials if "condsearch.derived_from" in t.user_attrs]
    assert derived, "the knob sweep's points are recorded as trials of their own"
    assert not study.get_trials(states=(State.RUNNING, State.FAIL))

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["digits_moe"])
    trial_runs = runs[runs["tags.condsearch.role"] == "trial"]
    assert len(trial_runs) == 2 and set(trial_runs["status"]) == {"FINISHED"}
    assert set(trial_runs["tags.condsearch.world_size"]) == {"2"}
    for devices in trial_runs["tags.condsearch.devices"]:
        assert len(devices.split(",")) == 2 and all(d.startswith("cpu@") for d in
                                                    devices.split(","))
    assert len(runs[runs["tags.condsearch.role"] == "derived"]) == len(derived)

    front = subprocess.run([sys.executable, "-m", "condsearch", "pareto", "--workdir",
                            str(workdir), "--json"], capture_output=True, text=True, timeout=300)
    assert front.returncode == 0, front.stderr[-3000:]
    assert json.loads(front.stdout)

    best = max(trials, key=lambda t: t.values[0])
    out = tmp_path / "exported"
    exported = subprocess.run([sys.executable, "-m", "condsearch", "export", "--workdir",
                               str(workdir), "--trial", str(best.number), "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-3000:]

    from condsearch import evaluate_exported

    # two workers trained it; one process re-evaluates it to the same numbers
    again = evaluate_exported(out, "val")
    assert again["accuracy"] == pytest.approx(best.values[0])
    assert again["flops"] == pytest.approx(best.values[1], rel=1e-6)


def test_a_train_worker_killed_mid_trial_is_survived_and_the_trial_completes_once(
        ray_head, mlflow_server, tmp_path):
    workdir = tmp_path / "run"
    name = "dp_worker_killed"
    # MO-ASHA's first rung (epoch 1) keeps the trial's epoch-1 result on the study as soon as
    # its report, which carries the epoch's checkpoint, reaches Tune: the moment to kill
    proc = subprocess.Popen(
        search_command(workdir, ray_head, "--trials", "1", "--tracking-uri", mlflow_server,
                       "--experiment", name,
                       *sets(*SHORT, "train.epochs=4", "task.train_limit=600",
                             "model.dim=32", "model.depth=3",
                             "search.scheduler={mo_asha: {min_epochs: 1, reduction_factor: 3}}")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=RAY_ENV)

    def trained_an_epoch() -> bool:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if not (workdir / "study.db").exists():
            return False
        try:
            trials = load_study(workdir, "digits_moe").trials
        except Exception:  # noqa: BLE001 - the study is not created yet
            return False
        return any("1" in (t.user_attrs.get(ATTR_RUNGS) or {}) for t in trials)

    wait_until(trained_an_epoch, 300, "no data-parallel trial finished an epoch")
    victims = train_workers()
    assert len(victims) == 2, "the trial ended before a worker could be killed; lengthen it"
    os.kill(victims[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]

    study = load_study(workdir, "digits_moe")
    (trial,) = trained_trials(study)
    assert trial.state == State.COMPLETE
    assert [s for _, s in trial_states(workdir)].count("FAIL") == 0
    client = mlflow.MlflowClient(mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=[name])
    trial_runs = runs[runs["tags.condsearch.role"] == "trial"]
    assert sorted(trial_runs["status"]) == ["FINISHED", "KILLED"], "one attempt killed, one done"
    finished = trial_runs[trial_runs["status"] == "FINISHED"]["run_id"].item()
    steps = sorted(m.step for m in client.get_metric_history(finished, "train_loss"))
    assert steps and steps[0] > 1 and steps[-1] == 4, "the restart resumed after an epoch"
    assert trial.user_attrs["condsearch.run_id"] == finished
    wait_until(lambda: not train_workers(), 60, "the Ray Train workers did not end")


#: MO-ASHA with rungs at epochs 1 and 2, keeping the better half at each
MO_ASHA = "search.scheduler={mo_asha: {min_epochs: 1, reduction_factor: 2}}"


def test_mo_asha_stops_data_parallel_trials_and_leaves_none_running(ray_head, tmp_path):
    workdir = tmp_path / "run"
    done = subprocess.run(search_command(workdir, ray_head, "--trials", "3",
                                         *sets(*SHORT, "train.epochs=2", MO_ASHA,
                                               "sweep={moe.eval_capacity_factor: [1.0]}")),
                          capture_output=True, text=True, timeout=600, env=RAY_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load_study(workdir, "digits_moe")
    trials = trained_trials(study)
    pruned = [t for t in trials if t.state == State.PRUNED]
    complete = [t for t in trials if t.state == State.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 3, [t.state for t in trials]
    assert not study.get_trials(states=(State.RUNNING, State.WAITING))
    for t in pruned:
        assert t.user_attrs[ATTR_STOPPED_AT] == 1
        assert sorted(map(int, t.user_attrs[ATTR_RUNGS])) == [1]
    for t in complete:
        assert sorted(map(int, t.user_attrs[ATTR_RUNGS])) == [1, 2]
    wait_until(lambda: not train_workers(), 60, "a stopped trial's Ray Train workers live on")


def test_more_workers_than_the_cluster_places_are_refused_at_the_keys_line(ray_head, tmp_path):
    workdir = tmp_path / "run"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.read_text().replace("search: {trials: 16, seed: 0}",
                                               "search: {trials: 16, seed: 0,\n"
                                               "         workers_per_trial: 3}"))
    line = space.read_text().splitlines().index("         workers_per_trial: 3}") + 1
    done = subprocess.run([sys.executable, "-m", "condsearch", "search", str(space), "--backend",
                           "ray", "--address", ray_head, "--workdir", str(workdir), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=RAY_ENV)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert lines == [f"{space}:{line}: search.workers_per_trial: 3 workers of 1 CPU each cannot "
                     f"be placed at once: the Ray cluster at {ray_head} holds 2 CPUs in 1 node, "
                     "room for 2 worker(s); lower workers_per_trial (or cpus_per_trial)"]
    assert not workdir.exists()
