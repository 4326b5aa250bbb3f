"""Multi-fidelity search on the local backend: with `search.scheduler.mo_asha`, MO-ASHA judges
each trial at its rungs, a trial it stops is PRUNED with its rung results, a finished one is
COMPLETE with its final values, and the front, the hypervolume and the MLflow tags come from
finished trials (and their derived knob points) only. An interrupted search resumes with every
rung result it had."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import ROOT, cli, load_study, problems

from condsearch._names import (
    ATTR_DERIVED_FROM,
    ATTR_METRICS,
    ATTR_RUNGS,
    ATTR_STOP_REASON,
    ATTR_STOPPED_AT,
    TAG_STOP_REASON,
    TAG_STOPPED_EARLY,
)
from condsearch.orchestrate import search
from condsearch.orchestrate._pareto import hypervolume
from condsearch.orchestrate._rungs import make_scheduler, replay
from condsearch.space import load_space
from condsearch.track._pareto_tags import PARETO_TAG

State = optuna.trial.TrialState
SPACE = ROOT / "search_spaces" / "digits_early_exit.yaml"
MO_ASHA = "search.scheduler={mo_asha: {min_epochs: 1, reduction_factor: 3}}"
#: the issue's setting: rungs at epochs 1, 3 and 9
OVERRIDES = ["train.epochs=9", MO_ASHA, "sweep={early_exit.threshold: [0.6, 0.9]}"]


# ---- the YAML --------------------------------------------------------------------------------------

BASE = """\
name: s
task: {dataset: digits}
model: {backbone: token_transformer, dim: 16, depth: 1, patch_size: 4}
train: {epochs: 9}
search:
  scheduler: {mo_asha: {min_epochs: 1, reduction_factor: 3}}
"""


def test_mo_asha_takes_its_defaults_and_its_last_rung_is_train_epochs():
    space = load_space(SPACE, ["train.epochs=9", "search.scheduler=mo_asha"])
    assert space.mo_asha == {"min_epochs": 1, "reduction_factor": 3.0, "brackets": 1,
                             "max_epochs": 9}
    assert make_scheduler(space, 0).levels == (1, 3, 9)
    assert load_space(SPACE).mo_asha is None and make_scheduler(load_space(SPACE), 0) is None


@pytest.mark.parametrize(("override", "expected"), [
    ("search.scheduler.mo_asha.min_epochs=12",
     "search.scheduler.mo_asha.min_epochs: min_epochs 12 is above train.epochs 9"),
    ("search.scheduler.mo_asha.reduction_factor=1",
     "search.scheduler.mo_asha.reduction_factor: must be > 1"),
    ("search.scheduler.mo_asha.brackets=4",
     "search.scheduler.mo_asha.brackets: brackets 4 is more than the 3 rung(s) [1, 3, 9]"),
    ("train.steps=100", "train.steps: search.scheduler.mo_asha judges trials at epochs"),
    ("train.epochs={choice: [3, 9]}",
     "train.epochs: search.scheduler.mo_asha needs one train.epochs for every trial"),
    ("search.scheduler={asha: {}}", "search.scheduler.asha: unknown key; did you mean 'mo_asha'"),
])
def test_a_wrong_scheduler_setting_is_named_at_its_line(override, expected):
    found = problems(BASE, [override])
    assert len(found) == 1 and expected in found[0], found


# ---- one search, many checks ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A local search with MO-ASHA: 8 trials of the digits early-exit space at 9 epochs."""
    workdir = tmp_path_factory.mktemp("mf") / "run"
    summary = search(SPACE, trials=8, workdir=workdir, overrides=OVERRIDES, progress=False)
    return summary, workdir, load_study(workdir, "digits_early_exit")


def trained(study, state):
    return [t for t in study.get_trials(states=(state,)) if ATTR_DERIVED_FROM not in t.user_attrs]


@pytest.mark.slow
def test_stopped_trials_are_pruned_with_their_rung_results_and_finished_ones_complete(searched):
    summary, _, study = searched
    pruned, complete = trained(study, State.PRUNED), trained(study, State.COMPLETE)
    assert pruned and complete, [t.state for t in study.trials]
    assert not study.get_trials(states=(State.RUNNING, State.WAITING))
    assert (summary.pruned, summary.completed, summary.failed) == (len(pruned), len(complete), 0)
    for t in pruned:
        rungs = t.user_attrs[ATTR_RUNGS]
        stopped_at = t.user_attrs[ATTR_STOPPED_AT]
        assert stopped_at in (1, 3) and max(map(int, rungs)) == stopped_at
        assert sorted(map(int, rungs)) == [1, 3][: [1, 3].index(stopped_at) + 1]
        last = rungs[str(stopped_at)]["values"]
        metrics = t.user_attrs[ATTR_METRICS]
        assert (last["accuracy"], last["flops"]) == (metrics["accuracy"], metrics["flops"])
        assert 0 <= last["accuracy"] <= 1 and last["flops"] > 0
        assert f"epoch {stopped_at}" in t.user_attrs[ATTR_STOP_REASON]
    for t in complete:
        rungs = t.user_attrs[ATTR_RUNGS]
        assert sorted(map(int, rungs)) == [1, 3, 9]
        # the last rung is the trial's full evaluation: its values
        assert [rungs["9"]["values"][n] for n in ("accuracy", "flops")] == t.values


