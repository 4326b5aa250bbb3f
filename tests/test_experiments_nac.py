"""The NAC reproduction's short version (the full one is `python experiments/nac/run.py`)."""

import json

import pytest
from helpers import load_script

pytestmark = pytest.mark.slow  # a reproduction's short version


@pytest.mark.usefixtures("fashion_mnist")
def test_the_short_nac_run_measures_every_keep_ratio_and_writes_its_table(tmp_path):
    load_script("experiments/nac/run.py", "nac_run").main(["--quick", "--out", str(tmp_path)])
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert runs
    for run in runs:
        rows = sorted(run["rows"], key=lambda r: -r["keep_ratio"])
        assert [r["keep_ratio"] for r in rows] == [1.0, 0.5, 0.25, 0.125]
        flops = [r["mean_flops"] for r in rows]
        assert flops == sorted(flops, reverse=True) and flops[-1] < 0.5 * flops[0]
        assert [r["stats"]["nac.active_mediators"] for r in rows] == sorted(
            (r["stats"]["nac.active_mediators"] for r in rows), reverse=True)
    assert "| 0.125 |" in (tmp_path / "README.md").read_text()
