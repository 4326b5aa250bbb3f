"""A real local search, read back through the real Optuna and MLflow clients."""

import json
from pathlib import Path

import mlflow
import optuna
import pytest
from helpers import cli, load_study, mlflow_runs, trained_trials

from condsearch.export import ExportError, evaluate_exported, export_point, load_exported
from condsearch.orchestrate import all_points, load_front, non_dominated, search

SPACE = """\
name: tiny_digits
task: {dataset: digits, train_limit: 300}
model:
  backbone: token_transformer
  dim: 16
  depth: {int: [1, 2]}
  heads: HEADS
  patch_size: 4
  components:
    early_exit:
      enabled: {choice: [true, false]}
      threshold: {float: [0.5, 0.95]}
objectives: [accuracy, flops]
CONSTRAINTS
train: {epochs: 1, batch_size: 64, lr: 5.0e-3, eval_batch_size: 128}
sampler: random
sweep: {early_exit.threshold: [0.6, 0.9]}
search: {trials: 3, seed: 3}
"""


def write_space(tmp_path: Path, heads: str = "4", constraints: str = "") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("HEADS", heads).replace("CONSTRAINTS", constraints))
    return path


def load(workdir: Path) -> optuna.Study:
    return load_study(workdir, "tiny_digits")


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """One CLI search of three one-epoch trials, shared by the read-back tests."""
    tmp = tmp_path_factory.mktemp("search")
    result = cli("search", str(write_space(tmp)), "--workdir", str(tmp / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    return tmp / "run"


def test_a_cli_search_leaves_a_multi_objective_study_with_its_trials(searched):
    study = load(searched)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trained = trained_trials(study)
    assert len(trained) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trained)


def test_every_completed_run_carries_its_metrics_and_a_pareto_tag_matching_a_sort(searched):
    r = mlflow_runs(searched)
    points = r.dropna(subset=["metrics.accuracy", "metrics.flops"])
    assert len(points) >= 3
    for column in ("metrics.flops_p90", "metrics.params", "metrics.latency_ms",
                   "tags.condsearch.pareto", "tags.condsearch.trial"):
        assert points[column].notna().all(), column
    values = list(zip(points["metrics.accuracy"], points["metrics.flops"]))
    front = set(non_dominated(values, ["maximize", "minimize"]))
    tags = list(points["tags.condsearch.pareto"])
    assert tags == ["true" if i in front else "false" for i in range(len(values))]


def test_trial_runs_nest_under_one_parent_run_holding_the_front_files(searched):
    r = mlflow_runs(searched)
    parents = r[r["tags.condsearch.role"] == "search"]
    assert len(parents) == 1
    parent_id = parents["run_id"].iloc[0]
    trials = r[r["tags.condsearch.role"] == "trial"]
    assert (trials["tags.mlflow.parentRunId"] == parent_id).all()
    derived = r[r["tags.condsearch.role"] == "derived"]
    trial_ids = set(trials["run_id"])
    assert set(derived["tags.mlflow.parentRunId"]) <= trial_ids
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(parent_id)}
    assert {"pareto.json", "pareto.png", "pareto.html", "search_space.yaml"} <= names
    history = client.get_metric_history(parent_id, "hypervolume")
    assert [m.step for m in history] == [1, 2, 3]
    assert all(a.value <= b.value for a, b in zip(history, history[1:]))
    epoch_metrics = client.get_metric_history(trials["run_id"].iloc[0], "train_loss")
    assert len(epoch_metrics) == 1


def test_the_pareto_command_prints_the_front_as_json(searched):
    result = cli("pareto", "--workdir", str(searched), "--json")
    assert result.returncode == 0, result.stderr
    front = json.loads(result.stdout)
    assert front and all(p["on_front"] for p in front)
    assert [p["number"] for p in front] == [p.number for p in load_front(searched)]


def test_the_knee_is_marked_alike_in_pareto_its_json_the_files_and_evaluates(searched, tmp_path):
    front = json.loads(cli("pareto", "--workdir", str(searched), "--json").stdout)
    (knee,) = [p["number"] for p in front if p["knee"]]
    table = cli("pareto", "--workdir", str(searched)).stdout
    (row,) = [line for line in table.splitlines() if "★ knee" in line]
    assert row.split("│")[1].strip() == str(knee)
    exported = cli("export", "--workdir", str(searched), "--pick", "knee", "--out",
                   str(tmp_path / "knee"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "knee" / "metrics.json").read_text())["trial"] == knee
    figures = cli("evaluate", str(tmp_path / "knee"), "--split", "test", "--json")
    assert figures.returncode == 0, figures.stderr
    assert json.loads(figures.stdout) == evaluate_exported(tmp_path / "knee", split="test")
    r = mlflow_runs(searched)
    parent_id = r[r["tags.condsearch.role"] == "search"]["run_id"].iloc[0]
    saved = mlflow.artifacts.load_dict(f"runs:/{parent_id}/pareto.json")
    assert [p["number"] for p in saved if p["knee"]] == [knee]


