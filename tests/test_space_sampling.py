"""Sampling architectures from a search space with real Optuna studies, and --set overrides."""

import json
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import DIGITS_IO, sampled

from condsearch.space import SpaceError, load_space, parse_space

REPO = Path(__file__).resolve().parents[1]
SPACE_FILES = sorted((REPO / "search_spaces").glob("*.yaml"))
EXIT = "model.components.early_exit"

CONDITIONAL = """\
name: conditional
task: {dataset: digits}
model:
  backbone: token_transformer
  dim: {choice: [16, 32]}
  depth: {int: [2, 4]}
  patch_size: 4
  components:
    early_exit:
      enabled: {choice: [true, false]}
      positions: {choice: [[1], [1, 2], null]}
      criterion: {choice: [confidence, entropy]}
      threshold: {float: [0.5, 0.99]}
train:
  lr: {float: [1.0e-4, 1.0e-2], log: true}
  epochs: 1
"""


def test_a_switched_off_component_resolves_to_enabled_false_and_suggests_nothing_else():
    results = sampled(parse_space(CONDITIONAL))
    off = [(p, a) for p, a in results if not a["model"]["components"]["early_exit"]["enabled"]]
    on = [(p, a) for p, a in results if a["model"]["components"]["early_exit"]["enabled"]]
    assert off and on
    for params, arch in off:
        assert arch["model"]["components"]["early_exit"] == {"enabled": False}
        assert not [k for k in params if k.startswith(EXIT) and k != f"{EXIT}.enabled"]
    for params, arch in on:
        assert {f"{EXIT}.threshold", f"{EXIT}.criterion", f"{EXIT}.positions"} <= set(params)
        assert set(arch["model"]["components"]["early_exit"]) == {
            "enabled", "every", "positions", "criterion", "threshold", "loss_weight"
        }


def test_optuna_parameter_names_are_the_dotted_key_paths_and_fixed_values_are_not_suggested():
    params, arch = sampled(parse_space(CONDITIONAL), n=1)[0]
    assert {"model.dim", "model.depth", f"{EXIT}.enabled", "train.lr"} <= set(params)
    assert "model.patch_size" not in params and "train.epochs" not in params
    assert arch["model"]["dim"] == params["model.dim"] and arch["train"]["lr"] == params["train.lr"]
    assert arch["model"]["patch_size"] == 4 and arch["train"]["epochs"] == 1


def test_sampled_values_lie_in_their_ranges_and_have_their_types():
    for _, arch in sampled(parse_space(CONDITIONAL), n=40):
        model, train = arch["model"], arch["train"]
        assert model["dim"] in (16, 32) and type(model["dim"]) is int
        assert 2 <= model["depth"] <= 4 and type(model["depth"]) is int
        assert 1e-4 <= train["lr"] <= 1e-2
        assert model["backbone"] == "token_transformer"
        assert train["batch_size"] == 128 and train["device"] == "auto"  # defaults filled
        exit_cfg = model["components"]["early_exit"]
        if exit_cfg["enabled"]:
            assert 0.5 <= exit_cfg["threshold"] <= 0.99


def test_a_choice_of_lists_and_null_returns_the_values_themselves():
    results = sampled(parse_space(CONDITIONAL), n=60)
    seen = {json.dumps(a["model"]["components"]["early_exit"]["positions"])
            for _, a in results if a["model"]["components"]["early_exit"]["enabled"]}
    assert seen == {"[1]", "[1, 2]", "null"}
    for params, arch in results:
        if f"{EXIT}.positions" in params:  # Optuna stores the JSON text of a structured choice
            assert json.loads(params[f"{EXIT}.positions"]) == arch["model"]["components"][
                "early_exit"]["positions"]


def test_a_sampled_arch_builds_a_model():
    from condsearch.models import build_model

    for _, arch in sampled(parse_space(CONDITIONAL), n=6):
        assert sum(p.numel() for p in build_model(arch, DIGITS_IO).parameters()) > 0


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_tpe_with_multivariate_grouping_samples_the_conditional_space():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(CONDITIONAL)
    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=3)
    )
    for i in range(8):
        trial = study.ask()
        space.sample(trial)
        study.tell(trial, float(i))
    assert len(study.trials) == 8


def test_set_overrides_change_values_and_can_create_missing_keys():
    space = parse_space(CONDITIONAL, "s.yaml", [
        "train.epochs=3",
        "model.dim=24",
        "model.depth={int: [1, 2]}",
        "model.components.early_exit.enabled=true",
        "model.components.early_exit.loss_weight=0.25",
        "sampler=random",
        "search.trials=5",
        "constraints.max_params=1.0e+6",
    ])
    arch = space.sample(optuna.trial.FixedTrial({
        "model.depth": 2, f"{EXIT}.positions": "[1]", f"{EXIT}.criterion": "entropy",
        f"{EXIT}.threshold": 0.7, "train.lr": 1e-3,
    }))
    assert arch["train"]["epochs"] == 3 and arch["model"]["dim"] == 24
    assert arch["model"]["components"]["early_exit"]["loss_weight"] == 0.25
    assert space.sampler == {"name": "random", "options": {}}
    assert space.trials == 5 and space.constraints["max_params"] == 1e6
    assert space.source == CONDITIONAL  # the file's text, not the overridden document


