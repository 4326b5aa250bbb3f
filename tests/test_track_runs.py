"""A trial's MLflow run: what it holds when it ends, and how many store writes that took."""

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from condsearch.track import TrackingTarget, TrialRun, _trial_runs


@pytest.fixture()
def target(tracking_target) -> TrackingTarget:
    """A search's parent run for the trial runs, in an experiment of the test's own."""
    return tracking_target


@pytest.fixture()
def batches(monkeypatch) -> list[str]:
    """Run ids of every MlflowClient.log_batch call (the real call still goes through)."""
    calls: list[str] = []
    real = MlflowClient.log_batch

    def counted(self, run_id, *args, **kwargs):
        calls.append(run_id)
        return real(self, run_id, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counted)
    return calls


def log_a_trial(run: TrialRun) -> None:
    run.log_params({"model": {"dim": 8, "depth": 2}, "train": {"lr": 0.01}})
    run.set_tags({"condsearch.device": "cpu"})
    for epoch in range(3):
        run.log_metrics({"train_loss": 1.0 / (epoch + 1), "val_accuracy": 0.1 * epoch}, step=epoch)
    run.log_metrics({"accuracy": 0.9, "flops": 1234.0, "latency_ms": float("nan")})


def test_a_trial_run_writes_everything_in_one_batch_when_it_ends(target, batches):
    run = TrialRun(target, "trial-0", {"condsearch.trial": "0", "condsearch.role": "trial"})
    log_a_trial(run)
    assert batches == []  # nothing written before the end of a short trial
    run.end()
    assert batches == [run.run_id]

    client = MlflowClient(target.uri)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.params == {"model.dim": "8", "model.depth": "2", "train.lr": "0.01"}
    assert stored.data.metrics == {"train_loss": pytest.approx(1 / 3), "val_accuracy": 0.2,
                                   "accuracy": 0.9, "flops": 1234.0}  # the NaN is left out
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "train_loss")] == [
        (0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    tags = stored.data.tags
    assert tags["condsearch.device"] == "cpu" and tags["condsearch.role"] == "trial"
    assert tags["mlflow.parentRunId"] == target.parent_run_id
    assert tags["mlflow.runName"] == "trial-0"


def test_a_later_tag_replaces_an_earlier_one_and_a_failure_keeps_what_was_logged(target, batches):
    run = TrialRun(target, "trial-1", {"condsearch.trial": "1"})
    run.log_params({"dim": 8})
    run.set_tags({"condsearch.error": "first"})
    run.set_tags({"condsearch.error": "ValueError: boom", "condsearch.traceback": "..."})
    run.end("FAILED")
    stored = MlflowClient(target.uri).get_run(run.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["condsearch.error"] == "ValueError: boom"
    assert stored.data.params == {"dim": "8"}
    assert batches == [run.run_id]


def test_a_long_trial_writes_what_it_buffered_once_the_interval_has_passed(target, batches,
                                                                          monkeypatch):
    monkeypatch.setattr(_trial_runs, "FLUSH_INTERVAL_S", 0.0)
    run = TrialRun(target, "trial-2", {})
    run.log_metrics({"train_loss": 0.5}, step=0)
    # visible while the run is still going, as a person watching a long trial expects
    assert MlflowClient(target.uri).get_run(run.run_id).data.metrics == {"train_loss": 0.5}
    run.log_metrics({"train_loss": 0.25}, step=1)
    run.end()
    assert len(batches) == 2  # nothing left to write at the end
    history = MlflowClient(target.uri).get_metric_history(run.run_id, "train_loss")
    assert [m.value for m in history] == [0.5, 0.25]


def test_artifacts_land_in_the_runs_own_artifact_root(target, tmp_path):
    run = TrialRun(target, "trial-3", {})
    files = tmp_path / "files"
    files.mkdir()
    (files / "architecture.yaml").write_text("model: {}\n")
    run.log_artifacts(str(files))
    run.end()
    client = MlflowClient(target.uri)
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["architecture.yaml"]
    local = mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="architecture.yaml",
                                                tracking_uri=target.uri)
    assert Path(local).read_text() == "model: {}\n"


def test_without_a_target_every_call_is_a_no_op():
    run = TrialRun(None, "trial-4", {})
    log_a_trial(run)
    run.log_artifacts("/nonexistent")
    run.end()
    assert run.run_id is None


def test_a_tracked_trial_and_its_derived_points_write_one_batch_each(target, batches):
    from condsearch.orchestrate._trial import TrialSpec, run_trial

    arch = {"model": {"backbone": "token_transformer", "dim": 8, "depth": 1, "heads": 2,
                      "patch_size": 4,
                      "components": {"early_exit": {"enabled": True, "every": 1,
                                                    "threshold": 0.9}}},
            "train": {"epochs": 2, "batch_size": 64, "lr": 5e-3, "eval_batch_size": 128}}
    spec = TrialSpec(number=0, arch=arch, task={"dataset": "digits", "train_limit": 200}, seed=0,
                     sweep={"early_exit.threshold": [0.5]}, tracking=target)
    result = run_trial(spec)
    assert result.ok, result.error
    runs = [result.run_id] + [d.run_id for d in result.derived]
    assert sorted(batches) == sorted(runs)  # one write of params, metrics and tags per run
    client = MlflowClient(target.uri)
    trial = client.get_run(result.run_id)
    assert trial.info.status == "FINISHED"
    assert trial.data.params["model.dim"] == "8" and trial.data.tags["condsearch.device"] == "cpu"
    assert trial.data.metrics["accuracy"] == result.metrics["accuracy"]
    assert [m.step for m in client.get_metric_history(result.run_id, "train_loss")] == [1, 2]
    assert {a.path for a in client.list_artifacts(result.run_id)} == {
        "architecture.yaml", "weights.safetensors"}
    derived = client.get_run(result.derived[0].run_id)
    assert derived.data.params == {"early_exit.threshold": "0.5"}
    assert derived.data.tags["mlflow.parentRunId"] == result.run_id
