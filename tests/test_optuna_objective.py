"""condsearch in the user's own Optuna study: `Objective` for `study.optimize`, `search` with the
user's study, sampler and callbacks, and `arch_from_params` for parameters from anywhere."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest

import condsearch as cs
from condsearch.space import parse_space

SPACE = """\
name: objective_digits
task: {dataset: digits, train_limit: 200}
model:
  backbone: token_transformer
  dim: {choice: [8, 16]}
  depth: 2
  heads: 2
  patch_size: 4
  components:
    early_exit:
      enabled: true
      every: 1
      threshold: 0.9
objectives: [accuracy, flops]
constraints: {max_flops: 60000}
train: {epochs: 1, batch_size: 64, lr: {float: [1.0e-3, 1.0e-2], log: true}}
sweep: {early_exit.threshold: [0.5, 0.99]}
search: {trials: 3, seed: 0}
"""


@pytest.fixture(scope="module")
def space():
    return parse_space(SPACE)


@pytest.fixture(scope="module")
def optimized(space):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    objective = cs.Objective(space, keep_model=True)
    study.optimize(objective, n_trials=3)
    return study, objective


def test_optimize_leaves_trained_trials_and_their_derived_points_in_the_users_study(optimized):
    study, _ = optimized
    trained = [t for t in study.trials if "condsearch.derived_from" not in t.user_attrs]
    derived = [t for t in study.trials if "condsearch.derived_from" in t.user_attrs]
    assert len(trained) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len(derived) == 2 * 3  # two swept thresholds, neither equal to the trained 0.9
    assert {t.user_attrs["condsearch.derived_from"] for t in derived} == {
        t.number for t in trained}


def test_constraints_are_visible_to_best_trials(optimized):
    study, _ = optimized
    for trial in study.trials:
        assert math.isclose(trial.constraints["max_flops"], (trial.values[1] - 60000) / 60000)
    assert all(t.constraints["max_flops"] <= 0 for t in study.best_trials)


def test_the_last_trained_model_is_kept_when_asked_and_not_pickled(optimized, space):
    _, objective = optimized
    assert objective.last_model is not None and objective.last_result.ok
    clone = pickle.loads(pickle.dumps(objective))
    assert clone.last_model is None and clone.space.name == space.name


def test_a_study_in_other_directions_is_refused(space):
    study = optuna.create_study(directions=["minimize", "minimize"])
    with pytest.raises(ValueError, match="optimises"):
        study.optimize(cs.Objective(space), n_trials=1)


def test_a_flat_parameter_dict_becomes_an_arch(space):
    arch = cs.arch_from_params(space, {"model.dim": 16, "train.lr": 0.005})
    assert arch["model"]["dim"] == 16 and arch["train"]["lr"] == 0.005
    assert arch["model"]["components"]["early_exit"]["threshold"] == 0.9
    with pytest.raises(ValueError, match="model.dim"):
        cs.arch_from_params(space, {"train.lr": 0.005})
    with pytest.raises(ValueError, match="model.dim"):
        cs.arch_from_params(space, {"model.dim": 12, "train.lr": 0.005})


@pytest.mark.slow
def test_search_takes_the_users_study_sampler_and_callbacks(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'mine.db'}"
    study = optuna.create_study(study_name="mine", storage=storage,
                                directions=["maximize", "minimize"])
    seen = []
    summary = cs.search(space, trials=2, workdir=tmp_path / "w", study=study,
                        sampler=optuna.samplers.RandomSampler(seed=1),
                        callbacks=[lambda s, t: seen.append((s.study_name, t.number, t.state))],
                        progress=False)
    assert summary.completed == 2 and summary.study_name == "mine"
    assert [(name, state) for name, _, state in seen] == [
        ("mine", optuna.trial.TrialState.COMPLETE)] * 2
    again = optuna.load_study(study_name="mine", storage=storage)
    assert len([t for t in again.trials if "condsearch.derived_from" not in t.user_attrs]) == 2
    front = cs.load_front(tmp_path / "w")
    assert front
    with pytest.raises(cs.SearchError, match="must live in a database"):
        cs.search(space, trials=1, workdir=tmp_path / "x", progress=False,
                  study=optuna.create_study(directions=["maximize", "minimize"]))


def test_search_refuses_a_trial_count_or_seed_out_of_range(space, tmp_path):
    with pytest.raises(cs.SearchError, match="trials must be >= 1"):
        cs.search(space, trials=0, workdir=tmp_path / "w", progress=False)
    with pytest.raises(cs.SearchError, match="seed must be between 0 and 2147483647"):
        cs.search(space, trials=1, seed=-1, workdir=tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()
