"""NNI's tuners as samplers: a real Optuna study driven by each real NNI tuner, the folded score
they are told, a real 3-trial search read back through Optuna and MLflow, and the message when
NNI is not installed."""

import json
import os

import optuna
import pytest
from helpers import ROOT, cli, load_script, load_study, mlflow_runs, trained_trials

from condsearch.orchestrate._points import ATTR_DERIVED_FROM
from condsearch.orchestrate._record import record_result
from condsearch.orchestrate._samplers import make_sampler
from condsearch.orchestrate._trial import DerivedPoint, TrialResult
from condsearch.space import load_space, parse_space

pytest.importorskip("nni", reason='the NNI tuners need pip install "condsearch[nni]"')

from condsearch.interop import NniSampler, flatten_parameters, fold_score  # noqa: E402

TUNERS = ["tpe", "evolution", "anneal", "random"]
SPACE = """\
name: tiny_nni
task: {dataset: digits, train_limit: 300}
model:
  backbone: token_transformer
  dim: {choice: [8, 16]}
  depth: {int: [1, 2]}
  patch_size: 4
  components:
    early_exit:
      enabled: {choice: [true, false]}
      threshold: {float: [0.5, 0.95]}
objectives: [accuracy, flops]
train: {epochs: 1, batch_size: 64, lr: {float: [1.0e-3, 1.0e-2], log: true}, eval_batch_size: 128}
sampler: {nni: TUNER}
sweep: {early_exit.threshold: [0.6, 0.9]}
search: {trials: 3, seed: 3}
"""


def synthetic_metrics(arch: dict) -> dict:
    """A deterministic (accuracy, FLOPs) for an arch, so a study runs in milliseconds."""
    model = arch["model"]
    if model["backbone"] != "token_transformer":
        return {"accuracy": 0.5, "flops": 5.0e5, "params": 1.0e5}
    size = model["dim"] * model["depth"]
    exit_on = model["components"]["early_exit"]["enabled"]
    return {"accuracy": min(0.99, 0.3 + size / 400), "flops": 1.0e3 * size * (0.6 if exit_on else 1),
            "params": 50.0 * size}


def run_study(space, n: int, seed: int = 0) -> tuple[optuna.Study, NniSampler]:
    """Trials sampled through the space, told through the search's own recording (with one
    derived point each, as a knob sweep adds)."""
    sampler = make_sampler(space.sampler, seed, space)
    study = optuna.create_study(directions=[d for _, d in space.objectives], sampler=sampler)
    for _ in range(n):
        trial = study.ask()
        arch = space.sample(trial)
        metrics = synthetic_metrics(arch)
        cheaper = {**metrics, "flops": metrics["flops"] * 0.5, "accuracy": metrics["accuracy"] - 0.05}
        result = TrialResult(number=trial.number, ok=True, metrics=metrics,
                             derived=[DerivedPoint(knobs={"early_exit.threshold": 0.6},
                                                   metrics=cheaper)])
        record_result(study, trial, arch, space.task, result, space.objectives, space.constraints)
    return study, sampler


@pytest.mark.parametrize("tuner", TUNERS)
def test_each_nni_tuner_proposes_every_trial_of_a_conditional_space(tuner):
    space = parse_space(SPACE.replace("TUNER", tuner))
    study, sampler = run_study(space, 12)
    trained = trained_trials(study)
    assert len(trained) == 12 and len(study.trials) == 24
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in trained:
        proposed = flatten_parameters(t.system_attrs["condsearch.nni_parameters"])
        # every value the trial holds is the tuner's (a switched-off component's are not asked)
        assert t.params == {k: v for k, v in proposed.items() if k in t.params}
        assert set(t.params) <= set(proposed)
        if not t.params["model.components.early_exit.enabled"]:
            assert "model.components.early_exit.threshold" not in t.params


@pytest.mark.parametrize("tuner", TUNERS)
def test_the_joint_space_with_a_backbone_choice_runs_under_each_tuner(tuner):
    space = load_space(ROOT / "search_spaces/fashion_adaptive.yaml",
                       [f"sampler={{nni: {tuner}}}", "sweep={}"])
    sampler = make_sampler(space.sampler, 1, space)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    backbones = set()
    for _ in range(10):
        trial = study.ask()
        arch = space.sample(trial)
        backbones.add(arch["model"]["backbone"])
        study.tell(trial, [0.5, 1.0e5])
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all("condsearch.nni_parameters" in t.system_attrs for t in study.trials)


def test_the_same_seed_gives_the_same_proposals():
    space = parse_space(SPACE.replace("TUNER", "tpe"))
    first = [t.params for t in run_study(space, 6, seed=5)[0].trials]
    again = [t.params for t in run_study(space, 6, seed=5)[0].trials]
    assert first == again


