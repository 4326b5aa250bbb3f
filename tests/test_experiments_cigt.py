"""The CIGT reproduction's short version (the full one is `python experiments/cigt/run.py`)."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_short_cigt_run_trains_the_trellis_and_both_baselines_and_writes_its_table(tmp_path):
    from condsearch.data import TaskError, load_task

    try:
        load_task({"dataset": "fashion_mnist", "train_limit": 10})
    except TaskError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
    spec = importlib.util.spec_from_file_location("cigt_run", REPO / "experiments/cigt/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    macs = {r["model"]: r["macs"] for r in results["rows"]}
    assert set(macs) == {"cigt", "thick", "thin"}
    # one block per layer plus the routers: about the thin path, far below the thick network
    assert macs["thin"] < macs["cigt"] < 0.6 * macs["thick"]
    assert results["multipath"], "the multipath sweep ran on the trained trellis"
    assert "| cigt" in (tmp_path / "README.md").read_text().lower()
