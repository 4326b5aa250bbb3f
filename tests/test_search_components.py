"""Each adaptive component and backbone trains inside a real search; its statistics and its
swept knob reach MLflow as metrics and derived runs."""

import pytest
from helpers import mlflow_runs

from condsearch.orchestrate import search

TEMPLATE = """\
name: NAME
task: TASK
model: MODEL
train: {epochs: 1, batch_size: 64, eval_batch_size: 128}
sampler: random
sweep: SWEEP
"""
DIGITS = "{dataset: digits, train_limit: 300}"
PARITY = "{dataset: parity, length: 8, size: 600}"


def transformer(components: str) -> str:
    return f"{{backbone: token_transformer, dim: 16, depth: 2, patch_size: 4, components: {components}}}"


CASES = {
    "moe_and_selection": (DIGITS, transformer("{moe: {enabled: true, experts: 4, every: 1}, "
                                              "token_selection: {enabled: true, keep_ratio: 0.5}}"),
                          "{moe.eval_capacity_factor: [0.5], token_selection.keep_ratio: [0.25]}",
                          ["moe.block0.load_cv", "moe.block1.dropped_fraction",
                           "token_selection.kept_fraction"], 1),
    "adatape": (PARITY, transformer("{adatape: {enabled: true, bank: input, max_tape: 3}}"),
                "{adatape.theta: [1.5, 3.0]}",
                ["adatape.tape_length_mean", "adatape.tape_length_var"], 2),
    "cigt": (DIGITS, "{backbone: cigt, cigt: {widths: [1, 2, 2], channels: 8, hidden: 16}}",
             "{cigt.multipath_threshold: [0.3, 0.45]}",
             ["cigt.path_usage.layer1.block0", "cigt.mean_paths.layer2",
              "cigt.route_class_mi.layer2"], 2),
    "nac": (DIGITS, "{backbone: nac, nac: {dim: 16, input_modules: 4, mediators: 8, layers: 1, "
                    "patch_size: 4}}",
            "{nac.keep_ratio: [0.5, 0.25]}", ["nac.kernel_sparsity", "nac.active_mediators"], 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_component_trains_in_a_search_and_logs_its_statistics_and_derived_points(case, tmp_path):
    task, model, sweep, stats, settings = CASES[case]  # settings: knob combinations swept
    space = tmp_path / "space.yaml"
    space.write_text(TEMPLATE.replace("NAME", case).replace("TASK", task)
                     .replace("MODEL", model).replace("SWEEP", sweep))
    summary = search(str(space), trials=1, workdir=tmp_path / "run", progress=False)
    assert summary.completed == 1 and summary.failed == 0

    runs = mlflow_runs(tmp_path / "run")
    trial = runs[runs["tags.condsearch.role"] == "trial"]
    for stat in stats:
        assert trial[f"metrics.{stat}"].notna().all(), stat
    derived = runs[runs["tags.condsearch.role"] == "derived"]
    assert len(derived) == settings
    assert derived["metrics.flops"].notna().all()
    assert set(derived["tags.condsearch.pareto"]) <= {"true", "false"}
