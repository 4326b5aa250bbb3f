"""The `--backend ray` driver built on condsearch.tune: a user's TuneConfig / RunConfig pieces
are laid over the search's own settings, and the search keeps its searcher and trial count."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray.tune", reason="the ray backend needs pip install 'condsearch[ray]'")

from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402

from condsearch.orchestrate import SearchError  # noqa: E402
from condsearch.orchestrate._ray import _run_config, _tune_config  # noqa: E402

EXECUTION = {"concurrency": 2, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "max_retries": 3}


def test_a_users_tune_config_adds_its_scheduler_and_overrides_field_by_field():
    searcher, scheduler = object(), ASHAScheduler(metric="accuracy", mode="max")
    merged = _tune_config(searcher, 7, EXECUTION, None)
    assert merged.search_alg is searcher and merged.num_samples == 7
    assert merged.max_concurrent_trials == 2 and merged.reuse_actors is True
    merged = _tune_config(searcher, 7, EXECUTION, tune.TuneConfig(
        scheduler=scheduler, max_concurrent_trials=1, time_budget_s=60))
    assert merged.scheduler is scheduler and merged.max_concurrent_trials == 1
    assert merged.time_budget_s == 60 and merged.reuse_actors is True
    assert merged.search_alg is searcher and merged.num_samples == 7


def test_a_users_tune_config_may_not_bring_a_searcher_or_a_trial_count():
    for user in (tune.TuneConfig(num_samples=3), tune.TuneConfig(search_alg=object())):
        with pytest.raises(SearchError, match="tune_config may not set"):
            _tune_config(object(), 7, EXECUTION, user)


def test_a_users_run_config_adds_callbacks_and_keeps_the_search_storage(tmp_path):
    class Seen(tune.Callback):
        pass

    merged = _run_config("space", tmp_path, EXECUTION, None)
    assert merged.name == "space" and Path(merged.storage_path) == (tmp_path / "ray").resolve()
    assert merged.failure_config.max_failures == 3
    assert merged.checkpoint_config.num_to_keep == 1
    callback = Seen()
    merged = _run_config("space", tmp_path, EXECUTION, tune.RunConfig(
        callbacks=[callback], stop={"training_iteration": 2}))
    assert merged.callbacks == [callback] and merged.stop == {"training_iteration": 2}
    assert Path(merged.storage_path) == (tmp_path / "ray").resolve()
    merged = _run_config("space", tmp_path, EXECUTION, tune.RunConfig(
        name="mine", failure_config=tune.FailureConfig(max_failures=1)))
    assert merged.name == "mine" and merged.failure_config.max_failures == 1


DRIVER = """\
import json, sys
from ray import tune
from ray.tune.schedulers import ASHAScheduler
import condsearch as cs

class Seen(tune.Callback):
    def __init__(self):
        self.completed = 0
    def on_trial_complete(self, iteration, trials, trial, **info):
        self.completed += 1

seen = Seen()
summary = cs.search(sys.argv[1], trials=4, workdir=sys.argv[2], backend="ray",
                    address=sys.argv[3], progress=False,
                    tune_config=tune.TuneConfig(scheduler=ASHAScheduler(
                        metric="accuracy", mode="max", grace_period=1, max_t=3)),
                    run_config=tune.RunConfig(callbacks=[seen]))
print(json.dumps({"completed": summary.completed, "seen": seen.completed}))
"""

SPACE = """\
name: ray_asha
task: {dataset: digits, train_limit: 300}
model: {backbone: token_transformer, dim: {choice: [8, 16]}, depth: 2, heads: 2, patch_size: 4}
objectives: [accuracy, flops]
train: {epochs: 3, batch_size: 64, lr: {float: [1.0e-5, 1.0e-2], log: true}}
"""


@pytest.mark.slow
def test_search_on_ray_passes_the_users_scheduler_and_callbacks(ray_head, tmp_path):
    import json
    import subprocess
    import sys

    import optuna
    from helpers import RAY_ENV

    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "driver.py").write_text(DRIVER)
    done = subprocess.run([sys.executable, "driver.py", "space.yaml", "w", ray_head],
                          cwd=tmp_path, env=RAY_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["seen"] == 4
    study = optuna.load_study(study_name="ray_asha", storage=f"sqlite:///{tmp_path / 'w/study.db'}")
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert report["completed"] == sum(t.state == optuna.trial.TrialState.COMPLETE
                                      for t in study.trials)
