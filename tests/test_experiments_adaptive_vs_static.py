"""The adaptive-against-static study's short version (the full one is
`python experiments/adaptive_vs_static/run.py`): every arm searched at the same epoch budget,
its validation front measured on the test split, the static and adaptive test fronts compared,
and a rerun reusing every finished search."""

import json
import subprocess
import sys

import pytest
from helpers import ROOT

ARMS = {"static_conv", "cigt_one_path", "conv_early_exit", "cigt", "nac", "transformer"}


def _run(out, runs, *extra):
    return subprocess.run([sys.executable, "experiments/adaptive_vs_static/run.py", "--quick",
                           "--out", str(out), "--runs", str(runs), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow  # a reproduction's short version
@pytest.mark.usefixtures("fashion_mnist")
def test_the_short_study_compares_the_static_and_adaptive_test_fronts(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    done = _run(out, runs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "epochs of the study, about" in done.stdout  # progress with the time left
    results = json.loads((out / "results.json").read_text())
    assert set(results["points"]) == ARMS and results["target_saving"] == 1.5
    for arm, by_seed in results["points"].items():
        rows = by_seed["0"]
        assert rows, f"{arm}: no front point was measured on the test split"
        for row in rows:
            assert 0.0 <= row["test_accuracy"] <= 1.0 and row["test_flops"] > 0
            if arm in ("static_conv", "cigt_one_path"):
                assert row["static"]
            elif arm != "transformer":
                assert not row["static"]
        # the searches stayed within their budget's last trial: at least the budget was spent
        progress = json.loads((runs / f"{arm}-seed0" / "done.json").read_text())
        assert progress["budget"] == results["settings"]["budget"]
    seed = results["summary"]["per_seed"]["0"]
    assert seed["static_front"] and seed["adaptive_front"]
    knee_accuracy, knee_flops = seed["static_knee"]
    at_knee = seed["adaptive_flops_at_knee_accuracy"]
    if at_knee is None:
        assert seed["saving_at_knee"] is None
        assert all(a < knee_accuracy for a, _ in seed["adaptive_front"])
    else:
        assert seed["saving_at_knee"] == pytest.approx(knee_flops / at_knee)
    # each arm's own test front: its best point is its most accurate measured point
    for arm, row in results["arms_table"].items():
        rows = results["points"][arm]["0"]
        assert row["seeds"] == 1 and row["trials"] >= 1 and row["front_points"] >= 1
        assert row["best"][0] == max(r["test_accuracy"] for r in rows)
        assert row["cheapest"][1] == min(r["test_flops"] for r in rows)
    readme = (out / "README.md").read_text()
    assert "FLOPs saving at the static front's knee accuracy" in readme
    assert "Every arm's own test front" in readme
    assert (out / "fronts.png").exists()

    # a rerun reuses every finished search and its test measurements: nothing is trained again
    again = _run(out, runs)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "more trial(s)" not in again.stdout
    assert json.loads((out / "results.json").read_text())["summary"] == results["summary"]
    assert "Partial" not in (out / "README.md").read_text()

    # a report over more seeds than have finished says which searches it lacks
    partial = _run(out, runs, "--report-only", "--seeds", "0", "1")
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "**Partial: 6 of 12 searches not finished yet** (static_conv seed 1," in partial.stdout
    assert "The savings use only the seeds whose searches all finished (0)." in partial.stdout
    assert list(json.loads((out / "results.json").read_text())["summary"]["per_seed"]) == ["0"]
