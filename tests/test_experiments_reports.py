"""The short versions of the two reports of issue 6: the benchmark report and the
search-quality study (the full ones are `experiments/benchmarks/run.py` and
`experiments/search_quality/run.py`)."""

import json
import math

import pytest
from helpers import load_script

pytestmark = pytest.mark.slow  # a reproduction's short version (25-45 s each here)


def test_the_benchmark_report_puts_every_figure_next_to_its_target(tmp_path):
    rows = load_script("experiments/benchmarks/run.py", "bench_run").main(
        ["--quick", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["failures"] == []
    assert {r["benchmark"] for r in rows} >= {"flop_counting", "realized_savings", "orchestration",
                                              "contention"}
    assert all(r["ok"] in (True, False, None) and math.isfinite(r["value"]) for r in rows)
    assert all(r["target"] for r in rows)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Machine:" in text and "targets met" in text
    for missed in (r for r in rows if r["ok"] is False):
        assert missed["figure"] in text.split("## Misses and why", 1)[1]


@pytest.mark.usefixtures("fashion_mnist")
def test_the_short_search_quality_study_compares_samplers_by_hypervolume(tmp_path):
    study = load_script("experiments/search_quality/run.py", "sq_run")
    results = study.main(["--quick", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    samplers = results["samplers"]
    assert set(samplers) == {"tpe", "nsga2", "random", "tpe_no_sweep"}
    for entry in samplers.values():
        curve = [entry["hypervolume"][n][0] for n in (1, 3)]
        assert 0 <= curve[0] <= curve[1] <= 1  # more trials never shrink the front
        assert entry["hypervolume_trained_only"][3][0] <= entry["hypervolume"][3][0] + 1e-12
        assert 0 <= entry["knee_test_accuracy"][0] <= 1
    assert samplers["random"]["ratio_to_random"][3] == pytest.approx(1.0)
    assert results["static_vs_adaptive"]["dense_front"]
    for name in ("hypervolume.png", "fronts.png", "static_vs_adaptive.png", "README.md"):
        assert (tmp_path / name).exists(), name
