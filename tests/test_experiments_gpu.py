"""The GPU check's CPU version (`bash experiments/gpu/run.sh --device cpu --tiny`): the same three
parts and the same JSON as on a GPU, small enough for CI."""

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three child processes, about a minute

ROOT = Path(__file__).resolve().parents[1]


def test_the_tiny_cpu_check_runs_every_part_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(["bash", "experiments/gpu/run.sh", "--device", "cpu", "--tiny",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "] search: trial " in done.stdout  # progress lines carry the elapsed time
    report = json.loads(out.read_text())
    assert report["ok"] and report["device"] == "cpu" and report["tiny"]
    assert report["machine"] and "gpu" not in report
    assert set(report["parts"]) == {"tests", "search", "realized"}
    assert all(part["ok"] and part["error"] is None for part in report["parts"].values())

    tests = report["parts"]["tests"]
    assert tests["passed"] >= 7 and tests["failed"] == tests["errors"] == tests["skipped"] == 0

    search = report["parts"]["search"]
    assert search["trials_completed"] == search["trials_requested"] == 2
    assert search["trials_failed"] == 0 and search["stopped"] is None
    assert search["overrides"][-1] == "train.device=cpu"
    assert search["front"] and all(p["flops"] > 0 for p in search["front"])
    assert search["hypervolume"] > 0
    assert search["hypervolume"] == pytest.approx(search["hypervolume_reported"])
    assert search["wall_s"] > 0 and search["workdir"] is None  # a temporary one, removed

    realized = report["parts"]["realized"]
    assert {row["batch"] for row in realized["rows"]} == {1, 256}
    assert all(row["flops_saving"] > 0 for row in realized["rows"])
    assert all(check["max_rel_error"] < 0.01 for check in realized["flop_cross_checks"])
