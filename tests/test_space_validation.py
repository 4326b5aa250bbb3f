"""Validating search-space files: every problem is reported as `file:line: key: message`."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DIGITS_IO, problems

from condsearch.space import Problem, SpaceError, load_space, parse_space
from condsearch.space.declared.token_transformer import param_count as arch_params

# line numbers:  1 name, 2 task, 3 dataset, 4 model, 5 backbone, 6 dim, 7 depth
HEAD = """\
name: t
task:
  dataset: digits
model:
  backbone: token_transformer
"""
VALID = HEAD + "  dim: 16\n  depth: 2\n"


def test_a_minimal_space_validates_and_fills_defaults():
    space = parse_space(VALID, "space.yaml")
    assert space.name == "t"
    assert space.task["val_fraction"] == 0.2 and space.task["length"] == 16
    assert space.objectives == [("accuracy", "maximize"), ("flops", "minimize")]
    assert space.constraints == {"max_flops": None, "max_params": None}
    assert space.sampler == {"name": "tpe", "options": {}}
    assert (space.trials, space.seed, space.sweep) == (12, 0, {})
    assert space.source == VALID


def test_a_problem_prints_as_file_line_key_message():
    assert str(Problem("a.yaml", 3, "model.dim", "bad")) == "a.yaml:3: model.dim: bad"
    error = SpaceError([Problem("a.yaml", 3, "x", "one"), Problem("--set", 1, "y", "two")])
    assert str(error) == "a.yaml:3: x: one\n--set:1: y: two"


def test_a_yaml_syntax_error_points_at_its_line():
    (line,) = problems(VALID + "train:\n  epochs: [1, 2\n  lr: 3\n")
    assert line.startswith("space.yaml:10: yaml: invalid YAML: ")


def test_an_unknown_key_suggests_the_closest_valid_key():
    text = HEAD + "  dim: 16\n  dimm: 32\n  depth: 2\n"
    assert problems(text) == ["space.yaml:7: model.dimm: unknown key; did you mean 'dim'?"]


def test_an_unknown_key_with_no_close_match_lists_the_valid_ones():
    (line,) = problems(VALID + "search:\n  zzz: 1\n")
    assert line == ("space.yaml:9: search.zzz: unknown key; expected one of: trials, seed, "
                    "concurrency, cpus_per_trial, gpus_per_trial, max_retries, "
                    "workers_per_trial, trial_timeout, max_memory_gb, scheduler")


def test_a_wrong_type_names_the_expected_type():
    text = "name: t\ntask:\n  dataset: digits\n  seed: 1.5\nmodel:\n  backbone: token_transformer\n" \
           "  dim: sixteen\n  depth: 2\n"
    assert problems(text) == [
        "space.yaml:4: task.seed: expected an integer, got 1.5",
        "space.yaml:7: model.dim: expected an integer, got 'sixteen'",
    ]


def test_a_range_with_lo_above_hi_is_refused():
    text = HEAD + "  dim: 16\n  depth: {int: [5, 2]}\n"
    assert problems(text) == ["space.yaml:7: model.depth.int: lo (5) > hi (2)"]


def test_an_empty_choice_is_refused():
    text = VALID + "train:\n  lr: {choice: []}\n"
    assert problems(text) == ["space.yaml:9: train.lr.choice: empty choice; list at least one value"]


def test_a_log_range_needs_positive_bounds():
    text = VALID + "train:\n  weight_decay: {float: [0.0, 0.1], log: true}\n"
    assert problems(text) == [
        "space.yaml:9: train.weight_decay.log: log: true needs bounds > 0, but lo is 0"
    ]


def test_a_float_range_cannot_set_an_integer_key():
    text = HEAD + "  dim: {float: [8, 32]}\n  depth: 2\n"
    assert problems(text) == [
        "space.yaml:6: model.dim.float: a float range cannot set an integer key; use int: [lo, hi]"
    ]


def test_a_bound_outside_the_keys_range_is_refused():
    text = VALID + "  dropout: {float: [0.0, 1.5]}\n"
    assert problems(text) == ["space.yaml:8: model.dropout.float: hi (1.5) must be < 1"]


def test_a_choice_item_of_the_wrong_type_is_pointed_at():
    text = VALID + "  components:\n    early_exit:\n      enabled: {choice: [true, maybe]}\n"
    assert problems(text) == [
        "space.yaml:10: model.components.early_exit.enabled.choice[1]: expected true or false, got 'maybe'"
    ]


def test_an_unknown_component_is_named():
    text = VALID + "  components:\n    mixture: {enabled: true}\n"
    assert problems(text) == [
        "space.yaml:9: model.components.mixture: unknown component 'mixture'; "
        "known components are: adatape, early_exit, moe, token_selection"
    ]


def test_an_unknown_backbone_is_named():
    text = HEAD.replace("token_transformer", "token_transformr") + "  dim: 16\n  depth: 2\n"
    assert problems(text) == [
        "space.yaml:5: model.backbone: unknown backbone 'token_transformr'; "
        "did you mean 'token_transformer'?"
    ]


def test_an_unknown_dataset_is_named_and_a_factory_is_accepted():
    (line,) = problems(VALID.replace("digits", "digitz"))
    assert line.startswith("space.yaml:3: task.dataset: unknown dataset 'digitz'; did you mean 'digits'?")
    assert parse_space(VALID.replace("digits", "my_pkg.data:make_task")).task["dataset"] == (
        "my_pkg.data:make_task"
    )


def test_a_missing_required_field_is_reported_at_its_parent():
    assert problems(HEAD + "  dim: 16\n") == ["space.yaml:4: model.depth: missing required field"]
    assert problems(VALID.replace("name: t\n", "")) == ["space.yaml:1: name: missing required field"]


def test_every_and_positions_cannot_both_be_set():
    text = VALID.replace("depth: 2", "depth: 4") + (
        "  components:\n    early_exit:\n      enabled: true\n      every: 2\n      positions: [1, 2]\n"
    )
    assert problems(text) == [
        "space.yaml:12: model.components.early_exit.positions: set either every or positions, not both"
    ]


def test_exit_positions_must_come_before_the_last_layer():
    text = VALID + "  components:\n    early_exit: {enabled: true, positions: [1, 2]}\n"
    (line,) = problems(text)
    assert line.startswith("space.yaml:9: model.components.early_exit.positions: exit positions [2]")


def test_unknown_and_duplicate_objectives_are_refused():
    assert problems(VALID + "objectives: [accuracy, flop, accuracy]\n") == [
        "space.yaml:8: objectives[1]: unknown objective 'flop'; did you mean 'flops'?",
        "space.yaml:8: objectives[2]: duplicate objective 'accuracy'",
    ]


def test_an_unknown_sweep_knob_is_refused():
    assert problems(VALID + "sweep:\n  early_exit.treshold: [0.5]\n") == [
        "space.yaml:9: sweep.early_exit.treshold: unknown sweep knob 'early_exit.treshold'; "
        "did you mean 'early_exit.threshold'?"
    ]


def test_sweeping_a_component_that_is_never_enabled_is_refused():
    (line,) = problems(VALID + "sweep:\n  early_exit.threshold: [0.5, 0.9]\n")
    assert line.startswith("space.yaml:9: sweep.early_exit.threshold: early_exit is never enabled")


def test_sweep_values_must_be_valid_thresholds():
    text = VALID + "  components:\n    early_exit: {enabled: true}\nsweep:\n  early_exit.threshold: [0.5, 1.5]\n"
    assert problems(text) == ["space.yaml:11: sweep.early_exit.threshold[1]: must be <= 1, got 1.5"]


def test_constraints_must_be_positive():
    assert problems(VALID + "constraints:\n  max_flops: 0\n  max_params: -3\n") == [
        "space.yaml:9: constraints.max_flops: must be > 0, got 0",
        "space.yaml:10: constraints.max_params: must be > 0, got -3",
    ]


def test_a_max_params_below_the_smallest_model_of_the_space_is_refused():
    text = HEAD + (
        "  dim: {choice: [32, 16]}\n  depth: {int: [2, 4]}\n  patch_size: {choice: [2, 4]}\n"
        "  components:\n    early_exit: {enabled: true, every: 1}\nconstraints:\n  max_params: 5000\n"
    )
    smallest = arch_params(
        {"dim": 16, "depth": 2, "mlp_ratio": 2.0, "patch_size": 4,
         "components": {"early_exit": {"enabled": True, "every": 1}}}, DIGITS_IO)
    assert problems(text) == [
        f"space.yaml:12: constraints.max_params: no architecture of this space can satisfy it: "
        f"the smallest has {smallest:,} parameters (dim 16, depth 2, mlp_ratio 2.0, patch_size 2, "
        f"1 early-exit head), above max_params = 5,000"
    ]


def test_a_max_params_reachable_with_the_component_off_is_accepted():
    off = arch_params({"dim": 16, "depth": 2, "mlp_ratio": 2.0, "patch_size": 4}, DIGITS_IO)
    text = VALID.replace("dim: 16", "dim: 16\n  patch_size: 4") + (
        f"  components:\n    early_exit: {{enabled: {{choice: [true, false]}}}}\n"
        f"constraints:\n  max_params: {off}\n"
    )
    assert parse_space(text).constraints["max_params"] == off


def test_the_parity_task_bounds_max_params_by_its_sequence_length():
    text = VALID.replace("digits", "parity\n  length: 64") + "constraints:\n  max_params: 4000\n"
    (line,) = problems(text)
    assert line.startswith("space.yaml:10: constraints.max_params: no architecture")


def test_dim_must_be_divisible_by_heads_when_both_are_fixed():
    assert problems(VALID + "  heads: 5\n") == [
        "space.yaml:8: model.heads: dim (16) is not divisible by heads (5)"
    ]


def test_a_patch_size_that_does_not_divide_the_image_is_refused():
    assert problems(VALID + "  patch_size: {choice: [2, 3]}\n") == [
        "space.yaml:8: model.patch_size.choice[1]: patch_size 3 does not divide the 8x8 images of digits"
    ]


def test_fractions_must_leave_training_data():
    text = VALID.replace("digits", "digits\n  val_fraction: 0.5\n  test_fraction: 0.5")
    (line,) = problems(text)
    assert line.startswith("space.yaml:5: task.test_fraction: val_fraction + test_fraction must be < 1")


def test_an_unknown_sampler_is_refused():
    assert problems(VALID + "sampler: tpee\n") == [
        "space.yaml:8: sampler: unknown sampler 'tpee'; did you mean 'tpe'?"
    ]


def test_a_duplicate_key_is_refused():
    assert problems(VALID + "  dim: 32\n") == [
        "space.yaml:8: model.dim: duplicate key; it is already set on line 6"
    ]


def test_an_empty_file_or_a_non_mapping_is_refused():
    assert problems("") == [
        "space.yaml:1: (document): empty search space; expected a mapping with at least name, task and model"
    ]
    (line,) = problems("- 1\n- 2\n")
    assert line.startswith("space.yaml:1: (document): expected a mapping")


def test_every_problem_is_reported_not_just_the_first():
    text = (
        "name: t\ntask:\n  dataset: digitz\nmodel:\n  backbone: token_transformer\n"
        "  dimm: 16\n  depth: {int: [4, 2]}\nobjectives: [acuracy]\ntrain:\n  lr: {choice: []}\n"
    )
    lines = problems(text)
    assert [line.split(":")[1] for line in lines] == ["3", "4", "6", "7", "8", "10"]
    assert "model.dim: missing required field" in lines[1]


def test_a_missing_file_is_a_space_error(tmp_path: Path):
    with pytest.raises(SpaceError) as info:
        load_space(tmp_path / "nope.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}:1: (file): cannot read the file")


def test_load_space_names_the_file_in_each_message(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text(HEAD + "  dim: 16\n  depth: {int: [5, 2]}\n")
    with pytest.raises(SpaceError, match=re.escape(f"{path}:7: model.depth.int: lo (5) > hi (2)")):
        load_space(path)


def test_importing_the_package_loads_neither_torch_nor_numpy_nor_optuna():
    code = ("import condsearch.space, sys; "
            "assert not {'torch', 'numpy', 'optuna'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)


FASHION_IO = {"input_kind": "image", "input_shape": [1, 28, 28], "num_classes": 10, "vocab_size": None}
PARITY_IO = {"input_kind": "sequence", "input_shape": [16], "num_classes": 2, "vocab_size": 3}


@pytest.mark.parametrize("io", [DIGITS_IO, FASHION_IO, PARITY_IO], ids=["digits", "fashion", "parity"])
@pytest.mark.parametrize("model", [
    {"dim": 16, "depth": 2, "heads": 4, "mlp_ratio": 2.0, "patch_size": 2},
    {"dim": 24, "depth": 3, "heads": 3, "mlp_ratio": 1.5, "patch_size": 4,
     "components": {"early_exit": {"enabled": True, "every": 1}}},
    {"dim": 32, "depth": 5, "heads": 8, "mlp_ratio": 1.3, "patch_size": 4,
     "components": {"early_exit": {"enabled": True, "positions": [1, 3, 3]}}},
    {"dim": 20, "depth": 6, "heads": 2, "mlp_ratio": 3.0, "patch_size": 2,
     "components": {"early_exit": {"enabled": False, "every": 2}}},
    {"dim": 16, "depth": 4, "heads": 4, "mlp_ratio": 2.0, "patch_size": 4,
     "components": {"moe": {"enabled": True, "experts": 3, "every": 2},
                    "token_selection": {"enabled": True, "scorer": "learned"},
                    "early_exit": {"enabled": True, "every": 1}}},
    {"dim": 16, "depth": 3, "heads": 4, "mlp_ratio": 1.0, "patch_size": 2,
     "components": {"moe": {"enabled": True, "experts": 2, "positions": [1, 3]},
                    "token_selection": {"enabled": True, "scorer": "cls_attention",
                                        "positions": [2, 3]}}},
    {"dim": 16, "depth": 3, "heads": 4, "mlp_ratio": 2.0, "patch_size": 4,
     "components": {"adatape": {"enabled": True, "bank": "learned", "bank_size": 20,
                                "max_tape": 5, "insert_after": 1}}},
    {"dim": 16, "depth": 2, "heads": 4, "mlp_ratio": 2.0, "patch_size": 2,
     "components": {"adatape": {"enabled": True, "bank": "input", "max_tape": 3},
                    "moe": {"enabled": True, "experts": 2}}},
])
def test_the_parameter_formula_matches_the_built_model(model, io):
    from condsearch.models import build_model

    if io is FASHION_IO and model["patch_size"] == 4:
        model = {**model, "patch_size": 7}
    arch = {"model": {"backbone": "token_transformer", **model}}
    built = build_model(arch, io)
    assert arch_params(arch["model"], io) == sum(p.numel() for p in built.parameters())


def test_an_exponent_without_a_dot_gets_a_hint_since_yaml_reads_it_as_text():
    (line,) = problems(VALID + "train:\n  lr: 1e-3\n")
    assert line == (
        "space.yaml:9: train.lr: expected a number, got '1e-3' "
        "(YAML reads this as text: write a dot and a signed exponent, e.g. 1.0e-3 or 1.0e+6)"
    )


def test_top_k_may_never_exceed_the_number_of_experts():
    text = VALID + "  components:\n    moe: {enabled: true, experts: {int: [2, 8]}, top_k: {int: [1, 3]}}\n"
    (line,) = problems(text)
    assert line == ("space.yaml:9: model.components.moe.top_k: top_k can reach 3 but experts can "
                    "be as few as 2; top_k must never exceed experts")


def test_moe_and_selection_positions_must_lie_within_the_network():
    text = VALID + ("  components:\n    moe: {enabled: true, positions: [2, 3]}\n"
                    "    token_selection: {enabled: true, positions: [5]}\n")
    assert problems(text) == [
        "space.yaml:9: model.components.moe.positions: MoE positions [3] must lie within the "
        "network (1..depth, and depth is at most 2)",
        "space.yaml:10: model.components.token_selection.positions: selection positions [5] must "
        "lie within the network (1..depth, and depth is at most 2)",
    ]


def test_adatape_cannot_be_forced_on_together_with_early_exit():
    text = VALID + ("  components:\n    adatape: {enabled: true}\n"
                    "    early_exit: {enabled: true}\n")
    (line,) = problems(text)
    assert line.startswith("space.yaml:10: model.components.early_exit.enabled: early_exit cannot "
                           "be on while adatape is on")


def test_a_learned_tape_bank_must_hold_every_entry_a_sample_may_read():
    text = VALID + ("  components:\n    adatape: {enabled: true, bank_size: 10, "
                    "max_tape: {int: [2, 6]}, tokens_per_step: 2}\n")
    (line,) = problems(text)
    assert line == ("space.yaml:9: model.components.adatape.bank_size: a learned bank needs at "
                    "least max_tape x tokens_per_step = 12 rows, but bank_size can be 10")


def test_an_input_bank_must_have_enough_positions_and_layers_must_follow_the_tape():
    text = VALID.replace("digits", "parity\n  length: 8") + (
        "  components:\n    adatape: {enabled: true, bank: input, max_tape: 5, "
        "insert_after: 2}\n")
    assert problems(text) == [
        "space.yaml:10: model.components.adatape.insert_after: insert_after can reach 2 but depth can be 2; "
        "at least one layer must follow the tape",
        "space.yaml:10: model.components.adatape.bank: an input bank has one row per patch or "
        "position (8 here), fewer than max_tape x tokens_per_step = 10",
    ]
