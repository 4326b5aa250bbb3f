"""The short versions of the two reports of issue 6: the benchmark report and the
search-quality study (the full ones are `experiments/benchmarks/run.py` and
`experiments/search_quality/run.py`)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_report_puts_every_figure_next_to_its_target(tmp_path):
    rows = _module("experiments/benchmarks/run.py", "bench_run").main(
        ["--quick", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["failures"] == []
    assert {r["benchmark"] for r in rows} >= {"flop_counting", "realized_savings", "orchestration"}
    assert all(r["ok"] in (True, False, None) and math.isfinite(r["value"]) for r in rows)
    assert all(r["target"] for r in rows)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Machine:" in text and "targets met" in text
    for missed in (r for r in rows if r["ok"] is False):
        assert missed["figure"] in text.split("## Misses and why", 1)[1]


def test_the_short_search_quality_study_compares_samplers_by_hypervolume(tmp_path):
    from condsearch.data import TaskError, load_task

    try:
        load_task({"dataset": "fashion_mnist", "train_limit": 10})
    except TaskError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
    study = _module("experiments/search_quality/run.py", "sq_run")
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
