"""`condsearch.tune.MOASHAScheduler`: MO-ASHA as a Ray Tune scheduler. Driven by hand with small
fake trials (no cluster): its answers are MO-ASHA's decisions (STOP only for a trial stopped
early, never at the final rung), trials are known by their Optuna number, its state survives
save / restore and pickling, infeasible results rank last; the search's adapter records a
stopped trial PRUNED with its rung results. Then one real Tuner on the session's Ray head, with a
function trainable reporting made-up metrics, stops exactly the trials MO-ASHA says."""

from __future__ import annotations

import json
import math
import pickle
import textwrap
from types import SimpleNamespace

import optuna
import pytest

pytest.importorskip("ray.tune",
                    reason="the Ray Tune integration needs pip install 'condsearch[ray]'")

from ray.tune.schedulers import TrialScheduler  # noqa: E402

from condsearch._names import (  # noqa: E402
    ATTR_METRICS,
    ATTR_RUNGS,
    ATTR_STOP_REASON,
    ATTR_STOPPED_AT,
)
from condsearch.orchestrate import SearchError  # noqa: E402
from condsearch.orchestrate._trial import TrialResult  # noqa: E402
from condsearch.schedule import FINISHED, MOASHA  # noqa: E402
from condsearch.space import parse_space  # noqa: E402
from condsearch.tune import MOASHAScheduler  # noqa: E402
from condsearch.tune._reports import final_report  # noqa: E402

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE
State = optuna.trial.TrialState

SPACE = textwrap.dedent("""\
    name: tune_scheduler
    task: {dataset: digits, train_limit: 100}
    model: {backbone: token_transformer, dim: 16, depth: 1, patch_size: 4}
    train: {epochs: 9, lr: {float: [1.0e-4, 1.0e-2], log: true}}
    constraints: {max_flops: 5000, max_params: 1.0e+6}
    sampler: random
    search:
      seed: 3
      scheduler: {mo_asha: {min_epochs: 1, reduction_factor: 3}}
    """)


@pytest.fixture(scope="module")
def space():
    return parse_space(SPACE, "tune_scheduler.yaml")


def fake_trial(number: int | None, trial_id: str | None = None) -> SimpleNamespace:
    """What the scheduler reads of a Ray trial: its id and the config the searcher suggested."""
    config = {} if number is None else {"number": number, "arch": {}}
    return SimpleNamespace(trial_id=trial_id or f"t{number}", config=config)


def report(epoch: int, accuracy: float, flops: float, **extra) -> dict:
    """An epoch's report as `condsearch.tune.trainable` makes it (the keys MO-ASHA reads)."""
    return {"epoch": epoch, "accuracy": accuracy, "flops": flops, "params": 100.0,
            "loss": 1.0, **extra}


def finished(number: int, accuracy: float, flops: float, ok: bool = True) -> dict:
    """A trial's final report (epoch 9), carrying its whole result."""
    metrics = {"accuracy": accuracy, "flops": flops, "params": 100.0} if ok else {}
    result = TrialResult(number=number, ok=ok, metrics=metrics, error=None if ok else "boom")
    return final_report(result, 9, 0.5, [("accuracy", "maximize"), ("flops", "minimize")], 360)


