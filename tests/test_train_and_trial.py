"""Training one candidate and the trial function both backends call."""

import math

import pytest
import torch
from helpers import free_port

from condsearch.data import load_task
from condsearch.models import build_model
from condsearch.orchestrate._trial import TrialSpec, run_trial
from condsearch.train import TrainingDiverged, evaluate, fit

TASK = {"dataset": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, "train_limit": 300}


def arch(**train):
    return {
        "model": {"backbone": "token_transformer", "dim": 16, "depth": 2, "heads": 4, "patch_size": 4,
                  "components": {"early_exit": {"enabled": True, "every": 1, "threshold": 0.9}}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 5e-3, "eval_batch_size": 64, **train},
    }


def test_fit_learns_and_reports_each_epoch():
    task = load_task(TASK)
    model = build_model(arch(), task)
    before = evaluate(model, task).accuracy
    history = fit(model, task, {**arch()["train"], "epochs": 6}, device=torch.device("cpu"), seed=0)
    assert len(history) == 6
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert evaluate(model, task).accuracy > before


def test_a_step_budget_overrides_epochs():
    task = load_task(TASK)
    model = build_model(arch(), task)
    history = fit(model, task, {**arch()["train"], "steps": 3}, device=torch.device("cpu"), seed=0)
    assert len(history) == 1  # 3 steps of 32 fit inside the first epoch of 300 samples


def test_training_is_repeatable_for_a_seed():
    task = load_task(TASK)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(arch(), task)
        fit(model, task, arch()["train"], device=torch.device("cpu"), seed=7)
        results.append(evaluate(model, task).summary())
    assert results[0] == results[1]


def test_a_diverging_loss_stops_training_with_the_reason():
    task = load_task(TASK)
    model = build_model(arch(), task)
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        with torch.no_grad():
            model.tokenizer.pos.fill_(float("nan"))
        fit(model, task, arch()["train"], device=torch.device("cpu"), seed=0)


def test_run_trial_measures_and_sweeps_without_tracking():
    spec = TrialSpec(number=3, arch=arch(), task=TASK, seed=3,
                     sweep={"early_exit.threshold": [0.5, 0.9, 0.99]})
    result = run_trial(spec)
    assert result.ok, result.error
    assert {"accuracy", "flops", "flops_p90", "params", "latency_ms"} <= set(result.metrics)
    assert result.knobs == {"early_exit.threshold": 0.9}
    # 0.9 is the trained setting itself, so only two derived points
    assert [d.knobs for d in result.derived] == [{"early_exit.threshold": 0.5},
                                                 {"early_exit.threshold": 0.99}]
    low, high = result.derived
    assert low.metrics["flops"] <= result.metrics["flops"] <= high.metrics["flops"]
    assert all(math.isfinite(v) for v in result.values([("accuracy", "maximize"), ("flops", "minimize")]))


def test_run_trial_returns_a_failure_instead_of_raising():
    bad = arch()
    bad["model"]["dim"] = 30  # not divisible by 4 heads
    result = run_trial(TrialSpec(number=0, arch=bad, task=TASK, seed=0, sweep={}))
    assert not result.ok
    assert "not divisible by heads" in result.error
    assert result.values([("accuracy", "maximize")]) is None


def test_an_unreachable_tracking_server_warns_and_the_trial_still_completes(monkeypatch):
    from condsearch.track import TrackingTarget
    from condsearch.track._trial_runs import TrackingUnavailable

    port = free_port()  # a loopback port nobody listens on
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    target = TrackingTarget(f"http://127.0.0.1:{port}", "1", "0" * 32)
    spec = TrialSpec(number=0, arch=arch(epochs=1), task=TASK, seed=0,
                     sweep={"early_exit.threshold": [0.5]}, tracking=target)
    with pytest.warns(TrackingUnavailable, match="still recorded in the study"):
        result = run_trial(spec)
    assert result.ok, result.error
    assert result.run_id is None and len(result.derived) == 1
    assert math.isfinite(result.metrics["accuracy"]) and result.metrics["flops"] > 0