def test_an_export_reloads_and_reproduces_the_recorded_metrics(searched, tmp_path):
    out = export_point(searched, tmp_path / "knee", pick="knee")
    recorded = json.loads((out / "metrics.json").read_text())
    again = evaluate_exported(out, "val")
    assert again["accuracy"] == recorded["metrics"]["accuracy"]
    assert again["flops"] == pytest.approx(recorded["metrics"]["flops"], rel=1e-12)
    model = load_exported(out)
    assert not model.training


def test_a_derived_point_exports_with_its_own_knob_setting(searched, tmp_path):
    _, points = all_points(searched)
    derived = next(p for p in points if p.derived)
    out = export_point(searched, tmp_path / "derived", trial=derived.number)
    arch = (out / "architecture.yaml").read_text()
    assert f"threshold: {derived.knobs['early_exit.threshold']}" in arch
    again = evaluate_exported(out, "val")
    assert again["accuracy"] == derived.metrics["accuracy"]
    assert again["flops"] == pytest.approx(derived.metrics["flops"], rel=1e-12)


def test_corrupted_weights_are_refused_on_load(searched, tmp_path):
    out = export_point(searched, tmp_path / "bad", pick="min-flops")
    weights = out / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="sha256"):
        load_exported(out)
    result = cli("export", "--workdir", str(searched), "--trial", "999", "--out",
                 str(tmp_path / "none"))
    assert result.returncode == 2 and "no completed trial 999" in result.stderr


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path):
    # heads 3 does not divide dim 16: those trials fail inside model construction.
    space = write_space(tmp_path, heads="{choice: [3, 4]}")
    summary = search(str(space), trials=4, workdir=tmp_path / "run", progress=False)
    study = load(tmp_path / "run")
    trained = trained_trials(study)
    failed = [t for t in trained if t.state == optuna.trial.TrialState.FAIL]
    assert len(trained) == 4 and failed and summary.failed == len(failed)
    assert "not divisible by heads 3" in failed[0].user_attrs["condsearch.error"]
    r = mlflow_runs(tmp_path / "run")
    bad = r[r["tags.condsearch.error"].notna()]
    assert set(bad["status"]) == {"FAILED"} and len(bad) == len(failed)
    assert summary.completed == 4 - len(failed)


def test_a_resumed_search_keeps_its_earlier_trials_and_adds_new_ones(tmp_path):
    space = write_space(tmp_path)
    search(str(space), trials=2, workdir=tmp_path / "run", progress=False)
    first = {t.number: t.values for t in load(tmp_path / "run").trials}
    search(str(space), trials=1, workdir=tmp_path / "run", progress=False)
    study = load(tmp_path / "run")
    assert {t.number: t.values for t in study.trials if t.number in first} == first
    trained = trained_trials(study)
    assert len(trained) == 3
    parents = mlflow_runs(tmp_path / "run").query("`tags.condsearch.role` == 'search'")
    assert len(parents) == 2


def test_a_constraint_makes_trials_infeasible_without_failing_them(tmp_path):
    space = write_space(tmp_path, constraints="constraints: {max_flops: 1000}")
    search(str(space), trials=2, workdir=tmp_path / "run", progress=False)
    study = load(tmp_path / "run")
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all(t.constraints["max_flops"] > 0 for t in study.trials)
    r = mlflow_runs(tmp_path / "run").dropna(subset=["metrics.flops"])
    assert set(r["tags.condsearch.pareto"]) == {"false"}
    assert set(r["tags.condsearch.feasible"]) == {"false"}
    assert load_front(tmp_path / "run") == []


def test_register_adds_a_model_version_reachable_by_its_alias(searched, tmp_path):
    out = export_point(searched, tmp_path / "registered", pick="knee", register="tiny-digits")
    registered = json.loads((out / "metrics.json").read_text())["registered"]
    client = mlflow.MlflowClient(f"sqlite:///{searched}/mlflow.db")
    version = client.get_model_version_by_alias("tiny-digits", "knee")
    assert str(version.version) == registered["version"]
    assert version.tags["condsearch.trial"] == str(json.loads((out / "metrics.json").read_text())["trial"])