def test_the_fold_is_accuracy_minus_the_penalty_on_cost_over_budget():
    objectives = [("accuracy", "maximize"), ("flops", "minimize")]
    assert fold_score({"accuracy": 0.9, "flops": 100.0}, objectives, {"flops": 200.0}, 1.0) == 0.9
    assert fold_score({"accuracy": 0.9, "flops": 300.0}, objectives, {"flops": 200.0}, 1.0) == (
        pytest.approx(0.4))
    assert fold_score({"accuracy": 0.9, "flops": 300.0}, objectives, {"flops": 200.0}, 0.2) == (
        pytest.approx(0.8))


def test_the_tuner_hears_the_best_folded_point_of_each_trained_trial():
    """Budget = the first trial's FLOPs; each trial is reported once, with the better of its own
    and its derived point; derived points are never proposed by the tuner."""
    space = parse_space(SPACE.replace("TUNER", "tpe"))
    study, sampler = run_study(space, 5)
    history = sampler._tuner._history[("train.lr",)]  # TPE's record of each result it heard
    trained = trained_trials(study)
    assert len(history) == 4  # the last trial is told when the next proposal is asked for
    budget = trained[0].values[1]
    for t, record in zip(trained, history):
        points = [p for p in study.trials if p.number == t.number
                  or p.user_attrs.get(ATTR_DERIVED_FROM) == t.number]
        best = max(fold_score(dict(zip(["accuracy", "flops"], p.values)), space.objectives,
                              {"flops": budget}, 1.0) for p in points)
        assert -record.loss == pytest.approx(best)
    assert all("condsearch.nni_parameters" not in t.system_attrs for t in study.trials
               if ATTR_DERIVED_FROM in t.user_attrs)


def test_a_budget_and_penalty_in_the_space_set_the_fold():
    space = parse_space(SPACE.replace("{nni: TUNER}", "{nni: tpe, budget: {flops: 1.0e+4}, "
                                                      "penalty: 0.5}"))
    sampler = make_sampler(space.sampler, 0, space)
    assert sampler._budgets([]) == {"flops": 1.0e4} and sampler.penalty == 0.5


@pytest.mark.slow  # a real search in a subprocess (about 9 s here)
def test_a_three_trial_search_with_an_nni_tuner_reads_back_through_optuna_and_mlflow(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("TUNER", "tpe"))
    done = cli("search", str(path), "--workdir", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 0, done.stderr
    study = load_study(tmp_path / "run", "tiny_nni")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trained = trained_trials(study)
    assert len(trained) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE and len(t.values) == 2
               for t in study.trials)
    for t in trained:
        proposed = flatten_parameters(t.system_attrs["condsearch.nni_parameters"])
        assert t.params == {k: v for k, v in proposed.items() if k in t.params}

    runs = mlflow_runs(tmp_path / "run")
    parent = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert list(parent["params.sampler"]) == ["nni:tpe"]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == len(study.trials)
    assert children["metrics.accuracy"].notna().all() and children["metrics.flops"].notna().all()
    front = set(children[children["tags.condsearch.pareto"] == "true"]["run_id"])
    assert front  # both objectives kept: the front is a set, not one best score
    listed = json.loads(cli("pareto", "--workdir", str(tmp_path / "run"), "--json").stdout)
    assert {p["run_id"] for p in listed} == front


# Not on the session's Ray head (conftest.ray_head): `--address local` has the search start a
# Ray instance of its own, the default of `--backend ray`, which no other test runs.
@pytest.mark.slow
def test_an_nni_tuner_drives_the_ray_backend_with_two_trials_at_once(tmp_path):
    pytest.importorskip("ray.tune", reason="the ray backend needs pip install 'condsearch[ray]'")
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("TUNER", "evolution").replace(
        "search: {trials: 3, seed: 3}", "search: {trials: 3, seed: 3, concurrency: 2}"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = cli("search", str(path), "--workdir", str(tmp_path / "run"), "--backend", "ray",
               "--address", "local", "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    study = load_study(tmp_path / "run", "tiny_nni")
    trained = trained_trials(study)
    assert len(trained) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in trained:
        assert "condsearch.ray_trial_id" in t.user_attrs
        proposed = flatten_parameters(t.system_attrs["condsearch.nni_parameters"])
        assert t.params == {k: v for k, v in proposed.items() if k in t.params}


@pytest.mark.slow  # a reproduction's short version
def test_the_short_nni_comparison_reports_hypervolume_per_sampler_and_seed(tmp_path):
    module = load_script("experiments/search_quality/nni_comparison.py", "nni_comparison")
    results = module.main(["--trials", "2", "--seeds", "0", "--epochs", "1", "--configs", "tpe",
                           "nni_tpe", "--checkpoints", "1", "2", "--out", str(tmp_path),
                           "--runs", str(tmp_path / "runs")])
    for config in ("tpe", "nni_tpe"):
        entry = results["samplers"][config]
        assert 0 < entry["hypervolume_by_seed"]["0"] <= 1 and entry["failed"] == 0
        assert len(results["curves"][config]["0"]) == 2
    assert "| `nni_tpe` |" in (tmp_path / "NNI.md").read_text()
