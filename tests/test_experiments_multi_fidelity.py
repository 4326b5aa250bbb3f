"""The multi-fidelity study's short version (the full one is
`python experiments/multi_fidelity/run.py`): five configurations at equal compute, Syne Tune's
arm measured when `syne_tune` imports (PYTHONPATH) and recorded as skipped otherwise."""

import json
import math
import subprocess
import sys

import pytest
from helpers import ROOT

CONFIGS = {"tpe_mo_asha", "tpe_full", "random_mo_asha", "random_full", "syne_tune_moasha"}


def _between_0_and_1(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.slow  # a reproduction's short version (about 80 s here)
@pytest.mark.usefixtures("fashion_mnist")
def test_the_short_study_compares_every_configuration_at_equal_compute(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    done = subprocess.run([sys.executable, "experiments/multi_fidelity/run.py", "--quick",
                           "--out", str(out), "--runs", str(runs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    budget = results["budget_epochs"]
    assert results["settings"]["quick"] is True and results["settings"]["seeds"] == [0]
    assert set(results["configs"]) == CONFIGS
    assert results["rung_levels"] == [1, 3] and results["levels"][-1] == budget
    for config, entry in results["configs"].items():
        if entry["skipped"]:
            # only Syne Tune's arm may be skipped, and only with its reason
            assert config == "syne_tune_moasha" and "syne_tune" in entry["reason"]
            assert "syne-tune==0.16.0" in done.stdout  # the one-line install hint
            continue
        assert entry["seeds"] == [0]
        assert _between_0_and_1(entry["hypervolume"]["mean"])
        assert entry["hypervolume_trained_only"]["mean"] <= entry["hypervolume"]["mean"] + 1e-12
        for row in results["runs"][config]:
            assert row["spent_epochs"] >= budget, (config, row["spent_epochs"])
            assert row["cut_epochs"] <= budget
            assert row["finished_in_cut"] >= 1, config  # the first trial always runs to the end
            curve = [row["curve"][str(b)] for b in results["levels"]]
            assert all(_between_0_and_1(v) for v in curve)
            assert curve == sorted(curve)  # more compute never shrinks the front
            assert curve[-1] == row["hypervolume"]
    full = results["runs"]["tpe_full"][0]
    assert full["trials_in_cut"] == full["finished_in_cut"] == budget // results["epochs"]
    assert set(results["ratios"]) >= {"tpe_full", "syne_tune_moasha"}
    assert results["ratios"]["tpe_full"]["target"] == 1.15
    assert "tpe_full" in results["rank_correlation"]
    readme = (out / "README.md").read_text()
    assert "| configuration | HV @ B, with sweep | HV @ B, trained only |" in readme
    assert "Quick run" in readme
    for name in ("hypervolume.png", "fronts.png"):
        assert (out / name).exists(), name


def test_the_equal_compute_cut_keeps_the_trials_within_the_budget_in_the_order_they_ran(
        monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments" / "multi_fidelity"))
    import equal_compute as measures
    Record = measures.TrialRecord
    records = [Record(0, "COMPLETE", 9, True, point=(0.8, 50.0), derived=[(0.7, 20.0)]),
               Record(1, "PRUNED", 1, False),
               Record(2, "PRUNED", 3, False),
               Record(3, "COMPLETE", 9, True, point=(0.9, 80.0)),
               Record(4, "COMPLETE", 9, True, point=(0.95, 10.0))]
    assert [r.number for r in measures.within(records, 13)] == [0, 1, 2]
    assert [r.number for r in measures.within(records, 22)] == [0, 1, 2, 3]
    assert measures.spent(records) == 31
    # the derived point counts with the sweep, not without it
    assert measures.hypervolume_at(records, 9, 100.0) > measures.hypervolume_at(
        records, 9, 100.0, derived=False) == pytest.approx(0.8 * 0.5)
    # a trial past the budget never enters the front, however good
    assert measures.hypervolume_at(records, 30, 100.0) < 0.95 * 0.9
    assert measures.spearman([(1, 2), (2, 3), (3, 5), (4, 4)]) == pytest.approx(0.8)
    assert math.isnan(measures.spearman([(1, 2), (1, 3), (1, 4)]))


def test_a_study_search_interrupted_in_its_first_call_resumes_with_its_finished_trials(
        tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments" / "multi_fidelity"))
    import equal_compute as measures

    import condsearch

    space, workdir = ROOT / "search_spaces" / "digits_early_exit.yaml", tmp_path / "search"
    args = dict(space=space, overrides=["train.epochs=1", "task.train_limit=200"],
                workdir=workdir, seed=0, budget=3, epochs=1, first_trial_epochs=1,
                settings={"budget": 3}, label="digits")
    search = condsearch.search

    def interrupted_after_one_trial(*a, **k):  # a Ctrl-C once the first trial has finished
        search(*a, **{**k, "trials": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(condsearch, "search", interrupted_after_one_trial)
    with pytest.raises(KeyboardInterrupt):
        measures.search_to_budget(**args)
    [first] = measures.read_condsearch(workdir, 1)
    assert first.finished

    monkeypatch.setattr(condsearch, "search", search)
    info = measures.search_to_budget(**args)
    records = measures.read_condsearch(workdir, 1)
    assert records[0] == first and measures.spent(records) >= 3
    assert info["calls"] >= 2 and info["seconds"] > 0  # the interrupted call's time counts


HOLD_LOCK = """import sys, time
from pathlib import Path
from condsearch.orchestrate._workdir import WorkdirLock
with WorkdirLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_study_search_never_deletes_a_search_another_process_is_running(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments" / "multi_fidelity"))
    import equal_compute as measures

    from condsearch import SearchError

    workdir = tmp_path / "search"
    workdir.mkdir()
    (workdir / "study.db").write_text("another process's study")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(SearchError, match="another condsearch search is running"):
            measures.search_to_budget(
                ROOT / "search_spaces" / "digits_early_exit.yaml",
                ["train.epochs=1", "task.train_limit=200"], workdir, seed=0, budget=1, epochs=1,
                first_trial_epochs=1, settings={"other": "settings"}, label="digits")
        assert (workdir / "study.db").read_text() == "another process's study"
    finally:
        holder.kill()
        holder.wait()
