"""How the benchmark report shows a long study it only reads (`experiments/benchmarks/run.py`):
a finished study gives its headline row, a partial one no headline but how far it got."""

import json

from helpers import load_script

bench = load_script("experiments/benchmarks/run.py", "bench_run_studies")


def _adaptive_vs_static(missing: list[str]) -> dict:
    return {"target_saving": 1.5, "searches": 6, "missing": missing,
            "summary": {"per_seed": {"0": {}},
                        "saving_at_knee": {"mean": 2.0, "stdev": 0.0, "seeds": 1,
                                           "unreached": 0}}}


def test_a_partial_study_has_no_headline_but_says_how_far_it_got(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_adaptive_vs_static(["cigt seed 0", "nac seed 0"])))
    monkeypatch.setitem(bench.STUDIES, "adaptive_vs_static", path)
    assert bench.adaptive_vs_static_rows(json.loads(path.read_text())) == []
    text = bench.markdown([], {}, "test machine")
    assert "partial, 4 of 6 searches finished" in text.split("## Studies without results yet")[1]


def test_a_finished_study_gives_its_headline_next_to_its_target(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_adaptive_vs_static([])))
    monkeypatch.setitem(bench.STUDIES, "adaptive_vs_static", path)
    [row] = bench.adaptive_vs_static_rows(json.loads(path.read_text()))
    assert row["value"] == 2.0 and row["ok"] is True and row["target"] == "≥ 1.5"
    assert "- adaptive vs static (experiments" not in bench.markdown([row], {}, "test machine")
