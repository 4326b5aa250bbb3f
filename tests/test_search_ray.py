"""The Ray backend on a real Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs) with a real
`mlflow server` on loopback: the search completes, survives a killed worker and a killed driver,
and its results read back through Optuna, MLflow and `condsearch export` from elsewhere."""

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
    load_study,
    processes_named,
    trained_trials,
    trial_states,
    wait_until,
)

pytest.importorskip("ray.tune", reason="the ray backend needs pip install 'condsearch[ray]'")

# Every test runs searches on the session's Ray head (conftest.ray_head) and MLflow server.
pytestmark = pytest.mark.slow

SPACE = """\
name: NAME
task: {dataset: digits, train_limit: 400}
model:
  backbone: token_transformer
  dim: {choice: [16, 24]}
  depth: 2
  patch_size: 4
  components:
    early_exit: {enabled: {choice: [true, false]}}
train: {epochs: EPOCHS, batch_size: 32, eval_batch_size: 128}
sampler: random
sweep: {early_exit.threshold: [0.6]}
search: {trials: 4, concurrency: 2, cpus_per_trial: 1, max_retries: 2}
"""
State = optuna.trial.TrialState


def write_space(tmp_path: Path, name: str, epochs: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPACE.replace("NAME", name).replace("EPOCHS", str(epochs)))
    return path


def search_command(space: Path, workdir: Path, address: str, uri: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "condsearch", "search", str(space), "--backend", "ray",
            "--address", address, "--tracking-uri", uri, "--workdir", str(workdir), "--quiet",
            *extra]


