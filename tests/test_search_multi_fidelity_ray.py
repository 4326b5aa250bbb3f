"""Multi-fidelity search on `--backend ray` (the session's Ray head, conftest.ray_head): with
`search.scheduler.mo_asha` the search's MO-ASHA runs as `condsearch.tune.MOASHAScheduler`; a
trial it stops is PRUNED with its rung results, a finished one COMPLETE with its final values
and its last rung, none stays RUNNING; the front, the hypervolume and the MLflow front tags come
from finished trials only; stopped trials' runs end KILLED with why and their rung metrics, as
on the local backend (tests/test_search_multi_fidelity.py). A user's Tune scheduler is refused
while MO-ASHA is on."""

import json
import subprocess
import sys

import optuna
import pytest
from helpers import RAY_ENV, ROOT, load_study, trial_states

from condsearch._names import (
    ATTR_DERIVED_FROM,
    ATTR_METRICS,
    ATTR_RUN,
    ATTR_RUNGS,
    ATTR_STOP_REASON,
    ATTR_STOPPED_AT,
    TAG_STOP_REASON,
    TAG_STOPPED_EARLY,
)
from condsearch.orchestrate._pareto import hypervolume
from condsearch.track._pareto_tags import PARETO_TAG

pytest.importorskip("ray.tune", reason="the ray backend needs pip install 'condsearch[ray]'")

pytestmark = pytest.mark.slow

State = optuna.trial.TrialState
SPACE = ROOT / "search_spaces" / "digits_early_exit.yaml"
MO_ASHA = "search.scheduler={mo_asha: {min_epochs: 1, reduction_factor: 3}}"
#: the issue's rungs (epochs 1, 3 and 9) on smaller candidates and data, two trials at a time
OVERRIDES = ["train.epochs=9", MO_ASHA, "sweep={early_exit.threshold: [0.6]}",
             "task.train_limit=300", "model.depth=2", "model.dim={choice: [16, 32]}",
             "search.concurrency=2", "search.cpus_per_trial=1"]

#: a driver joining the session's Ray head (argv: space, workdir, address, overrides as JSON)
DRIVER = """\
import json, sys
import condsearch as cs

summary = cs.search(sys.argv[1], trials=8, workdir=sys.argv[2], backend="ray",
                    address=sys.argv[3], overrides=json.loads(sys.argv[4]), progress=True)
print(json.dumps({"completed": summary.completed, "pruned": summary.pruned,
                  "failed": summary.failed, "front": [p.number for p in summary.front],
                  "hypervolume": summary.hypervolume, "reference": summary.reference,
                  "tracking_uri": summary.tracking_uri}))
"""