@pytest.mark.slow
def test_the_front_and_the_hypervolume_come_from_finished_trials_only(searched):
    summary, workdir, study = searched
    finished = {t.number for t in study.get_trials(states=(State.COMPLETE,))}
    assert {p.number for p in summary.front} <= finished
    points = [t.values for t in study.get_trials(states=(State.COMPLETE,))]
    reference = [summary.reference["accuracy"], summary.reference["flops"]]
    assert summary.hypervolume == pytest.approx(
        hypervolume(points, ["maximize", "minimize"], reference))

    shown = json.loads(cli("pareto", "--workdir", str(workdir), "--json").stdout)
    assert {r["number"] for r in shown} == {p.number for p in summary.front}
    everything = json.loads(cli("pareto", "--workdir", str(workdir), "--json", "--all").stdout)
    stopped = {r["number"]: r for r in everything if r["stopped_at"] is not None}
    assert set(stopped) == {t.number for t in trained(study, State.PRUNED)}
    assert not any(r["on_front"] for r in stopped.values())
    table = cli("pareto", "--workdir", str(workdir), "--all").stdout
    assert "stopped, epoch" in table


@pytest.mark.slow
def test_mlflow_runs_of_stopped_trials_are_killed_tagged_and_carry_rung_metrics(searched):
    _, workdir, study = searched
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.condsearch.role = 'trial'")
    by_trial = {r.data.tags["condsearch.trial"]: r for r in runs}
    for t in trained(study, State.PRUNED):
        run = by_trial[str(t.number)]
        assert run.info.status == "KILLED"
        assert run.data.tags[TAG_STOPPED_EARLY] == str(t.user_attrs[ATTR_STOPPED_AT])
        assert run.data.tags[TAG_STOP_REASON] == t.user_attrs[ATTR_STOP_REASON]
        history = client.get_metric_history(run.info.run_id, "rung_accuracy")
        assert sorted(m.step for m in history) == sorted(map(int, t.user_attrs[ATTR_RUNGS]))
        assert run.data.tags.get(PARETO_TAG) != "true"
    for t in trained(study, State.COMPLETE):
        run = by_trial[str(t.number)]
        assert run.info.status == "FINISHED" and TAG_STOPPED_EARLY not in run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "rung_flops")]
        assert sorted(steps) == [1, 3]  # the last rung is the run's final metrics


@pytest.mark.slow
def test_a_resumed_search_replays_every_rung_result_into_its_scheduler(searched, tmp_path):
    _, _, study = searched
    space = load_space(SPACE, OVERRIDES)
    scheduler = make_scheduler(space, 0)
    replayed = replay(scheduler, study.get_trials())
    judged = [t for t in study.get_trials() if ATTR_RUNGS in t.user_attrs]
    assert replayed == sum(len(t.user_attrs[ATTR_RUNGS]) for t in judged)
    for t in trained(study, State.PRUNED):
        assert scheduler.stopped_at(t.number) == t.user_attrs[ATTR_STOPPED_AT]
    for t in trained(study, State.COMPLETE):
        assert scheduler.finished(t.number)


# ---- Ctrl-C ----------------------------------------------------------------------------------------

def rung_results(workdir: Path) -> dict[int, dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return {t.number: t.user_attrs[ATTR_RUNGS] for t in load_study(
        workdir, "digits_early_exit").trials if ATTR_RUNGS in t.user_attrs}


@pytest.mark.slow
def test_ctrl_c_keeps_every_rung_result_and_the_resumed_search_goes_on_from_them(tmp_path):
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "condsearch", "search", str(SPACE), "--workdir",
               str(workdir), "--trials", "40", "--quiet",
               *[arg for o in OVERRIDES for arg in ("--set", o)]]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    seen: dict[int, dict] = {}
    while time.monotonic() < deadline and len(seen) < 5:
        assert proc.poll() is None, proc.communicate()[1]
        if (workdir / "study.db").exists():
            try:
                seen = rung_results(workdir)
            except Exception:  # noqa: BLE001 - the study is being created
                seen = {}
        time.sleep(0.3)
    assert len(seen) >= 5, "no 5 trials reached a rung in time"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    kept = rung_results(workdir)
    for number, rungs in seen.items():
        # a trial may have reached another rung between the look and the interrupt
        assert {e: r for e, r in kept[number].items() if e in rungs} == rungs
    before = sum(len(r) for r in kept.values())

    done = subprocess.run([*command[:command.index("--trials") + 1], "2", *command[
        command.index("--trials") + 2:]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = rung_results(workdir)
    assert all(after[n] == r for n, r in kept.items() if n in after)
    assert sum(len(r) for r in after.values()) > before
    trials = load_study(workdir, "digits_early_exit").trials
    assert not [t for t in trials if t.state == State.RUNNING]
    assert all(math.isfinite(v) for t in trials if t.state == State.COMPLETE for v in t.values)


# ---- the user's own study.optimize -------------------------------------------------------------

@pytest.mark.slow
def test_the_optuna_objective_prunes_what_mo_asha_stops_and_resumes_from_the_study(tmp_path):
    import condsearch

    space = load_space(SPACE, ["train.epochs=9", MO_ASHA, "sweep={}", "task.train_limit=400"])
    storage = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(directions=["maximize", "minimize"], storage=storage,
                                study_name="mine", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(condsearch.Objective(space), n_trials=5)
    states = [t.state for t in study.trials]
    assert State.PRUNED in states and State.COMPLETE in states, states
    for t in study.get_trials(states=(State.PRUNED,)):
        assert t.user_attrs[ATTR_STOPPED_AT] == max(map(int, t.user_attrs[ATTR_RUNGS]))
    before = {t.number: t.user_attrs[ATTR_RUNGS] for t in study.trials}

    # a new objective (another process) replays the study's rung results before it judges
    again = condsearch.Objective(space)
    study.optimize(again, n_trials=1)
    scheduler = again._schedulers["mine"]
    assert sum(scheduler.rung_counts().values()) >= sum(len(r) for r in before.values())
    assert {t.number: t.user_attrs[ATTR_RUNGS] for t in study.trials if t.number in before} \
        == before
