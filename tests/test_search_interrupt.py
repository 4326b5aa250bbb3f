"""An interrupted search loses no completed trial, and running it again resumes it."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from helpers import load_study, trial_states

from condsearch.orchestrate import search

# Each test interrupts a running 50-trial search mid-trial (6-30 s each here); the fast set covers
# resuming in test_search_local.
pytestmark = pytest.mark.slow

SPACE = """\
name: interrupted
task: {dataset: digits, train_limit: 400}
model:
  backbone: token_transformer
  dim: 16
  depth: 2
  patch_size: 4
  components:
    early_exit: {enabled: {choice: [true, false]}, threshold: 0.9}
train: {epochs: 2, batch_size: 32, eval_batch_size: 128}
sampler: random
"""

State = optuna.trial.TrialState


def study(workdir: Path) -> optuna.Study:
    return load_study(workdir, "interrupted")


def start(space: Path, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "condsearch", "search", str(space), "--workdir", str(workdir),
         "--trials", "50", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_trials(proc: subprocess.Popen, workdir: Path, complete: int, timeout: float = 240):
    """Block until the study holds `complete` completed trials and another one is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        states = trial_states(workdir)
        if sum(s == "COMPLETE" for _, s in states) >= complete and any(s == "RUNNING" for _, s in states):
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            return {t.number: t.values for t in study(workdir).trials if t.state == State.COMPLETE}
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {complete} completed trials within {timeout} s")


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_ctrl_c_records_the_running_trial_as_failed_and_keeps_the_completed_ones(space, tmp_path):
    workdir = tmp_path / "run"
    proc = start(space, workdir)
    done = wait_for_trials(proc, workdir, complete=2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command to resume" in err and "Traceback" not in err

    trials = study(workdir).trials
    assert {t.number: t.values for t in trials if t.number in done} == done
    assert not [t for t in trials if t.state == State.RUNNING]
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    parent = mlflow.search_runs(search_all_experiments=True,
                                filter_string="tags.`condsearch.role` = 'search'")
    assert list(parent["status"]) == ["KILLED"]

    search(str(space), trials=1, workdir=workdir, progress=False)
    after = study(workdir).trials
    assert {t.number: t.values for t in after if t.number in done} == done
    assert sum(t.state == State.COMPLETE and "condsearch.derived_from" not in t.user_attrs
               for t in after) >= len(done) + 1


def test_a_killed_search_process_leaves_a_running_trial_the_next_run_records_as_failed(space, tmp_path,
                                                                                      monkeypatch):
    workdir = tmp_path / "run"
    proc = start(space, workdir)
    done = wait_for_trials(proc, workdir, complete=1)
    proc.kill()  # no chance to clean up
    proc.communicate(timeout=60)
    running = [t.number for t in study(workdir).trials if t.state == State.RUNNING]
    assert running

    # the next run fails it once its heartbeat is older than the grace period (60 s by default)
    monkeypatch.setenv("CONDSEARCH_GRACE_S", "1")
    time.sleep(2.5)
    summary = search(str(space), trials=1, workdir=workdir, progress=False)
    after = {t.number: t for t in study(workdir).trials}
    assert all(after[n].state == State.FAIL for n in running)
    assert {n: after[n].values for n in done} == done
    assert summary.completed == 1