@pytest.fixture(scope="module")
def searched(ray_head, tmp_path_factory):
    """8 trials of the digits early-exit space at 9 epochs under MO-ASHA, on Ray."""
    folder = tmp_path_factory.mktemp("mf_ray")
    (folder / "driver.py").write_text(DRIVER)
    workdir = folder / "run"
    done = subprocess.run([sys.executable, "driver.py", str(SPACE), str(workdir), ray_head,
                           json.dumps(OVERRIDES)], cwd=folder, env=RAY_ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary, done.stderr, workdir, load_study(workdir, "digits_early_exit")


def trained(study, state):
    return [t for t in study.get_trials(states=(state,)) if ATTR_DERIVED_FROM not in t.user_attrs]


def test_stopped_trials_are_pruned_with_their_rungs_and_finished_ones_complete(searched):
    summary, log, _, study = searched
    pruned, complete = trained(study, State.PRUNED), trained(study, State.COMPLETE)
    assert pruned and complete, [t.state for t in study.trials]
    assert not study.get_trials(states=(State.RUNNING, State.WAITING))
    assert len(pruned) + len(complete) == 8
    assert (summary["pruned"], summary["completed"], summary["failed"]) == (
        len(pruned), len(complete), 0)
    for t in pruned:
        rungs = t.user_attrs[ATTR_RUNGS]
        stopped_at = t.user_attrs[ATTR_STOPPED_AT]
        assert stopped_at in (1, 3)
        assert sorted(map(int, rungs)) == [1, 3][: [1, 3].index(stopped_at) + 1]
        last = rungs[str(stopped_at)]["values"]
        metrics = t.user_attrs[ATTR_METRICS]
        assert (last["accuracy"], last["flops"]) == (metrics["accuracy"], metrics["flops"])
        assert 0 <= last["accuracy"] <= 1 and last["flops"] > 0 and metrics["params"] > 0
        assert t.user_attrs[ATTR_STOP_REASON].startswith("stopped at rung ")
        assert f"(epoch {stopped_at})" in t.user_attrs[ATTR_STOP_REASON]
    for t in complete:
        rungs = t.user_attrs[ATTR_RUNGS]
        assert sorted(map(int, rungs)) == [1, 3, 9]
        # the last rung is the trial's full evaluation: its values
        assert [rungs["9"]["values"][n] for n in ("accuracy", "flops")] == t.values
    # one progress line a trial, a stopped one's as the local backend prints it
    lines = [line for line in log.splitlines() if "/8 trial " in line]
    assert len(lines) == 8, log[-3000:]
    stopped_lines = [line for line in lines if line.startswith("↓")]
    assert len(stopped_lines) == len(pruned)
    assert all(": stopped after epoch " in line and "| rungs e1:" in line
               for line in stopped_lines)


def test_the_front_and_the_hypervolume_come_from_finished_trials_only(searched):
    summary, _, _, study = searched
    finished = study.get_trials(states=(State.COMPLETE,))
    assert set(summary["front"]) <= {t.number for t in finished}
    reference = [summary["reference"]["accuracy"], summary["reference"]["flops"]]
    assert summary["hypervolume"] == pytest.approx(
        hypervolume([t.values for t in finished], ["maximize", "minimize"], reference))


def test_mlflow_runs_of_stopped_trials_are_killed_tagged_and_carry_rung_metrics(searched):
    from mlflow import MlflowClient

    summary, _, _, study = searched
    client = MlflowClient(summary["tracking_uri"])
    for t in trained(study, State.PRUNED):
        run = client.get_run(t.user_attrs[ATTR_RUN])
        assert run.data.tags["condsearch.trial"] == str(t.number)
        assert run.info.status == "KILLED"
        assert run.data.tags[TAG_STOPPED_EARLY] == str(t.user_attrs[ATTR_STOPPED_AT])
        assert run.data.tags[TAG_STOP_REASON] == t.user_attrs[ATTR_STOP_REASON]
        for metric in ("rung_accuracy", "rung_flops"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted(m.step for m in history) == sorted(map(int, t.user_attrs[ATTR_RUNGS]))
        assert run.data.tags.get(PARETO_TAG) != "true"
    for t in trained(study, State.COMPLETE):
        run = client.get_run(t.user_attrs[ATTR_RUN])
        assert run.info.status == "FINISHED" and TAG_STOPPED_EARLY not in run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "rung_flops")]
        assert sorted(steps) == [1, 3]  # the last rung is the run's final metrics
    # the front's tags are on finished trials' runs (and their derived points') only
    experiment = client.get_run(trained(study, State.COMPLETE)[0].user_attrs[ATTR_RUN]
                                ).info.experiment_id
    tagged = {r.info.run_id for r in client.search_runs(
        [experiment], f"tags.`{PARETO_TAG}` = 'true'")}
    finished_runs = {t.user_attrs.get(ATTR_RUN) for t in study.get_trials(states=(State.COMPLETE,))}
    assert tagged and tagged <= finished_runs


def test_a_users_tune_scheduler_is_refused_while_mo_asha_is_on(tmp_path):
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    import condsearch as cs
    from condsearch.orchestrate import SearchError

    users = tune.TuneConfig(scheduler=ASHAScheduler(metric="accuracy", mode="max"))
    with pytest.raises(SearchError, match="tune_config may not set scheduler while "
                       "search.scheduler.mo_asha is on") as info:
        cs.search(SPACE, trials=1, workdir=tmp_path / "run", backend="ray", progress=False,
                  overrides=OVERRIDES, tune_config=users)
    assert "\n" not in str(info.value)
    assert not ray.is_initialized()  # refused before joining or starting Ray
    assert trial_states(tmp_path / "run") == []