def test_set_can_add_a_sweep_knob_whose_name_has_a_dot():
    space = parse_space(CONDITIONAL, "s.yaml", ["sweep.early_exit.threshold=[0.6, 0.9]"])
    assert space.sweep == {"early_exit.threshold": [0.6, 0.9]}


def test_set_problems_are_reported_as_set_and_their_position():
    with pytest.raises(SpaceError) as info:
        parse_space(CONDITIONAL, "s.yaml", [
            "train.epochs=0", "train.epochz=2", "model.depth={int: [3, 1]}", "oops", "train.epochs.x=1",
        ])
    assert str(info.value).splitlines() == [
        "--set:1: train.epochs: must be >= 1, got 0",
        "--set:2: train.epochz: unknown key; did you mean 'epochs'?",
        "--set:3: model.depth.int: lo (3) > hi (1)",
        "--set:4: oops: expected key.path=value, got 'oops'",
        "--set:5: train.epochs.x: cannot set a key inside train.epochs, which is not a mapping",
    ]


def test_file_problems_and_set_problems_are_reported_together():
    with pytest.raises(SpaceError) as info:
        parse_space(CONDITIONAL.replace("epochs: 1", "epochs: -1"), "s.yaml", ["train.lr=0"])
    assert str(info.value).splitlines() == [
        "s.yaml:16: train.epochs: must be >= 1, got -1",
        "--set:1: train.lr: must be > 0, got 0",
    ]


def test_fixed_arch_returns_the_single_arch_or_names_the_searched_keys():
    fixed = parse_space(CONDITIONAL, "s.yaml", [
        "model.dim=16", "model.depth=2", "model.components.early_exit.enabled=false", "train.lr=0.01",
    ])
    arch = fixed.fixed_arch()
    assert arch["model"]["dim"] == 16 and arch["model"]["components"]["early_exit"] == {"enabled": False}
    with pytest.raises(SpaceError, match="model.dim: is searched"):
        parse_space(CONDITIONAL).fixed_arch()


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.name)
def test_the_repository_search_spaces_load_and_sample(path):
    space = load_space(path)
    assert space.name == path.stem and space.path == str(path)
    assert space.sweep, "every shipped space sweeps the inference knob of its component"
    for _, arch in sampled(space, n=5):
        assert arch["model"]["backbone"] in space.backbones


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.name)
def test_to_dict_parses_back_to_the_same_space(path):
    space = load_space(path)
    plain = space.to_dict()
    again = parse_space(yaml.safe_dump(plain, sort_keys=False))
    assert again.to_dict() == plain
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # plain YAML-safe data only


def test_to_dict_fills_every_default():
    plain = parse_space(CONDITIONAL).to_dict()
    assert plain["train"]["weight_decay"] == 0.05 and plain["search"] == {
        "trials": 12, "seed": 0, "concurrency": 1, "cpus_per_trial": None, "gpus_per_trial": 0.0,
        "max_retries": 2, "trial_timeout": 21600.0, "max_memory_gb": None, "scheduler": None,
        "workers_per_trial": 1}
    assert plain["model"]["components"]["early_exit"]["loss_weight"] == 0.5
    assert plain["model"]["depth"] == {"int": [2, 4], "step": 1, "log": False}
    assert plain["objectives"] == ["accuracy", "flops"]


def test_sampler_options_are_kept_for_the_sampler_constructor():
    text = CONDITIONAL + "sampler:\n  name: nsga2\n  options: {population_size: 8}\n"
    assert parse_space(text).sampler == {"name": "nsga2", "options": {"population_size": 8}}


JOINT = """\
name: joint
task: {dataset: digits}
model:
  backbone: token_transformer
  dim: 16
  depth: 3
  patch_size: 4
  components:
    adatape: {enabled: {choice: [true, false]}, theta: {float: [1.0, 3.0]}}
    early_exit: {enabled: {choice: [true, false]}, threshold: {float: [0.5, 0.99]}}
    moe: {enabled: {choice: [true, false]}, experts: {choice: [2, 4]}}
    token_selection: {enabled: {choice: [true, false]}, keep_ratio: {float: [0.25, 1.0]}}
"""


def test_with_adatape_on_early_exit_and_token_selection_are_off_and_not_sampled():
    trials = sampled(parse_space(JOINT), n=60)
    with_tape = [(params, arch) for params, arch in trials
                 if arch["model"]["components"]["adatape"]["enabled"]]
    assert with_tape and len(with_tape) < 60
    for params, arch in with_tape:
        components = arch["model"]["components"]
        assert components["early_exit"] == {"enabled": False}
        assert components["token_selection"] == {"enabled": False}
        assert not any(k.startswith(("model.components.early_exit", "model.components.token_selection"))
                       for k in params)
    others = [arch for _, arch in trials if not arch["model"]["components"]["adatape"]["enabled"]]
    assert any(a["model"]["components"]["early_exit"]["enabled"]
               and a["model"]["components"]["token_selection"]["enabled"] for a in others)
