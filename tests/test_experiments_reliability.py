"""The fault suite's short version on a few cheap rows (the whole suite is
`python experiments/reliability/run.py`): each row injects its fault into real searches run as
subprocesses and loses no completed trial."""

import json
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # real searches in subprocesses (about 30-60 s here)

# rows that depend on no timing (the YAML bomb row times a child against 1 s: flaky under load)
CHEAP = ["nan_trial", "crashing_trial", "corrupt_state_json"]


def test_cheap_fault_rows_pass_and_lose_no_trial(tmp_path):
    script = ROOT / "experiments" / "reliability" / "run.py"
    listed = subprocess.run([sys.executable, str(script), "--list"], capture_output=True,
                            text=True, timeout=120, check=True).stdout
    assert set(CHEAP) <= {line.split()[0] for line in listed.splitlines()}
    done = subprocess.run([sys.executable, str(script), "--quick", "--only", *CHEAP, "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "results.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert sorted(rows) == sorted(CHEAP)
    for name, row in rows.items():
        assert row["lost"] == 0, (name, row["observed"], row["unmet"])
        assert row["passed"] is True, (name, row["observed"], row["unmet"])
        assert row["observed"] and not row["skipped"]
    assert report["totals"] == {"rows": 3, "passed": 3, "skipped": 0, "trials_lost": 0,
                                "unmeasured_lost": [], "failed": []}

    readme = (tmp_path / "README.md").read_text()
    assert "| fault | injected | expected | observed | completed trials lost | pass |" in readme
    for name in CHEAP:
        assert f"(`{name}`)" in readme
    assert "3 of 3 rows passed" in readme and "lost in total: **0**" in readme
