"""Each adaptive component trains inside a real search; its statistics and its swept knob
reach MLflow as metrics and derived runs."""

from pathlib import Path

import mlflow
import pytest

from condsearch.search import search

TEMPLATE = """\
name: NAME
task: TASK
model:
  backbone: token_transformer
  dim: 16
  depth: 2
  patch_size: 4
  components: COMPONENTS
train: {epochs: 1, batch_size: 64, eval_batch_size: 128}
sampler: random
sweep: SWEEP
"""
DIGITS = "{dataset: digits, train_limit: 300}"
PARITY = "{dataset: parity, length: 8, size: 600}"

CASES = {
    "moe_and_selection": (DIGITS, "{moe: {enabled: true, experts: 4, every: 1}, "
                                  "token_selection: {enabled: true, keep_ratio: 0.5}}",
                          "{moe.eval_capacity_factor: [0.5], token_selection.keep_ratio: [0.25]}",
                          ["moe.block0.load_cv", "moe.block1.dropped_fraction",
                           "token_selection.kept_fraction"], 1),
    "adatape": (PARITY, "{adatape: {enabled: true, bank: input, max_tape: 3}}",
                "{adatape.theta: [1.5, 3.0]}",
                ["adatape.tape_length_mean", "adatape.tape_length_var"], 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_component_trains_in_a_search_and_logs_its_statistics_and_derived_points(case, tmp_path):
    task, components, sweep, stats, settings = CASES[case]  # settings: knob combinations swept
    space = tmp_path / "space.yaml"
    space.write_text(TEMPLATE.replace("NAME", case).replace("TASK", task)
                     .replace("COMPONENTS", components).replace("SWEEP", sweep))
    summary = search(str(space), trials=1, workdir=tmp_path / "run", progress=False)
    assert summary.completed == 1 and summary.failed == 0

    mlflow.set_tracking_uri(f"sqlite:///{Path(tmp_path, 'run', 'mlflow.db')}")
    runs = mlflow.search_runs(search_all_experiments=True)
    trial = runs[runs["tags.condsearch.role"] == "trial"]
    for stat in stats:
        assert trial[f"metrics.{stat}"].notna().all(), stat
    derived = runs[runs["tags.condsearch.role"] == "derived"]
    assert len(derived) == settings
    assert derived["metrics.flops"].notna().all()
    assert set(derived["tags.condsearch.pareto"]) <= {"true", "false"}
