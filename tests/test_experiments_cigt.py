"""The CIGT reproduction's short version (the full one is `python experiments/cigt/run.py`)."""

import json

import pytest
from helpers import load_script

pytestmark = pytest.mark.slow  # a reproduction's short version


@pytest.mark.usefixtures("fashion_mnist")
def test_the_short_cigt_run_trains_the_trellis_and_both_baselines_and_writes_its_table(
        tmp_path, capsys):
    script = load_script("experiments/cigt/run.py", "cigt_run")
    argv = ["--quick", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")]
    script.main(argv)
    assert "3/3 models trained" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    macs = {r["model"]: r["macs"] for r in results["rows"]}
    assert set(macs) == {"cigt", "thick", "thin"}
    # one block per layer plus the routers: about the thin path, far below the thick network
    assert macs["thin"] < macs["cigt"] < 0.6 * macs["thick"]
    assert results["multipath"], "the multipath sweep ran on the trained trellis"
    assert "| cigt" in (tmp_path / "README.md").read_text().lower()

    # a rerun with the same settings trains nothing and writes the same rows
    script.main(argv)
    assert "seed=0 " not in capsys.readouterr().out  # no model trained
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