def test_a_ray_search_with_two_concurrent_trials_reads_back_and_exports_from_elsewhere(
        ray_head, mlflow_server, tmp_path):
    space, workdir = write_space(tmp_path, "ray_basic", 1), tmp_path / "run"
    done = subprocess.run(search_command(space, workdir, ray_head, mlflow_server),
                          capture_output=True, text=True, timeout=600, env=RAY_ENV)
    assert done.returncode == 0, done.stderr[-3000:]

    study = load_study(workdir, "ray_basic")
    trials = trained_trials(study)
    assert len(trials) == 4 and all(t.state == State.COMPLETE for t in trials)
    assert all(t.user_attrs.get("condsearch.ray_trial_id") for t in trials)
    assert len({t.user_attrs["condsearch.ray_trial_id"] for t in trials}) == 4

    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["ray_basic"])
    parent = runs[runs["tags.condsearch.role"] == "search"]
    trial_runs = runs[runs["tags.condsearch.role"] == "trial"]
    assert len(parent) == 1 and len(trial_runs) == 4
    assert set(trial_runs["tags.mlflow.parentRunId"]) == set(parent["run_id"])
    assert set(trial_runs["status"]) == {"FINISHED"}
    assert trial_runs["metrics.accuracy"].notna().all() and trial_runs["metrics.flops"].notna().all()
    assert set(runs["tags.condsearch.pareto"].dropna()) <= {"true", "false"}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    best = max(trials, key=lambda t: t.values[0])
    out = elsewhere / "exported"
    storage = f"sqlite:///{workdir / 'study.db'}"  # the study and the server: no workdir needed
    front = subprocess.run([sys.executable, "-m", "condsearch", "pareto", "--storage", storage,
                            "--json"], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert front.returncode == 0, front.stderr[-3000:]
    assert json.loads(front.stdout)
    exported = subprocess.run(
        [sys.executable, "-m", "condsearch", "export", "--storage", storage, "--trial",
         str(best.number), "--out", str(out)], cwd=elsewhere, capture_output=True, text=True,
        timeout=300)
    assert exported.returncode == 0, exported.stderr[-3000:]
    recorded = json.loads((out / "metrics.json").read_text())["metrics"]
    assert recorded["accuracy"] == pytest.approx(best.values[0])

    from condsearch import evaluate_exported

    again = evaluate_exported(out, "val")
    assert again["accuracy"] == pytest.approx(best.values[0])
    assert again["flops"] == pytest.approx(best.values[1], rel=1e-6)


def ray_workers() -> list[int]:
    """PIDs of Ray worker processes currently running a trial."""
    return processes_named("ray::ImplicitFunc")


def test_a_worker_killed_mid_trial_is_retried_and_the_search_completes(
        ray_head, mlflow_server, tmp_path):
    space, workdir = write_space(tmp_path, "ray_worker_killed", 3), tmp_path / "run"
    proc = subprocess.Popen(search_command(space, workdir, ray_head, mlflow_server,
                                           "--trials", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=RAY_ENV)
    mlflow.set_tracking_uri(mlflow_server)

    def training() -> bool:
        """Every Ray worker holds a trial whose MLflow run has started."""
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        workers = ray_workers()
        if not workers or not mlflow.get_experiment_by_name("ray_worker_killed"):
            return False
        runs = mlflow.search_runs(experiment_names=["ray_worker_killed"],
                                  filter_string="tags.condsearch.role = 'trial' "
                                                "and attributes.status = 'RUNNING'")
        return len(runs) >= len(workers)

    wait_until(training, 300, "no trial started training on a Ray worker")
    victims = ray_workers()
    assert victims, "the trials finished before a worker could be killed; lengthen them"
    os.kill(victims[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]

    trials = trained_trials(load_study(workdir, "ray_worker_killed"))
    assert len(trials) == 2 and all(t.state == State.COMPLETE for t in trials)
    runs = mlflow.search_runs(experiment_names=["ray_worker_killed"])
    trial_runs = runs[runs["tags.condsearch.role"] == "trial"]
    assert sorted(trial_runs["status"]).count("FINISHED") == 2
    assert "KILLED" in set(trial_runs["status"]), "the killed attempt's run is closed as KILLED"


def test_a_killed_driver_loses_no_completed_trial_and_the_rerun_resumes(
        ray_head, mlflow_server, tmp_path):
    space, workdir = write_space(tmp_path, "ray_driver_killed", 2), tmp_path / "run"
    proc = subprocess.Popen(search_command(space, workdir, ray_head, mlflow_server,
                                           "--trials", "20"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=RAY_ENV)

    def completed() -> int:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        return sum(s == "COMPLETE" for _, s in trial_states(workdir))

    wait_until(lambda: completed() >= 2, 400, "no 2 completed trials")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    before = {t.number: t.values for t in load_study(workdir, "ray_driver_killed").trials
              if t.state == State.COMPLETE}

    # The abandoned trials are failed once older than the stale-trial grace period (60 s by
    # default; Ray trials carry no heartbeat of their own): 1 s here.
    time.sleep(2)
    rerun = subprocess.run(search_command(space, workdir, ray_head, mlflow_server, "--trials", "1"),
                           capture_output=True, text=True, timeout=600,
                           env={**RAY_ENV, "CONDSEARCH_GRACE_S": "1"})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = load_study(workdir, "ray_driver_killed")
    after = {t.number: t.values for t in study.trials if t.state == State.COMPLETE}
    assert {n: after.get(n) for n in before} == before, "every completed trial is kept as it was"
    new = [t for t in trained_trials(study) if t.state == State.COMPLETE and t.number not in before]
    assert len(new) == 1, "the rerun ran its one trial, counted once"
    assert not [t for t in study.trials if t.state == State.RUNNING]


def test_a_trial_past_trial_timeout_fails_with_its_reason_on_ray_too(ray_head, mlflow_server,
                                                                     tmp_path):
    # the trial runs in a Ray worker's thread: the deadline's watchdog stops it there
    (tmp_path / "nets.py").write_text(
        "import time\nfrom torch import nn\n\n\n"
        "class Hangs(nn.Linear):\n"
        "    def forward(self, x):\n"
        "        while self.training and len(x) > 8:\n"
        "            time.sleep(0.05)\n"
        "        return super().forward(x.flatten(1))\n\n\n"
        "def sleepy(model, io):\n"
        "    if model['hang']:\n"
        "        return Hangs(64, io['num_classes'])\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, io['num_classes']))\n")
    space = tmp_path / "ray_timeout.yaml"
    space.write_text("name: ray_timeout\ntask: {dataset: digits, train_limit: 200}\n"
                     "model: {backbone: 'nets:sleepy', hang: {choice: [true, false]}}\n"
                     "train: {epochs: 1, batch_size: 32}\nsampler: random\n"
                     "search: {trials: 4, seed: 1, concurrency: 2, trial_timeout: 3}\n")
    workdir = tmp_path / "run"
    done = subprocess.run(search_command(space, workdir, ray_head, mlflow_server),
                          capture_output=True, text=True, timeout=600, env=RAY_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load_study(workdir, "ray_timeout")
    outcomes = {t.params["model.hang"]: set() for t in study.trials}
    for t in study.trials:
        outcomes[t.params["model.hang"]].add((t.state, t.user_attrs.get("condsearch.error")))
    assert outcomes[True] == {(State.FAIL, "TrialTimeout: ran past search.trial_timeout = 3 s")}
    assert outcomes[False] == {(State.COMPLETE, None)}


def test_without_an_address_the_search_runs_its_own_ray_beside_another_one(ray_head, tmp_path):
    # the session's head runs on this machine; ray.init() alone would join it
    space, workdir = write_space(tmp_path, "ray_private", 1), tmp_path / "run"
    command = [sys.executable, "-m", "condsearch", "search", str(space), "--backend", "ray",
               "--workdir", str(workdir), "--trials", "2"]
    env = {k: v for k, v in RAY_ENV.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (note,) = [line for line in done.stderr.splitlines() if "private local Ray" in line]
    assert note.startswith("started a private local Ray instance at ")
    assert ray_head not in note
    assert len(trained_trials(load_study(workdir, "ray_private"))) == 2
    # the other instance is untouched and still serves
    joined = subprocess.run([sys.executable, "-c", "import ray; ray.init(address="
                             f"'{ray_head}'); print(int(ray.cluster_resources()['CPU']))"],
                            capture_output=True, text=True, timeout=120, env=RAY_ENV)
    assert joined.stdout.strip() == "2", joined.stderr[-2000:]
