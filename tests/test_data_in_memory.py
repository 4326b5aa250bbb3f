"""A Task held in memory runs a trial as a spec does; architecture.yaml then records plain data."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from condsearch.data import TaskError, load_task
from condsearch.data._task import IN_MEMORY, make_task
from condsearch.orchestrate._trial import TrialSpec, run_trial
from condsearch.track._trial_runs import TrialRun


def small_task():
    rng = np.random.default_rng(0)
    x = rng.random((150, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2)) > 0.5).astype(np.int64)
    return make_task("mine", x, y, {"seed": 0})


ARCH = {"model": {"backbone": "token_transformer", "dim": 16, "depth": 1, "heads": 2,
                  "patch_size": 4},
        "train": {"epochs": 1, "batch_size": 32, "eval_batch_size": 64}}


def test_run_trial_takes_a_task_object_and_records_it_as_plain_data(monkeypatch):
    written = []
    def keep(self, tmp):
        written.append(Path(tmp, "architecture.yaml").read_text())

    monkeypatch.setattr(TrialRun, "log_artifacts", keep)
    task = small_task()
    result = run_trial(TrialSpec(number=0, arch=ARCH, task=task, sweep={}, seed=0,
                                 tracking=None))
    assert result.ok, result.error
    assert {"accuracy", "flops", "params"} <= set(result.metrics)
    (text,) = written
    arch = yaml.safe_load(text)
    assert arch["task"] == {"dataset": IN_MEMORY, "name": "mine"}
    assert arch["io"] == task.info()


def test_an_in_memory_task_cannot_be_loaded_again_from_its_record():
    with pytest.raises(TaskError, match="pass that Task itself"):
        load_task({"dataset": IN_MEMORY, "name": "mine"})
