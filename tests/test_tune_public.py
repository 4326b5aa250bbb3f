"""The public Ray Tune integration (`condsearch.tune`): a user's Tuner with condsearch's trainable
and Searcher under ASHA (Ray's strict metric check on) leaves no RUNNING trial in the study; the
searcher tells PRUNED, FAIL and COMPLETE and survives a checkpoint; a trial resumes from its
checkpoint; joining an unreachable or token-protected cluster fails in one clean line."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import socket
import textwrap
from pathlib import Path

import optuna
import pytest

pytest.importorskip("ray.tune", reason="the Ray Tune integration needs pip install 'condsearch[ray]'")

import condsearch.tune as cst  # noqa: E402
from condsearch.orchestrate import SearchError  # noqa: E402
from condsearch.orchestrate._trial import TrialResult  # noqa: E402
from condsearch.space import parse_space  # noqa: E402
from condsearch.tune._reports import epoch_report, final_report  # noqa: E402

State = optuna.trial.TrialState
DERIVED_FROM = "condsearch.derived_from"

# Candidates differ mostly by learning rate (1e-5 .. 1e-2): after one epoch of 5 steps the
# slow ones are near chance, so ASHA stops some. Seed 6 draws lr 4.8e-3, 9.9e-5, 2.9e-3, 1.3e-5.
SPACE = textwrap.dedent("""\
    name: tune_public
    task: {dataset: digits, train_limit: 300}
    model:
      backbone: token_transformer
      dim: 16
      depth: 1
      patch_size: 4
      components:
        early_exit: {enabled: true}
    train: {epochs: 3, batch_size: 64, eval_batch_size: 128,
            lr: {float: [1.0e-5, 1.0e-2], log: true}}
    sampler: random
    sweep: {early_exit.threshold: [0.6]}
    search: {seed: 6}
    """)


@pytest.fixture(scope="module")
def space():
    return parse_space(SPACE, "tune_public.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the searcher, driven by hand (no cluster) ----------------------------------------------------


def result_for(number: int, run_id: str | None = None) -> TrialResult:
    return TrialResult(number=number, ok=True, run_id=run_id,
                       metrics={"accuracy": 0.5 + number / 100, "flops": 1000.0 + number,
                                "params": 10.0, "latency_ms": 1.0})


def test_the_searcher_tells_complete_pruned_failed_and_leftovers_and_keeps_no_running(space):
    searcher = cst.Searcher(space)
    assert searcher.metric == ["accuracy", "flops"] and searcher.mode == ["max", "min"]
    configs = {tid: searcher.suggest(tid) for tid in ("a", "b", "c", "d", "e", "f")}
    assert set(configs["a"]) == {"number", "arch"} and configs["a"]["number"] == 0
    assert configs["a"]["arch"]["train"]["lr"] > 0
    pickle.loads(pickle.dumps(configs))  # plain data

    objectives = space.objectives
    searcher.on_trial_result("a", epoch_report(1, {"train_loss": 2.0, "val_accuracy": 0.3},
                                               {"flops": 900.0}, objectives, "run-a", 256))
    searcher.on_trial_complete("a", final_report(result_for(0, "run-a"), 3, 1.5, objectives, 360))
    stopped = epoch_report(1, {"train_loss": 2.2, "val_accuracy": 0.1}, {"flops": 800.0},
                           objectives, "run-b", 256)
    searcher.on_trial_result("b", stopped)
    searcher.on_trial_complete("b", stopped)  # what Ray hands over for a scheduler's STOP
    searcher.on_trial_result("c", stopped)
    searcher.on_trial_complete("c", error=True)
    searcher.on_trial_result("d", stopped)
    # HyperBand pauses a trial on its final report and may stop it later with no result.
    searcher.on_trial_result("f", final_report(result_for(5), 3, 1.0, objectives, 360))
    searcher.on_trial_complete("f")
    assert searcher.close_unfinished() == [3, 4]
    searcher.on_trial_complete("d", stopped)  # late news of a told trial is ignored

    trials = {t.number: t for t in searcher.study.trials}
    assert trials[0].state == State.COMPLETE and trials[0].values == [0.5, 1000.0]
    assert trials[0].user_attrs["condsearch.ray_trial_id"] == "a"
    assert trials[1].state == State.PRUNED
    assert trials[1].user_attrs[cst.ATTR_STOPPED_AT] == 1
    last = trials[1].user_attrs[cst.ATTR_LAST_REPORT]
    assert last["accuracy"] == 0.1 and last["flops"] == 800.0 and last["epoch"] == 1
    assert trials[2].state == State.FAIL and "retries" in trials[2].user_attrs["condsearch.error"]
    assert trials[2].user_attrs[cst.ATTR_LAST_REPORT]["accuracy"] == 0.1
    assert trials[3].state == State.FAIL and "ended before" in trials[3].user_attrs[
        "condsearch.error"]
    assert trials[4].state == State.FAIL and cst.ATTR_LAST_REPORT not in trials[4].user_attrs
    assert trials[5].state == State.COMPLETE and trials[5].values == [0.55, 1005.0]
    assert not [t for t in searcher.study.trials if t.state == State.RUNNING]


def test_searcher_checkpoints_hold_no_study_and_restore_into_a_running_search(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = cst.Searcher(space, storage=storage)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", final_report(result_for(0), 3, 1.0, space.objectives, 360))
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    saved = pickle.loads(path.read_bytes())
    assert saved["_study"] is None and saved["_trials"] == {}
    assert not [v for v in saved.values() if isinstance(v, (optuna.Study, optuna.Trial))]

    # A searcher made again on the same storage (a new driver) restores and goes on.
    again = cst.Searcher(space, storage=storage)
    again.restore(str(path))
    again.on_trial_complete("b", final_report(result_for(1), 3, 1.0, space.objectives, 360))
    study = optuna.load_study(study_name=space.name, storage=storage)
    assert [t.state for t in study.trials] == [State.COMPLETE, State.COMPLETE]
    assert again.suggest("c")["number"] == 2

    # Unpickled where its live study is unknown, it reopens the study from its storage URL.
    lost = pickle.loads(pickle.dumps(searcher))
    lost._token = "another-process"
    assert lost.study is not searcher.study and len(lost.study.trials) == 3

    memory = cst.Searcher(space)
    copy = pickle.loads(pickle.dumps(memory))  # same process: finds its live study again
    assert copy.study is memory.study


def test_the_searcher_refuses_a_study_with_other_directions(space):
    study = optuna.create_study(directions=["minimize", "minimize"])
    with pytest.raises(ValueError, match="optimises"):
        cst.Searcher(space, study=study)


# ---- the trainable's resume path (no cluster) -----------------------------------------------------


class FakeSession:
    """`ray.tune`'s report / get_checkpoint, outside Tune: keeps reports and checkpoint copies."""

    def __init__(self, root: Path, resume_from: Path | None = None,
                 stop_after: int | None = None) -> None:
        self.root, self.resume_from, self.stop_after = root, resume_from, stop_after
        self.reports: list[dict] = []
        self.checkpoints: list[Path] = []

    def get_checkpoint(self):
        from ray.tune import Checkpoint

        return None if self.resume_from is None else Checkpoint.from_directory(
            str(self.resume_from))

    def report(self, metrics: dict, checkpoint=None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:  # Ray copies the folder while report runs
            kept = self.root / f"checkpoint_{len(self.checkpoints)}"
            shutil.copytree(checkpoint.path, kept)
            self.checkpoints.append(kept)
        if self.stop_after is not None and metrics.get("epoch") == self.stop_after:
            raise SystemExit(0)  # what Ray does to a trial's thread it stopped


def test_a_checkpointed_trial_resumes_and_ends_as_an_uninterrupted_one(space, tmp_path):
    from condsearch.tune._trainable import TrialPlan, run_planned_trial

    plan = TrialPlan(task=space.task, sweep={}, seed=0, objectives=space.objectives)
    config = {"number": 0, "arch": {
        "model": {"backbone": "token_transformer", "dim": 16, "depth": 1, "patch_size": 4,
                  "components": {"early_exit": {"enabled": True}}},
        "train": {"epochs": 3, "batch_size": 64, "eval_batch_size": 128, "lr": 5e-3}}}

    whole = FakeSession(tmp_path / "whole")
    run_planned_trial(plan, config, whole)
    assert [r["epoch"] for r in whole.reports] == [1, 2, 3]
    for report in whole.reports:  # every report carries the searcher's and ASHA's metrics
        assert {"loss", "accuracy", "flops", "epoch", "flops_samples"} <= set(report)
    assert whole.reports[0]["flops_samples"] == 256 and whole.reports[-1]["flops_samples"] > 256
    assert cst.RESULT not in whole.reports[0] and cst.RESULT in whole.reports[-1]

    first = FakeSession(tmp_path / "first", stop_after=1)
    with pytest.raises(SystemExit):
        run_planned_trial(plan, config, first)
    (saved,) = first.checkpoints
    assert sum(f.stat().st_size for f in saved.iterdir()) < 1_000_000

    resumed = FakeSession(tmp_path / "resumed", resume_from=saved)
    result = run_planned_trial(plan, config, resumed)
    assert result.ok, result.error
    assert [r["epoch"] for r in resumed.reports] == [2, 3], "epochs continue after the checkpoint"
    end, reference = resumed.reports[-1], whole.reports[-1]
    assert math.isfinite(end["accuracy"]) and math.isfinite(end["flops"])
    assert end["accuracy"] == reference["accuracy"] and end["flops"] == reference["flops"]
    assert resumed.reports[0]["loss"] == whole.reports[1]["loss"], "the same schedule and data"


# ---- joining a cluster ----------------------------------------------------------------------------


# What ray.init raises joining a token-authenticated cluster without RAY_AUTH_MODE=token (Ray
# 2.60: a ConnectionError naming the machine's address, the auth error's text in its cause).
RAY_AUTH_CAUSE = (
    "Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
    '  File "python/ray/includes/common.pxi", line 119, in ray._raylet.check_status\n'
    "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is "
    "missing or incorrect. Note: RAY_AUTH_MODE is currently 'disabled' (not 'token').\n")


def ray_connection_error(cause: str) -> ConnectionError:
    try:
        try:
            raise RuntimeError(cause)
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6379") from inner
    except ConnectionError as exc:
        return exc


def test_an_auth_failure_says_to_set_ray_auth_mode(monkeypatch):
    from condsearch.orchestrate._ray import connection_message, is_auth_failure

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    exc = ray_connection_error(RAY_AUTH_CAUSE)
    assert is_auth_failure(exc)
    message = connection_message("10.0.0.5:6379", exc)
    assert "RAY_AUTH_MODE=token" in message and "10.0.0.5:6379" in message
    assert "\n" not in message and "192.0.2.2" not in message
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert "refused this machine's Ray token" in connection_message("10.0.0.5:6379", exc)

    other = ray_connection_error("Failed to connect to GCS within 60 seconds.\nmore text")
    assert not is_auth_failure(other)
    assert connection_message("10.0.0.5:6379", other) == (
        "could not connect to the Ray cluster at 10.0.0.5:6379 (ConnectionError: Failed to "
        "connect to Ray cluster at 192.0.2.2:6379)")


def test_an_address_with_nothing_listening_is_one_clean_search_error(monkeypatch):
    import ray

    from condsearch.orchestrate._ray import _connect

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(SearchError) as info:
        _connect(address)
    message = str(info.value)
    assert "\n" not in message and address in message and "ray start --head" in message
    with pytest.raises(SearchError, match="not host:port"):
        _connect("nowhere")


def test_a_failing_ray_init_becomes_a_search_error(monkeypatch):
    import ray

    from condsearch.orchestrate import _ray as backend

    def refuse(**kwargs):
        raise ray_connection_error(RAY_AUTH_CAUSE)

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(backend, "_check_reachable", lambda address: None)
    with pytest.raises(SearchError, match="set RAY_AUTH_MODE=token") as info:
        backend._connect("10.0.0.5:6379")
    assert info.value.__cause__ is None and info.value.__suppress_context__


# ---- a user's Tuner on a real local Ray -----------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of its own (2 CPUs, no dashboard, 127.0.0.1), shared by this module's tests."""
    import ray

    assert os.environ.get("TUNE_DISABLE_STRICT_METRIC_CHECKING") in (None, "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_users_tuner_under_asha_leaves_pruned_and_complete_trials_and_none_running(
        local_ray, space, tmp_path, tracking_target):
    from mlflow import MlflowClient
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    searcher = cst.Searcher(space, tracking=tracking_target)
    tuner = tune.Tuner(
        cst.trainable(space, tracking_target),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=4,
            scheduler=ASHAScheduler(metric="accuracy", mode="max", grace_period=1, max_t=3)),
        run_config=tune.RunConfig(name="asha", storage_path=str(tmp_path), verbose=0),
    )
    try:
        results = tuner.fit()
    finally:
        leftovers = searcher.close_unfinished()
    assert leftovers == []
    assert not results.errors, results.errors

    trained = [t for t in searcher.study.trials if DERIVED_FROM not in t.user_attrs]
    assert len(trained) == 4
    assert not [t for t in searcher.study.trials if t.state == State.RUNNING]
    pruned = [t for t in trained if t.state == State.PRUNED]
    complete = [t for t in trained if t.state == State.COMPLETE]
    assert pruned, "ASHA stopped no trial early"
    assert complete and len(pruned) + len(complete) == 4
    for trial in pruned:
        last = trial.user_attrs[cst.ATTR_LAST_REPORT]
        assert trial.user_attrs[cst.ATTR_STOPPED_AT] == last["epoch"] < 3
        assert math.isfinite(last["accuracy"]) and last["flops"] > 0
    for trial in complete:
        accuracy, flops = trial.values
        assert 0 <= accuracy <= 1 and flops > 0
        assert trial.user_attrs["condsearch.metrics"]["flops"] == flops
    derived = [t for t in searcher.study.trials if DERIVED_FROM in t.user_attrs]
    assert {t.user_attrs[DERIVED_FROM] for t in derived} == {t.number for t in complete}

    client = MlflowClient(tracking_target.uri)
    for trial in pruned:  # its run id travelled in its reports
        run = client.get_run(trial.user_attrs["condsearch.run_id"])
        assert run.info.status == "KILLED"
        assert run.data.tags[cst.TAG_STOPPED_EARLY] == str(trial.user_attrs[cst.ATTR_STOPPED_AT])
    for trial in complete:
        assert client.get_run(trial.user_attrs["condsearch.run_id"]).info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["hyperband", "median"])
def test_hyperband_and_the_median_rule_leave_no_running_trial(local_ray, space, tmp_path,
                                                                scheduler):
    from ray import tune
    from ray.tune.schedulers import HyperBandScheduler, MedianStoppingRule

    rule = (HyperBandScheduler(metric="accuracy", mode="max", max_t=3, reduction_factor=2)
            if scheduler == "hyperband" else
            MedianStoppingRule(metric="accuracy", mode="max", time_attr="training_iteration",
                               grace_period=1, min_samples_required=1))
    searcher = cst.Searcher(space, sweep=False)
    tuner = tune.Tuner(
        cst.trainable(space, sweep=False),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=4, scheduler=rule),
        run_config=tune.RunConfig(name=scheduler, storage_path=str(tmp_path), verbose=0))
    try:
        results = tuner.fit()
    finally:
        assert searcher.close_unfinished() == []
    assert not results.errors, results.errors
    states = [t.state for t in searcher.study.trials]
    assert len(states) == 4 and set(states) <= {State.COMPLETE, State.PRUNED}
    assert State.COMPLETE in states
