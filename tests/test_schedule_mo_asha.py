"""MO-ASHA (`condsearch.schedule`): the rungs, the asynchronous stopping rule ranked by
non-dominated sorting and crowding distance, constraints, determinism, brackets, the state a
resumed search rebuilds it from, and the messages its misuse gets. Plain Python: every test here
runs in milliseconds."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from condsearch.schedule import CONTINUE, FINISHED, MOASHA, STOP, Decision, rung_levels
from condsearch.schedule._ranking import dominates, fronts

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = [("accuracy", "maximize"), ("flops", "minimize")]


def point(accuracy: float, flops: float) -> dict[str, float]:
    return {"accuracy": accuracy, "flops": flops}


def scheduler(min_epochs: int = 1, eta: float = 3, max_epochs: int = 9, **kw) -> MOASHA:
    return MOASHA(OBJECTIVES, min_epochs, eta, max_epochs, **kw)


def copy(s: MOASHA) -> MOASHA:
    return MOASHA.from_state(s.state())


# ---- rung levels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "levels"), [
    ((1, 3, 9), [1, 3, 9]),
    ((1, 3, 10), [1, 3, 10]),  # 9 is less than a factor 3 below 10: no rung there
    ((1, 3, 27), [1, 3, 9, 27]),
    ((1, 3, 26), [1, 3, 26]),
    ((2, 2, 16), [2, 4, 8, 16]),
    ((3, 3, 81), [3, 9, 27, 81]),
    ((5, 3, 5), [5]),  # min_epochs == max_epochs: the final rung only
    ((4, 3, 10), [10]),  # 4 * 3 > 10: nothing fits below the final rung
    ((1, 1.5, 10), [1, 2, 3, 5, 10]),  # a fractional factor: levels rounded, repeats dropped
])
def test_rung_levels_grow_by_the_reduction_factor_and_end_at_max_epochs(args, levels):
    assert rung_levels(*args) == levels


@pytest.mark.parametrize(("args", "message"), [
    ((1, 1, 9), r"reduction_factor must be greater than 1 .*got 1"),
    ((1, 0.5, 9), r"reduction_factor must be greater than 1"),
    ((1, math.nan, 9), r"reduction_factor must be greater than 1"),
    ((1, "3", 9), r"reduction_factor must be a number greater than 1, got '3'"),
    ((1, True, 9), r"reduction_factor must be a number"),
    ((0, 3, 9), r"min_epochs must be >= 1, got 0"),
    ((1.5, 3, 9), r"min_epochs must be a whole number >= 1, got 1.5"),
    ((1, 3, 0), r"max_epochs must be >= 1, got 0"),
    ((10, 3, 9), r"min_epochs \(10\) must not exceed max_epochs \(9\)"),
])
def test_rung_levels_refuse_impossible_settings_with_a_clear_message(args, message):
    with pytest.raises(ValueError, match=message):
        rung_levels(*args)


def test_the_scheduler_exposes_its_levels():
    assert scheduler(1, 3, 27).levels == (1, 3, 9, 27)


# ---- the stopping rule ---------------------------------------------------------------------------


def test_a_result_at_an_epoch_that_is_no_rung_continues_and_records_nothing():
    s = scheduler()
    d = s.on_result(0, 2, {})  # values are not read off a rung
    assert (d.action, d.reason, d.rung) == (CONTINUE, "epoch 2 is not a rung level", None)
    assert s.rung_counts() == {1: 0, 3: 0, 9: 0}


def test_the_first_results_at_a_rung_continue_while_no_cutoff_is_defined():
    # floor(n / eta) == 0 for n < eta: the stopping variant of ASHA lets them go on.
    s = scheduler()
    assert s.on_result(0, 1, point(0.9, 10)).action is CONTINUE
    second = s.on_result(1, 1, point(0.1, 1000))  # dominated, but n = 2 < eta = 3
    assert second.action is CONTINUE
    assert second.reason == ("continued at rung 0 (epoch 1): 2 result(s) there, fewer than "
                             "reduction_factor=3, so no cutoff yet")
    assert (second.rank, second.results) == (None, 2)


def test_a_dominated_late_arrival_stops_and_a_non_dominated_one_continues():
    s = scheduler()
    for trial, (a, f) in enumerate([(0.9, 100), (0.8, 50), (0.7, 20), (0.6, 10), (0.5, 200)]):
        s.record(trial, 1, point(a, f))
    late = copy(s)
    dominated = s.on_result(5, 1, point(0.4, 300))  # every earlier result dominates it
    assert dominated.action is STOP and dominated.stop
    assert (dominated.rank, dominated.results, dominated.rung) == (6, 6, 0)
    assert dominated.reason == ("stopped at rung 0 (epoch 1): ranked 6 of 6 by non-dominated "
                                "sorting (front 2); the cutoff is rank 2")
    assert s.stopped_at(5) == 1

    best = late.on_result(6, 1, point(0.95, 5))  # dominates every earlier result
    assert best.action is CONTINUE and not best.stop
    assert best.rank == 1 and best.reason.startswith("continued at rung 0 (epoch 1): ranked 1 of 6")
    assert late.stopped_at(6) is None


def chain(n: int) -> list[dict[str, float]]:
    """n results each dominated by the one before: the ranking is exactly this order."""
    return [point(1.0 - 0.1 * k, 10.0 + k) for k in range(n)]


@pytest.mark.parametrize("eta", [2, 3, 4])
@pytest.mark.parametrize("n", [4, 7, 9, 12, 13])
def test_exactly_the_top_floor_n_over_eta_continue(eta, n):
    keep = n // eta
    levels = chain(n)
    for place in range(1, n + 1):  # the n-th result arrives ranked `place`
        s = scheduler(1, eta, eta ** 2)
        others = [v for k, v in enumerate(levels) if k != place - 1]
        for trial, values in enumerate(others):
            s.record(trial, 1, values)
        d = s.on_result(100, 1, levels[place - 1])
        assert (d.rank, d.results) == (place, n)
        assert d.action is (CONTINUE if place <= keep else STOP), (place, keep)


def test_a_fractional_reduction_factor_cuts_at_floor_n_over_eta():
    s = scheduler(1, 2.5, 25)
    for trial, values in enumerate(chain(4)):
        s.record(trial, 1, values)
    d = s.on_result(9, 1, point(0.65, 14))
    assert (d.action, d.rank) == (STOP, 5)
    s = scheduler(1, 2.5, 25)
    for trial, values in enumerate(chain(4)):
        s.record(trial, 1, values)
    d = s.on_result(9, 1, point(0.95, 10.5))
    assert (d.action, d.rank) == (CONTINUE, 2)  # 2 of 5, floor(5 / 2.5) = 2


def test_on_a_single_front_crowding_distance_keeps_the_extremes():
    # Six results on one front (more accuracy costs more FLOPs), eta = 3: the top 2 continue,
    # and the two ends of the trade-off have infinite crowding distance.
    front = [point(0.5 + 0.05 * k, 10.0 * (k + 1)) for k in range(6)]
    for arriving in range(6):
        s = scheduler()
        for trial, values in enumerate(front):
            if trial != arriving:
                s.record(trial, 1, values)
        d = s.on_result(arriving, 1, front[arriving])
        assert d.action is (CONTINUE if arriving in (0, 5) else STOP), arriving
        assert "(front 0)" in d.reason
    assert s.ranked(1)[:2] == [0, 5]


def test_in_the_middle_of_a_front_the_least_crowded_point_ranks_first():
    # Gaps along the front: the point with the widest neighbours (id 3) follows the extremes.
    s = scheduler()
    for trial, (a, f) in enumerate([(0.50, 10), (0.51, 11), (0.52, 12), (0.70, 30), (0.90, 90),
                                     (0.91, 91), (0.92, 92)]):
        s.record(trial, 1, point(a, f))
    assert s.ranked(1)[:3] == [0, 6, 3]


def test_identical_results_tie_by_trial_id():
    s = scheduler()
    for trial in (7, 3, 5):
        s.record(trial, 1, point(0.5, 10))
    s.record("ray_b", 1, point(0.5, 10))
    s.record("ray_a", 1, point(0.5, 10))
    assert s.ranked(1) == [3, 5, 7, "ray_a", "ray_b"]  # ints before strs


def test_an_infeasible_result_never_ranks_above_a_feasible_one():
    s = scheduler(1, 2, 8)
    for trial, values in enumerate(chain(5)):
        s.record(trial, 1, values)
    # Better than all five in both objectives, but it breaks a constraint: rank 6 of 6.
    d = s.on_result(9, 1, point(0.99, 1), feasible=False)
    assert (d.action, d.rank) == (STOP, 6)
    assert "(front 0 of the infeasible)" in d.reason

    s = scheduler(1, 2, 8)
    for trial in range(5):
        s.record(trial, 1, point(0.99, 1.0 + trial), feasible=False)
    d = s.on_result(9, 1, point(0.1, 1e9))  # feasible, and worse than every infeasible one
    assert (d.action, d.rank) == (CONTINUE, 1)
    assert s.ranked(1) == [9, 0, 1, 2, 3, 4]  # the infeasible ranked among themselves


def test_a_value_that_is_not_finite_counts_as_infeasible():
    s = scheduler(1, 2, 8)
    s.record(0, 1, point(0.2, 500))
    d = s.on_result(1, 1, point(math.nan, 1))
    assert (d.action, d.rank) == (STOP, 2) and "infeasible" in d.reason
    assert s.state()["trials"][1]["results"][0]["feasible"] is False


def test_the_final_rung_records_the_result_and_finishes_the_trial():
    s = scheduler()
    s.on_result(0, 1, point(0.5, 10))
    s.on_result(0, 3, point(0.6, 10))
    d = s.on_result(0, 9, point(0.7, 10))
    assert (d.action, d.reason, d.rung, d.results) == (STOP, FINISHED, 2, 1)
    assert s.finished(0) and s.stopped_at(0) is None
    assert s.rung_counts() == {1: 1, 3: 1, 9: 1}
    assert s.on_result(0, 10, {}).reason == FINISHED  # anything later: STOP again


def test_a_result_past_max_epochs_finishes_the_trial():
    s = scheduler(1, 3, 10)
    d = s.on_result(0, 12, {})
    assert d.action is STOP and d.reason == "finished: epoch 12 is past max_epochs 10"


def test_reports_after_a_stop_get_the_same_stop_and_repeats_keep_the_first_values():
    s = scheduler(1, 2, 8)
    s.on_result(0, 1, point(0.9, 1))
    stopped = s.on_result(1, 1, point(0.1, 9))
    assert stopped.action is STOP
    again = s.on_result(1, 2, point(1.0, 0))
    assert again.action is STOP and again.reason == f"already {stopped.reason}"
    assert s.rung_counts() == {1: 2, 2: 0, 4: 0, 8: 0}

    repeat = s.on_result(0, 1, point(0.0, 99))  # the first values at a rung stay
    assert repeat.action is CONTINUE and repeat.reason.startswith("already continued at rung 0")
    assert s.state()["trials"][0]["results"] == [
        {"epoch": 1, "values": point(0.9, 1), "feasible": True}]


def test_needs_values_says_when_the_costly_objectives_must_be_measured():
    s = scheduler()
    assert s.needs_values(0, 1) and not s.needs_values(0, 2) and s.needs_values(0, 9)
    s.on_result(0, 1, point(0.5, 10))
    assert not s.needs_values(0, 1)  # already recorded there
    s.record(1, 1, point(0.9, 1), stopped=True)
    assert not s.needs_values(1, 3)  # stopped


# ---- determinism and the arrival order -----------------------------------------------------------


def history(seed: int, trials: int = 30, max_epochs: int = 9) -> list[tuple[int, int, dict]]:
    """A seeded stream of (trial, epoch, values), each trial reporting every epoch in turn."""
    rng = random.Random(seed)
    events = [(t, e, point(rng.random() * e / max_epochs, rng.uniform(1, 100)))
              for t in range(trials) for e in range(1, max_epochs + 1)]
    events.sort(key=lambda ev: (ev[1], rng.random()))  # epochs in order, trials interleaved
    return events


def replay(s: MOASHA, events) -> list[Decision]:
    decisions = []
    for trial, epoch, values in events:
        if s.stopped_at(trial) is None and not s.finished(trial):
            decisions.append(s.on_result(trial, epoch, values))
    return decisions


def test_the_same_history_gives_the_same_decisions():
    events = history(1)
    first, second = replay(scheduler(), events), replay(scheduler(), events)
    assert first == second
    assert {d.action for d in first} == {CONTINUE, STOP}


def test_a_shuffled_arrival_order_is_deterministic_given_the_order():
    events = history(2)
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        shuffled.sort(key=lambda ev: ev[1])  # a trial still reports its epochs in order
        assert replay(scheduler(), shuffled) == replay(scheduler(), shuffled)


def test_the_ranking_at_a_rung_does_not_depend_on_the_order_results_were_recorded():
    rng = random.Random(3)
    results = [(t, point(rng.choice([0.1, 0.5, 0.9]), rng.choice([1, 5, 9]))) for t in range(40)]
    rankings = set()
    for seed in range(6):
        order = results[:]
        random.Random(seed).shuffle(order)
        s = scheduler()
        for trial, values in order:
            s.record(trial, 1, values)
        rankings.add(tuple(s.ranked(1)))
    assert len(rankings) == 1


def test_the_arrival_order_matters_as_in_any_asynchronous_halving():
    good, bad, worse = point(0.9, 10), point(0.5, 50), point(0.4, 60)
    a = scheduler(1, 2, 8)
    a.on_result(0, 1, bad)
    assert a.on_result(1, 1, good).action is CONTINUE
    b = scheduler(1, 2, 8)
    b.on_result(1, 1, good)
    b.on_result(0, 1, worse)
    assert b.stopped_at(0) == 1  # arrived after a better result: no room for it
    assert a.stopped_at(0) is None  # arrived first: it went on


# ---- state, replay and reports -------------------------------------------------------------------


def test_the_state_is_plain_data_and_round_trips():
    s = scheduler(1, 3, 27, brackets=2, seed=4)
    replay(s, history(5, max_epochs=27))
    state = s.state()
    restored = MOASHA.from_state(json.loads(json.dumps(state)))
    assert restored.state() == state
    assert restored.rung_counts() == s.rung_counts()
    more = history(6, trials=10, max_epochs=27)
    more = [(100 + t, e, v) for t, e, v in more]  # new trials arrive after the resume
    assert replay(restored, more) == replay(s, more)


def test_record_rebuilds_the_scheduler_from_stored_rung_values():
    s = scheduler()
    replay(s, history(7))
    rebuilt = scheduler()
    for trial in reversed(range(30)):  # any replay order
        for epoch, r in s.results_of(trial).items():  # what the study would store per trial
            rebuilt.record(trial, epoch, r["values"], r["feasible"],
                           stopped=epoch == s.stopped_at(trial))
    for trial in range(30):
        assert rebuilt.stopped_at(trial) == s.stopped_at(trial)
        assert rebuilt.finished(trial) == s.finished(trial)
    assert rebuilt.rung_counts() == s.rung_counts()
    assert rebuilt.ranked(3) == s.ranked(3)
    late = [(99, 1, point(0.3, 30)), (99, 3, point(0.35, 30)), (98, 1, point(0.01, 99))]
    assert replay(rebuilt, late) == replay(s, late)


def test_record_returns_whether_it_recorded():
    s = scheduler()
    assert s.record(0, 1, point(0.5, 10)) is True
    assert s.record(0, 1, point(0.9, 1)) is False  # the first result at a rung stays
    assert s.record(0, 2, point(0.5, 10)) is False  # no rung there
    assert s.rung_counts() == {1: 1, 3: 0, 9: 0}
    assert s.results_of(0) == {1: {"values": point(0.5, 10), "feasible": True}}
    assert s.results_of("unknown") == {}


def test_rung_counts_and_stopped_at_report_where_trials_ended():
    s = scheduler(1, 2, 4)
    s.on_result(0, 1, point(0.9, 1))
    s.on_result(1, 1, point(0.1, 9))  # stopped at epoch 1
    s.on_result(0, 2, point(0.9, 1))
    s.on_result(0, 4, point(0.9, 1))  # finished
    assert s.rung_counts() == {1: 2, 2: 1, 4: 1}
    assert (s.stopped_at(0), s.stopped_at(1), s.stopped_at("unknown")) == (None, 1, None)


@pytest.mark.parametrize(("state", "message"), [
    ({}, r"not a MOASHA state of version 1 \(version: None\)"),
    ({"version": 2}, r"version: 2"),
    ({"version": 1, "config": {}}, r"not a MOASHA state: KeyError"),
    ({"version": 1, "trials": [], "config": {
        "objectives": [["accuracy", "maximize"]], "min_epochs": 1, "reduction_factor": 0.5,
        "max_epochs": 9, "brackets": 1, "seed": 0}}, r"reduction_factor must be greater than 1"),
])
def test_a_state_that_is_not_one_is_refused(state, message):
    with pytest.raises(ValueError, match=message):
        MOASHA.from_state(state)


def test_a_state_with_a_result_off_its_brackets_rungs_is_refused():
    state = scheduler().state()
    state["trials"] = [{"id": 0, "bracket": 0, "results": [
        {"epoch": 2, "values": point(0.5, 10), "feasible": True}],
        "stopped_at": None, "finished": False}]
    with pytest.raises(ValueError, match=r"trial 0: its result at epoch 2 is not at a new rung "
                                         r"of bracket 0"):
        MOASHA.from_state(state)


# ---- brackets ------------------------------------------------------------------------------------


def test_bracket_b_starts_at_the_b_th_rung():
    s = scheduler(1, 3, 27, brackets=3)
    assert [s.bracket_levels(b) for b in range(3)] == [(1, 3, 9, 27), (3, 9, 27), (9, 27)]


def test_brackets_are_drawn_from_the_seed_and_trial_id_alone():
    ids = list(range(300)) + [f"trial_{k:05d}" for k in range(100)]
    a = scheduler(1, 3, 27, brackets=3, seed=11)
    b = scheduler(1, 3, 27, brackets=3, seed=11)
    for t in ids:  # the final rung is in every bracket: each trial joins its own
        a.record(t, 27, point(0.5, 10))
    for t in reversed(ids):
        b.record(t, 27, point(0.5, 10))
    joined = [(item["id"], item["bracket"]) for item in a.state()["trials"]]
    assert joined == [(item["id"], item["bracket"]) for item in b.state()["trials"]]
    assert [bracket for _, bracket in joined] == [a.bracket_of(t) for t in ids]
    other = scheduler(1, 3, 27, brackets=3, seed=12)
    assert [a.bracket_of(t) for t in ids] != [other.bracket_of(t) for t in ids]
    counts = [sum(a.bracket_of(t) == k for t in ids) for k in range(3)]
    # Hyperband's weights for 4 levels, eta 3: 27/4 : 9/3 : 3/2, bracket 0 the largest share.
    assert counts[0] > counts[1] > counts[2] > 0
    assert all(scheduler(1, 3, 27, seed=seed).bracket_of(7) == 0 for seed in range(20))


def test_a_trial_is_judged_only_at_its_own_brackets_rungs_against_its_own_bracket():
    s = scheduler(1, 3, 27, brackets=2, seed=0)
    zero = [t for t in range(50) if s.bracket_of(t) == 0][:4]
    one = [t for t in range(50) if s.bracket_of(t) == 1][:4]
    d = s.on_result(one[0], 1, {})
    assert d.action is CONTINUE and d.reason == "epoch 1 is not a rung level"
    for t in zero:
        s.record(t, 3, point(0.9, 1))
    for k, t in enumerate(one):  # epoch 3 is bracket 1's first rung: bracket 0 is not there
        d = s.on_result(t, 3, point(0.5 - 0.1 * k, 10 + k))
        assert d.results == k + 1 and "rung 1 (epoch 3, bracket 1)" in d.reason
    assert d.action is STOP and d.rank == 4  # ranked against bracket 1 only
    assert s.rung_counts() == {1: 0, 3: 8, 9: 0, 27: 0}
    assert s.rung_counts(bracket=1) == {3: 4, 9: 0, 27: 0}
    assert s.ranked(3, bracket=1) == one and s.ranked(3, bracket=0) == sorted(zero)


def test_more_brackets_than_rung_levels_are_refused():
    with pytest.raises(ValueError, match=r"brackets=4 is more than the 3 rung level\(s\) "
                                         r"\[1, 3, 9\] allow"):
        scheduler(brackets=4)
    with pytest.raises(ValueError, match="brackets must be >= 1, got 0"):
        scheduler(brackets=0)


# ---- misuse --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("objectives", "message"), [
    ([], r"objectives must be a non-empty list of \(name, direction\) pairs"),
    ("accuracy", r"objectives must be a non-empty list"),
    ([("accuracy", "max")], r"objective 'accuracy': direction must be 'maximize' or 'minimize', "
                            r"got 'max'"),
    (["accuracy"], r"each objective must be a \(name, direction\) pair, got 'accuracy'"),
    ([("flops", "minimize"), ("flops", "minimize")], r"objectives repeat 'flops'"),
])
def test_bad_objectives_are_refused(objectives, message):
    with pytest.raises(ValueError, match=message):
        MOASHA(objectives, 1, 3, 9)


def test_bad_results_are_refused_and_leave_no_trace():
    s = scheduler()
    with pytest.raises(ValueError, match=r"the result of trial 0 at epoch 1 lacks objective\(s\) "
                                         r"'flops' \(it has 'accuracy'\)"):
        s.on_result(0, 1, {"accuracy": 0.5})
    with pytest.raises(ValueError, match=r"objective 'flops' of trial 0 at epoch 1 must be a "
                                         r"number, got '10'"):
        s.on_result(0, 1, {"accuracy": 0.5, "flops": "10"})
    with pytest.raises(ValueError, match=r"epoch must be a whole number >= 1 \(epochs count "
                                         r"from 1\), got 0"):
        s.on_result(0, 0, point(0.5, 10))
    with pytest.raises(ValueError, match=r"a trial id must be an int or a str, got 1.5"):
        s.on_result(1.5, 1, point(0.5, 10))
    with pytest.raises(ValueError, match=r"bracket must be in 0..0, got 1"):
        s.bracket_levels(1)
    assert s.state()["trials"] == [] and s.rung_counts() == {1: 0, 3: 0, 9: 0}


# ---- properties on random histories --------------------------------------------------------------


def beats(a: tuple[tuple[float, ...], bool], b: tuple[tuple[float, ...], bool]) -> bool:
    """Feasible beats infeasible; otherwise Pareto dominance (minimised vectors)."""
    (va, fa), (vb, fb) = a, b
    return (fa and not fb) or (fa == fb and dominates(va, vb))


def results_at(s: MOASHA, epoch: int, ids: list) -> dict:
    """Trial id -> (minimised values, feasible) of its result at `epoch`, read off the state."""
    out = {}
    for item in s.state()["trials"]:
        if item["id"] in ids:
            r = next(r for r in item["results"] if r["epoch"] == epoch)
            out[item["id"]] = (tuple(-r["values"][n] if d == "maximize" else r["values"][n]
                                     for n, d in s.objectives), r["feasible"])
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_histories_never_keep_a_result_another_stopped_one_beats(seed):
    rng = random.Random(seed)
    m = rng.choice([2, 2, 3])
    objectives = [("accuracy", "maximize"), ("flops", "minimize"), ("params", "minimize")][:m]
    eta = rng.choice([2, 3, 4])
    s = MOASHA(objectives, 1, eta, eta ** 2, brackets=rng.choice([1, 2]), seed=seed)
    names = [n for n, _ in objectives]
    grid = rng.choice([None, 4])  # coarse values make ties and duplicates
    running = {t: 0 for t in range(rng.randint(20, 60))}
    decided = {CONTINUE: 0, STOP: 0}
    while running:
        trial = rng.choice(sorted(running))
        running[trial] += 1
        epoch = running[trial]
        values = {n: (rng.randint(0, grid) / grid if grid else rng.random()) for n in names}
        feasible = rng.random() > 0.15
        d = s.on_result(trial, epoch, values, feasible)
        if d.stop:
            del running[trial]
        if d.results is None or d.reason == FINISHED:
            continue
        ranked = s.ranked(epoch, s.bracket_of(trial))
        assert len(ranked) == d.results
        keep = math.floor(d.results / eta)
        if keep == 0:
            assert d.action is CONTINUE
            continue
        decided[d.action] += 1
        vec = results_at(s, epoch, ranked)
        top, rest = ranked[:keep], ranked[keep:]
        # the decision is the trial's place in the ranking at the time of the decision ...
        assert d.action is (CONTINUE if trial in top else STOP)
        assert d.rank == ranked.index(trial) + 1
        # ... and nothing the cut leaves out beats anything it keeps (nor, more strongly,
        # anything ranked ahead of it)
        assert not any(beats(vec[o], vec[t]) for t in top for o in rest)
        assert not any(beats(vec[later], vec[ahead])
                       for k, ahead in enumerate(ranked) for later in ranked[k + 1:])
        # a continuing trial is beaten by fewer results than the cut keeps
        if d.action is CONTINUE:
            assert sum(beats(vec[o], vec[trial]) for o in ranked if o != trial) < keep
    assert decided[CONTINUE] > 0 and decided[STOP] > 0


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_fronts_agree_with_brute_force_and_with_the_searchs_own_front(m):
    from condsearch.orchestrate._pareto import non_dominated

    rng = random.Random(m)
    for _ in range(200):
        points = [tuple(rng.randint(0, 4) for _ in range(m)) for _ in range(rng.randint(1, 30))]
        left, expected = set(range(len(points))), []
        while left:
            front = sorted(i for i in left if not any(dominates(points[j], points[i])
                                                       for j in left))
            expected.append(front)
            left -= set(front)
        assert fronts(points) == expected
        assert expected[0] == non_dominated(points, ["minimize"] * m)


def test_the_rank_of_each_permutation_of_a_small_rung_is_the_same():
    values = [point(0.5, 10), point(0.5, 10), point(0.9, 50), point(0.1, 1), point(0.6, 60)]
    rankings = set()
    for order in itertools.permutations(range(5)):
        s = scheduler()
        for trial in order:
            s.record(trial, 1, values[trial])
        rankings.add(tuple(s.ranked(1)))
    # 2 and 3 are the front's extremes; 4 is dominated by 2; the duplicates 0 and 1 are told
    # apart by their neighbours along each objective, taken in trial id order
    assert rankings == {(2, 3, 1, 0, 4)}


# ---- layering ------------------------------------------------------------------------------------


def test_the_scheduler_loads_no_torch_numpy_optuna_or_other_condsearch_package():
    code = ("import sys, condsearch.schedule\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'numpy', 'optuna', 'ray', 'mlflow', 'yaml', 'pydantic') or "
            "(m.startswith('condsearch.') and not m.startswith('condsearch.schedule'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