class Hook:
    """An `on_rung` that remembers its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, trial, decision, result):
        self.calls.append((trial.trial_id, decision, result["epoch"]))


# ---- the rule, as a scheduler -------------------------------------------------------------------

# (trial, accuracy, flops) of six trials at epoch 1, every result feasible
RUNG_1 = [(0, 0.50, 1000.0), (1, 0.40, 1200.0), (2, 0.60, 900.0), (3, 0.20, 3000.0),
          (4, 0.70, 800.0), (5, 0.30, 2000.0)]


def test_its_answers_are_mo_ashas_decisions_stop_exactly_when_it_stops_a_trial(space):
    hook = Hook()
    scheduler = MOASHAScheduler(space, on_rung=hook)
    reference = MOASHA(space.objectives, 1, 3, 9, seed=space.seed)
    assert scheduler.rule.levels == (1, 3, 9) and scheduler.rule.seed == 3
    answers, expected = [], []
    for number, accuracy, flops in RUNG_1:
        answers.append(scheduler.on_trial_result(None, fake_trial(number),
                                                 report(1, accuracy, flops)))
        decision = reference.on_result(number, 1, {"accuracy": accuracy, "flops": flops})
        expected.append(STOP if decision.stop else CONTINUE)
    assert answers == expected
    assert STOP in answers and CONTINUE in answers
    assert [scheduler.rule.stopped(n) for n, *_ in RUNG_1] == [
        reference.stopped(n) for n, *_ in RUNG_1]
    # the hook saw every decision, with the Ray trial and the report
    assert [(t, d.stop, e) for t, d, e in hook.calls] == [
        (f"t{n}", a == STOP, 1) for (n, *_), a in zip(RUNG_1, answers)]
    assert scheduler.rule.rung_counts() == {1: 6, 3: 0, 9: 0}
    # between rungs nothing is judged
    going = [n for (n, *_), a in zip(RUNG_1, answers) if a == CONTINUE]
    assert scheduler.on_trial_result(None, fake_trial(going[0]), report(2, 0.1, 9e9)) == CONTINUE
    assert len(hook.calls) == 6


def test_a_report_of_a_trial_already_stopped_is_answered_stop(space):
    hook = Hook()
    scheduler = MOASHAScheduler(space, on_rung=hook)
    for number, accuracy, flops in RUNG_1:
        scheduler.on_trial_result(None, fake_trial(number), report(1, accuracy, flops))
    stopped = [n for n, *_ in RUNG_1 if scheduler.rule.stopped(n) is not None]
    assert stopped
    calls = len(hook.calls)
    for epoch in (1, 2, 3):  # a result in flight when it was stopped, a repeat of the rung
        assert scheduler.on_trial_result(None, fake_trial(stopped[0]),
                                         report(epoch, 0.99, 1.0)) == STOP
    assert len(hook.calls) == calls


def test_the_final_rung_is_recorded_from_the_result_and_never_answered_stop(space):
    hook = Hook()
    scheduler = MOASHAScheduler(space, on_rung=hook)
    rule = scheduler.rule
    # four trials passed rungs 1 and 3 (recorded, not judged); trial 0 reaches epoch 9 first,
    # trials 1-3 then arrive there with worse values, which would be cut at any other rung
    for number in range(4):
        for epoch in (1, 3):
            rule.record(number, epoch, {"accuracy": 0.9 - number / 10, "flops": 1000.0})
    assert scheduler.on_trial_result(None, fake_trial(0), finished(0, 0.9, 1000.0)) == CONTINUE
    for number in (1, 2, 3):
        answer = scheduler.on_trial_result(None, fake_trial(number),
                                           finished(number, 0.9 - number / 10, 1000.0 + number))
        assert answer == CONTINUE
        assert rule.finished(number) and rule.stopped(number) is None
    assert [d.reason for _, d, _ in hook.calls] == [FINISHED] * 4
    assert rule.results_of(2)[9] == {"values": {"accuracy": 0.7, "flops": 1002.0},
                                     "feasible": True}
    assert rule.rung_counts()[9] == 4
    # a failed trial's final report has nothing to rank: nothing is recorded, and it ends
    rule.record(4, 1, {"accuracy": 0.9, "flops": 1.0})
    rule.record(4, 3, {"accuracy": 0.9, "flops": 1.0})
    assert scheduler.on_trial_result(None, fake_trial(4), finished(4, 0, 0, ok=False)) == CONTINUE
    assert 9 not in rule.results_of(4) and not rule.finished(4) and len(hook.calls) == 4


def test_trials_are_known_by_their_optuna_number_else_by_ray_id(space):
    scheduler = MOASHAScheduler(space)
    scheduler.on_trial_result(None, fake_trial(7, "ray_trial_a"), report(1, 0.5, 100.0))
    scheduler.on_trial_result(None, fake_trial(None, "ray_trial_b"), report(1, 0.5, 100.0))
    assert set(scheduler.rule.results_of(7)) == {1}
    assert set(scheduler.rule.results_of("ray_trial_b")) == {1}
    assert scheduler.rule.results_of("ray_trial_a") == {}
    # with brackets, a trial joins the bracket the local backend draws for the same number
    three = parse_space(SPACE, "s.yaml", ["search.scheduler.mo_asha.brackets=3"])
    local = MOASHA(three.objectives, 1, 3, 9, brackets=3, seed=three.seed)
    on_ray = MOASHAScheduler(three)
    assert [on_ray.rule.bracket_of(n) for n in range(40)] == [
        local.bracket_of(n) for n in range(40)]
    assert len({local.bracket_of(n) for n in range(40)}) > 1


def test_infeasible_results_rank_last(space):
    scheduler = MOASHAScheduler(space)
    # the third result is the most accurate but breaks max_flops (5000): last of three
    assert scheduler.on_trial_result(None, fake_trial(0), report(1, 0.5, 1000.0)) == CONTINUE
    assert scheduler.on_trial_result(None, fake_trial(1), report(1, 0.6, 2000.0)) == CONTINUE
    assert scheduler.on_trial_result(None, fake_trial(2), report(1, 0.99, 6000.0)) == STOP
    assert scheduler.rule.results_of(2)[1]["feasible"] is False
    assert "infeasible" in scheduler.rule.stopped(2).reason
    # so does a result without a finite value (its accuracy was not measured)
    assert scheduler.on_trial_result(None, fake_trial(3), report(1, math.nan, 10.0)) == STOP
    # a result that dominates both others but breaks max_params (1e6) ranks last too ...
    judged = [MOASHAScheduler(space),
              MOASHAScheduler(parse_space(SPACE, "s.yaml", ["constraints={}"]))]
    for s in judged:
        for number, accuracy, flops in [(0, 0.5, 1000.0), (1, 0.6, 2000.0)]:
            s.on_trial_result(None, fake_trial(number), report(1, accuracy, flops))
    best = report(1, 0.99, 500.0, params=2.0e6)
    assert judged[0].on_trial_result(None, fake_trial(2), best) == STOP
    # ... and, unconstrained, goes on
    assert judged[1].on_trial_result(None, fake_trial(2), best) == CONTINUE


def test_save_and_restore_round_trip_and_pickling_leaves_the_hook_behind(space, tmp_path):
    scheduler = MOASHAScheduler(space, on_rung=Hook())
    for number, accuracy, flops in RUNG_1:
        scheduler.on_trial_result(None, fake_trial(number), report(1, accuracy, flops))
    scheduler.on_trial_result(None, fake_trial(6), report(1, math.nan, 10.0))  # NaN kept
    path = tmp_path / "scheduler.json"
    scheduler.save(str(path))
    assert "NaN" in path.read_text() and json.loads(path.read_text()) is not None
    again = MOASHAScheduler(space, seed=99)
    again.restore(str(path))
    assert _same_with_nan(again.rule.state(), scheduler.rule.state())
    assert again.rule.seed == 3  # the saved rule's, not the one it replaced
    # both go on deciding alike
    for s in (scheduler, again):
        s.on_trial_result(None, fake_trial(7), report(1, 0.45, 1100.0))
    assert again.rule.stopped(7) == scheduler.rule.stopped(7)

    copied = pickle.loads(pickle.dumps(scheduler))
    assert copied.on_rung is None and scheduler.on_rung is not None
    assert _same_with_nan(copied.rule.state(), scheduler.rule.state())


def _same_with_nan(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_without_mo_asha_it_says_what_to_set(space):
    plain = parse_space(SPACE, "s.yaml", ["search.scheduler=null"])
    with pytest.raises(ValueError, match=r"sets no search\.scheduler\.mo_asha"):
        MOASHAScheduler(plain)
    rule = MOASHA(plain.objectives, 1, 2, 4)
    assert MOASHAScheduler(plain, rule=rule).rule is rule
    with pytest.raises(ValueError, match="not the space's objectives"):
        MOASHAScheduler(plain, rule=MOASHA([("accuracy", "maximize")], 1, 2, 4))


def test_search_properties_are_the_spaces_objectives_and_the_debug_string_counts_rungs(space):
    scheduler = MOASHAScheduler(space)
    assert scheduler.metric == "accuracy"
    assert scheduler.set_search_properties(None, None)
    assert scheduler.set_search_properties("accuracy", "max")
    assert scheduler.set_search_properties(["accuracy", "flops"], ["max", "min"])
    assert not scheduler.set_search_properties("loss", "min")
    assert not scheduler.set_search_properties("accuracy", "min")
    for number, accuracy, flops in RUNG_1:
        scheduler.on_trial_result(None, fake_trial(number), report(1, accuracy, flops))
    stopped = sum(scheduler.rule.stopped(n) is not None for n, *_ in RUNG_1)
    assert scheduler.debug_string() == (
        f"Using MO-ASHA (reduction_factor 3, 1 bracket(s)): rungs e1:6 e3:0 e9:0; {stopped} "
        "trial(s) stopped early.")


# ---- the search's Ray backend: its TuneConfig and its recording, without a cluster --------------

EXECUTION = {"concurrency": 2, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "max_retries": 3}


def test_the_search_puts_mo_asha_in_its_tune_config_and_refuses_a_users_scheduler(space):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from condsearch.orchestrate._ray import _tune_config, check_tune_config

    mine = MOASHAScheduler(space)
    merged = _tune_config(object(), 5, EXECUTION, tune.TuneConfig(time_budget_s=60), mine)
    assert merged.scheduler is mine and merged.time_budget_s == 60
    users = tune.TuneConfig(scheduler=ASHAScheduler(metric="accuracy", mode="max"))
    with pytest.raises(SearchError, match="may not set scheduler while search.scheduler.mo_asha"
                       ) as info:
        _tune_config(object(), 5, EXECUTION, users, mine)
    assert "\n" not in str(info.value)
    check_tune_config(users, mo_asha=False)  # without MO-ASHA, the user's scheduler is used
    assert _tune_config(object(), 5, EXECUTION, users).scheduler is users.scheduler


def test_the_searchs_searcher_records_a_stopped_trial_pruned_with_its_rungs(space, tmp_path):
    from condsearch.orchestrate._ray import SpaceSearcher
    from condsearch.orchestrate._session import open_session

    with open_session(space, tmp_path / "w", 4, space.seed, None, None, False, "ray") as session:
        searcher = SpaceSearcher(session)
        scheduler = MOASHAScheduler(space, rule=session.scheduler, on_rung=searcher.on_rung)
        ids = [f"ray_{i}" for i in range(4)]
        configs = {tid: searcher.suggest(tid) for tid in ids}
        trials = {tid: SimpleNamespace(trial_id=tid, config=configs[tid]) for tid in ids}

        def deliver(tid: str, result: dict) -> str:
            """What Ray's controller does with a result: the scheduler decides, then the
            searcher hears of it (or of the trial's end)."""
            answer = scheduler.on_trial_result(None, trials[tid], result)
            if answer == STOP:
                searcher.on_trial_complete(tid, result)
            else:
                searcher.on_trial_result(tid, result)
                if "condsearch_result" in result:
                    searcher.on_trial_complete(tid, result)
            return answer

        values = {"ray_0": (0.5, 1000.0), "ray_1": (0.6, 900.0), "ray_2": (0.2, 3000.0),
                  "ray_3": (0.55, 950.0)}
        answers = {tid: deliver(tid, report(1, *values[tid])) for tid in ids}
        assert answers["ray_2"] == STOP and answers["ray_0"] == CONTINUE
        for tid in [t for t in ids if answers[t] == CONTINUE]:
            for epoch in range(2, 9):
                if deliver(tid, report(epoch, *values[tid])) == STOP:
                    break
            else:
                number = configs[tid]["number"]
                deliver(tid, finished(number, *values[tid]))
        assert searcher.close_unfinished() == []
        assert session.pruned >= 1 and session.pruned + session.completed == 4

    study = session.study
    by_number = {t.number: t for t in study.trials if "condsearch.derived_from" not in t.user_attrs}
    assert not [t for t in study.trials if t.state == State.RUNNING]
    pruned = [t for t in by_number.values() if t.state == State.PRUNED]
    complete = [t for t in by_number.values() if t.state == State.COMPLETE]
    assert pruned and complete and len(pruned) == session.pruned
    for t in pruned:
        stopped_at = t.user_attrs[ATTR_STOPPED_AT]
        rungs = t.user_attrs[ATTR_RUNGS]
        assert max(map(int, rungs)) == stopped_at
        assert t.user_attrs[ATTR_STOP_REASON] == session.scheduler.stopped(t.number).reason
        assert f"epoch {stopped_at}" in t.user_attrs[ATTR_STOP_REASON]
        metrics = t.user_attrs[ATTR_METRICS]
        assert set(metrics) == {"accuracy", "flops", "params"}
        assert rungs[str(stopped_at)]["values"] == {"accuracy": metrics["accuracy"],
                                                    "flops": metrics["flops"]}
    for t in complete:
        assert sorted(map(int, t.user_attrs[ATTR_RUNGS])) == [1, 3, 9]
        assert [t.user_attrs[ATTR_RUNGS]["9"]["values"][k] for k in ("accuracy", "flops")] \
            == t.values


# ---- a real Tuner on the session's Ray head -----------------------------------------------------

#: a driver joining the session's Ray head (argv: the head's address, the space's YAML file, a
#: folder for Tune's files): a Tuner with MOASHAScheduler and a function trainable reporting
#: made-up metrics for 9 epochs (trial n's follow from n alone), one trial at a time so results
#: reach each rung in trial order; it prints each trial's last epoch and the rule's view
DRIVER = """\
import json, sys
import ray
from ray import tune
from condsearch.space import load_space
from condsearch.tune import MOASHAScheduler


def values(n, epoch):
    return {"accuracy": ((n * 7) % 6 + 1) / 10 * epoch / 9,
            "flops": 1000.0 + ((n * 5) % 6) * 100.0}


def synthetic(config):
    for epoch in range(1, 10):
        tune.report({"epoch": epoch, **values(config["number"], epoch)})


ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
scheduler = MOASHAScheduler(load_space(sys.argv[2]))
tuner = tune.Tuner(
    synthetic, param_space={"number": tune.grid_search(list(range(6)))},
    tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
    run_config=tune.RunConfig(name="mo_asha", storage_path=sys.argv[3], verbose=0))
results = tuner.fit()
assert not results.errors, results.errors
rule = scheduler.rule
print(json.dumps({
    "last_epoch": {r.config["number"]: r.metrics["epoch"] for r in results},
    "stopped_at": {n: rule.stopped_at(n) for n in range(6)},
    "finished": {n: rule.finished(n) for n in range(6)},
    "debug": scheduler.debug_string()}))
"""


def synthetic_values(n: int, epoch: int) -> dict[str, float]:
    """What the driver's trial n reports after `epoch`."""
    return {"accuracy": ((n * 7) % 6 + 1) / 10 * epoch / 9, "flops": 1000.0 + ((n * 5) % 6) * 100.0}


@pytest.mark.slow
def test_a_tuner_stops_the_trials_mo_asha_stops_and_lets_the_others_finish(ray_head, tmp_path):
    import subprocess
    import sys

    from helpers import RAY_ENV

    (tmp_path / "space.yaml").write_text(SPACE.replace("constraints: {max_flops: 5000, "
                                                       "max_params: 1.0e+6}\n", ""))
    (tmp_path / "driver.py").write_text(DRIVER)
    done = subprocess.run([sys.executable, "driver.py", ray_head, "space.yaml", str(tmp_path)],
                          cwd=tmp_path, env={**RAY_ENV, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    last_epoch = {int(n): e for n, e in seen["last_epoch"].items()}

    # MO-ASHA alone, fed the same results in the same order
    reference = MOASHA([("accuracy", "maximize"), ("flops", "minimize")], 1, 3, 9, seed=3)
    expected = {}
    for n in range(6):
        expected[n] = 9
        for epoch in range(1, 10):
            reference.on_result(n, epoch, synthetic_values(n, epoch))
            if reference.stopped(n) is not None:
                expected[n] = epoch
                break
    assert last_epoch == expected
    assert {e for e in expected.values() if e < 9} and 9 in expected.values()
    assert {int(n): e for n, e in seen["stopped_at"].items()} == {
        n: (e if e < 9 else None) for n, e in expected.items()}
    assert {int(n): f for n, f in seen["finished"].items()} == {
        n: e == 9 for n, e in expected.items()}
    assert seen["debug"].startswith("Using MO-ASHA (reduction_factor 3, 1 bracket(s)): rungs e1:6")
