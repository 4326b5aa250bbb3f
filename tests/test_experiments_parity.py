"""The parity reproduction's short version (the full one is `python experiments/parity/run.py`)."""

import json

import pytest
from helpers import load_script

pytestmark = pytest.mark.slow  # a reproduction's short version


def test_the_short_parity_run_trains_both_models_and_writes_its_table(tmp_path, capsys):
    script = load_script("experiments/parity/run.py", "parity_run")
    argv = ["--quick", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")]
    script.main(argv)
    assert "2/2 runs, about 0 min left" in capsys.readouterr().out
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"dense", "adatape"}
    adatape = next(r for r in rows if r["model"] == "adatape")
    dense = next(r for r in rows if r["model"] == "dense")
    assert 1 <= adatape["tape_length_mean"] <= 4  # max_tape is L // 2 = 4 at L = 8
    assert adatape["mean_flops"] > dense["mean_flops"]  # the tape tokens cost their attention
    readme = (tmp_path / "README.md").read_text()
    assert "| 8 | dense |" in readme and "| 8 | adatape |" in readme

    # a rerun with the same settings trains nothing and writes the same rows
    script.main(argv)
    assert "seed=0 " not in capsys.readouterr().out  # no model trained
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows
