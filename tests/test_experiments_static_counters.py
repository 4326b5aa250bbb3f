"""The static-counter benchmark's short version (experiments/benchmarks/static_counters.py):
its report's shape, agreement of every tool on a dense model, and the gap a dummy input leaves
on an early-exit one."""

import json

import pytest
from helpers import load_script

pytestmark = pytest.mark.slow  # trains and counts nine small models (~10 s here)

# thop and fvcore are the `bench` extra, not the `test` one
pytest.importorskip("thop", reason="thop is in the bench extra: pip install -e '.[bench]'")
pytest.importorskip("fvcore", reason="fvcore is in the bench extra: pip install -e '.[bench]'")

TOOLS = {"thop", "fvcore", "FlopCounterMode", "FlopCounterMode+sdpa"}
DUMMIES = {"zeros", "uniform", "real"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("static_counters") / "static_counters.json"
    load_script("experiments/benchmarks/static_counters.py", "static_counters_bench").main(
        ["--quick", "--out", str(out)])
    return json.loads(out.read_text())


def _result(report, backbone, component):
    return next(r for r in report["results"]
                if r["backbone"] == backbone and r["component"] == component)


def test_the_report_covers_every_backbone_and_component_with_every_tool(report):
    assert report["quick"] is True
    assert {"description", "cores", "torch", "threads", "load_average_start"} <= set(
        report["machine"])
    assert set(report["tools"]) == TOOLS and set(report["dummies"]) == DUMMIES
    assert "2 x multiply-adds" in report["definitions"]["units"]
    assert {(r["backbone"], r["component"]) for r in report["results"]} == {
        ("token_transformer", c) for c in
        ("dense", "early_exit", "moe", "token_selection", "adatape")} | {
        ("conv_net", "dense"), ("conv_net", "early_exit"), ("cigt", "cigt"), ("nac", "nac")}
    for r in report["results"]:
        p = r["per_sample"]
        assert 0 < p["min"] <= p["mean"] <= p["max"]
        assert r["per_sample_check_max_rel_error"] <= 0.01  # the truth is FlopCounterMode's
        assert set(r["static"]) == TOOLS
        for tool, per_dummy in r["static"].items():
            assert set(per_dummy) == DUMMIES
            for entry in per_dummy.values():  # a figure, or the one-line reason it failed
                assert ("flops" in entry) != ("fails" in entry), (r["name"], tool, entry)
                if "flops" in entry:
                    error = 100 * (entry["flops"] - p["mean"]) / p["mean"]
                    assert entry["error_pct"] == pytest.approx(error)
                    assert "error_pct_norms_off" in entry or "fails_norms_off" in entry
                else:
                    assert "\n" not in entry["fails"] and entry["fails"]


def test_on_a_dense_model_every_tool_agrees_with_the_per_sample_truth(report):
    dense = _result(report, "conv_net", "dense")
    assert dense["per_sample"]["min"] == dense["per_sample"]["max"]
    for tool, per_dummy in dense["static"].items():
        for dummy, entry in per_dummy.items():
            # thop and fvcore also count BatchNorm by default; with that off, all agree
            assert abs(entry["error_pct_norms_off"]) <= 1.0, (tool, dummy, entry)
            if tool.startswith("FlopCounterMode"):
                assert abs(entry["error_pct"]) <= 1.0, (tool, dummy, entry)


def test_on_an_early_exit_model_a_dummy_input_misses_the_mean_per_sample_cost(report):
    early = _result(report, "token_transformer", "early_exit")
    p = early["per_sample"]
    assert p["min"] < p["max"]  # exits spread: samples differ in cost
    # the same counter is exact on the dense transformer, so the gap is the dummy's path
    dense = _result(report, "token_transformer", "dense")
    assert all(abs(e["error_pct"]) <= 1.0
               for e in dense["static"]["FlopCounterMode+sdpa"].values())
    for tool in ("FlopCounterMode", "FlopCounterMode+sdpa"):
        for dummy, entry in early["static"][tool].items():
            assert abs(entry["error_pct"]) > 1.0, (tool, dummy, entry)
